"""cobra_ros: the Cobra vision-language model for robots.

`cobra_ros.load(path)` returns an engine; the ROS 2 layer lives in `cobra_ros.ros`.
"""
# rosidl installs the generated interfaces (cobra_ros.msg / .srv / .action) as their own copy of
# this package; let both halves resolve whichever copy Python found first.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)


def load(path, device="cpu", dtype=None):
    """Load a Cobra model directory in the release layout and return a ready `CobraEngine`."""
    from cobra_ros.model.engine import CobraEngine

    return CobraEngine.load(path, device=device, dtype=dtype)


__all__ = ["load"]
