"""Language-Table in PyBullet: the world, its camera and per-frame ground truth (no ROS).

- `LangTableSim`: reset (BLOCK_4 / BLOCK_8 / N_CHOOSE_K), step(action) at 10 Hz, render, observe.
- `SimFrame`, `BlockTruth`: one frame and its ground truth.
- `SimCamera`, `CameraJitter`: the dataset camera as a pinhole model, and its randomisation.
- `scenes`: frames of this world as scenes for the question / description generators.
- `original`: the same API on Google's `language_table` package, when it is installed.
"""

from cobra_ros.langtable.sim.camera import CameraJitter, SimCamera
from cobra_ros.langtable.sim.truth import BlockTruth
from cobra_ros.langtable.sim.world import BLOCK_MODES, LangTableSim, Lighting, SimFrame

__all__ = ["BLOCK_MODES", "BlockTruth", "CameraJitter", "LangTableSim", "Lighting", "SimCamera",
           "SimFrame"]
