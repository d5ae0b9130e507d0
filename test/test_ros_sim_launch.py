"""launch/sim.launch.py wires the world's camera to the cobra node, with real parameter names.

launch and launch_ros are not on PyPI: the file runs against stand-ins that record what it asks.
"""
import configparser
import sys
import types
from pathlib import Path

import pytest

from cobra_ros.ros.sim_node import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "sim.launch.py"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _run_launch(monkeypatch, **overrides):
    class LaunchConfiguration(_Recorder):
        def perform(self, context):
            return context[self.args[0]]

    modules = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.event_handlers", "launch.substitutions", "launch_ros",
        "launch_ros.actions",
        "launch_ros.parameter_descriptions", "ament_index_python", "ament_index_python.packages")}
    modules["launch"].LaunchDescription = list
    actions = modules["launch.actions"]
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    actions.RegisterEventHandler = type("RegisterEventHandler", (_Recorder,), {})
    modules["launch.event_handlers"].OnProcessExit = type("OnProcessExit", (_Recorder,), {})
    modules["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    modules["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    modules["launch_ros.parameter_descriptions"].ParameterValue = type("ParameterValue",
                                                                       (_Recorder,), {})
    modules["ament_index_python.packages"].get_package_share_directory = lambda p: f"/share/{p}"
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = {"__name__": "sim_launch", "__file__": str(LAUNCH)}
    exec(compile(LAUNCH.read_text(), str(LAUNCH), "exec"), namespace)
    entities = namespace["generate_launch_description"]()
    defaults = {e.args[0]: e.kwargs["default_value"] for e in entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    sim, cobra, *handlers = opaque.kwargs["function"]({**defaults, **overrides})
    # a node that exits with an error fails the launch, whichever of the two it is
    watched = [h.args[0].kwargs["target_action"] for h in handlers]
    assert watched == [sim, cobra]
    for handler in handlers:
        on_exit = handler.args[0].kwargs["on_exit"]
        on_exit(types.SimpleNamespace(returncode=0, process_name="ok"), None)
        with pytest.raises(RuntimeError, match="exited with status 2"):
            on_exit(types.SimpleNamespace(returncode=2, process_name="cobra_node-2"), None)
    return defaults, sim.kwargs, cobra.kwargs


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_the_cobra_node_watches_the_world_camera(monkeypatch):
    defaults, sim, cobra = _run_launch(monkeypatch)
    scripts = _console_scripts()
    assert scripts[sim["executable"]] == "cobra_ros.ros.sim_node:main"
    assert scripts[cobra["executable"]] == "cobra_ros.ros.node:main"
    assert dict(sim["remappings"])["image"] == dict(cobra["remappings"])["image"] == "sim/image"
    assert cobra["parameters"][0] == "/share/cobra_ros/config/cobra.yaml"
    assert cobra["parameters"][1]["use_sim_time"] is True
    # every parameter handed to the world is one it declares, with the declared type
    (given,) = sim["parameters"]
    for name, value in given.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), name


def test_arguments_reach_both_nodes(monkeypatch):
    _, sim, cobra = _run_launch(monkeypatch, namespace="robot1", camera_topic="/table/rgb",
                                block_mode="BLOCK_8", device="cuda")
    assert sim["namespace"] == cobra["namespace"] == "robot1"
    assert dict(sim["remappings"]) == {"image": "/table/rgb",
                                       "image/compressed": "/table/rgb/compressed"}
    assert dict(cobra["remappings"]) == {"image": "/table/rgb"}
    assert sim["parameters"][0]["block_mode"] == "BLOCK_8"
    assert cobra["parameters"][1]["device"].args[0] == "cuda"
