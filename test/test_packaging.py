"""Packaging: generated interfaces, package.xml, entry points, CMake install, launch file, YAML."""
import ast
import configparser
import importlib.metadata
import re
import sys
import types
from distutils.core import run_setup
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)  # make venv installs the CMake build into the venv prefix

ENTRY_POINTS = {
    "cobra_node": "cobra_ros.ros.node:main",
    "langtable_replay": "cobra_ros.ros.replay_node:main",
    "langtable_sim": "cobra_ros.ros.sim_node:main",
    "cobra-describe": "cobra_ros.cli.describe:main",
    "cobra-init": "cobra_ros.cli.init:main",
    "cobra-params": "cobra_ros.cli.params:main",
    "cobra-train": "cobra_ros.cli.train:main",
    "cobra-eval": "cobra_ros.cli.eval:main",
    "cobra-bench": "cobra_ros.cli.bench:main",
}


# --- generated interfaces -------------------------------------------------------------------

def test_scene_description_fields():
    from cobra_ros.msg import SceneDescription

    assert SceneDescription.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "text": "string",
        "prompt": "string",
        "is_final": "boolean",
        "num_tokens": "uint32",
        "encode_ms": "float",
        "prefill_ms": "float",
        "decode_ms": "float",
        "tokens_per_second": "float",
        "model": "string",
    }
    msg = SceneDescription(text="a red moon", is_final=True, num_tokens=3, decode_ms=1.5)
    msg.header.frame_id = "camera_optical_frame"
    assert (msg.text, msg.is_final, msg.num_tokens) == ("a red moon", True, 3)
    # uint32 (checked when asked to, as ROS_PYTHON_CHECK_FIELDS=1 does)
    with pytest.raises(AssertionError):
        SceneDescription(num_tokens=-1, check_fields=True)


def test_ask_services():
    from builtin_interfaces.msg import Time

    from cobra_ros.srv import Ask, AskYesNo

    assert Ask.Request.get_fields_and_field_types() == {
        "question": "string", "max_new_tokens": "uint32", "camera": "string"}
    assert Ask.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "answer": "string",
        "image_stamp": "builtin_interfaces/Time", "latency_ms": "float"}
    assert AskYesNo.Request.get_fields_and_field_types() == {
        "question": "string",
        "camera": "string",
    }
    assert AskYesNo.Response.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "answer": "boolean", "probability": "float",
        "image_stamp": "builtin_interfaces/Time", "latency_ms": "float"}

    assert isinstance(Ask.Response().image_stamp, Time)
    resp = AskYesNo.Response(success=True, answer=True, probability=0.75)
    assert resp.answer is True and resp.probability == pytest.approx(0.75)
    with pytest.raises(AssertionError):
        AskYesNo.Response(answer="yes", check_fields=True)


def test_describe_action():
    from cobra_ros.action import Describe
    from cobra_ros.msg import SceneDescription

    assert Describe.Goal.get_fields_and_field_types() == {
        "prompt": "string", "max_new_tokens": "uint32", "camera": "string"}
    assert Describe.Result.get_fields_and_field_types() == {
        "success": "boolean", "message": "string", "description": "cobra_ros/SceneDescription"}
    assert Describe.Feedback.get_fields_and_field_types() == {
        "partial_text": "string", "num_tokens": "uint32"}
    assert isinstance(Describe.Result().description, SceneDescription)
    # the service/message types rclpy's ActionServer/ActionClient are built from
    assert (
        Describe.Impl.SendGoalService.Request.get_fields_and_field_types()["goal"]
        == "cobra_ros/Describe_Goal"
    )
    assert "feedback" in Describe.Impl.FeedbackMessage.get_fields_and_field_types()


def test_cmake_lists_every_interface_file():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"rosidl_generate_interfaces\((.*?)\)", cmake, re.S).group(1)
    listed = set(re.findall(r"\S+\.(?:msg|srv|action)\b", block))
    on_disk = {p.relative_to(ROOT).as_posix()
               for d in ("msg", "srv", "action") for p in (ROOT / d).iterdir()}
    assert listed == on_disk
    assert "DEPENDENCIES std_msgs builtin_interfaces" in " ".join(block.split())


def test_our_init_wins_over_generated_one():
    import cobra_ros

    installed = PREFIX / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages" / "cobra_ros" / "__init__.py"
    assert installed.read_text() == (ROOT / "cobra_ros" / "__init__.py").read_text()
    assert hasattr(cobra_ros, "load")
    # both halves resolve: the repo's subpackages and the generated interfaces
    assert {Path(p).resolve() for p in cobra_ros.__path__} >= {
        installed.parent.resolve(),
        (ROOT / "cobra_ros").resolve(),
    }


# --- package.xml ----------------------------------------------------------------------------

def test_package_xml_validates_and_declares_dependencies():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))  # raises InvalidPackage on any violation
    names = lambda deps: {d.name for d in deps}  # noqa: E731
    assert pkg.name == "cobra_ros" and pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert {g.name for g in pkg.member_of_groups} == {"rosidl_interface_packages"}
    assert names(pkg.buildtool_depends) >= {
        "ament_cmake",
        "ament_cmake_python",
        "rosidl_default_generators",
    }
    # <depend> puts a name into build, build_export and exec depends
    for dep in ("builtin_interfaces", "std_msgs", "sensor_msgs", "action_msgs"):
        assert dep in names(pkg.build_depends) and dep in names(pkg.exec_depends), dep
    assert names(pkg.exec_depends) >= {
        "rosidl_default_runtime",
        "rclpy",
        "std_srvs",
        "diagnostic_msgs",
        "lifecycle_msgs",
        "cv_bridge",
        "python3-numpy",
        "python3-opencv",
        "python3-torch",
        "python3-torchvision",
        "python3-yaml",
    }
    assert "python3-pytest" in names(pkg.test_depends)
    assert pkg.version == configparser_setup_cfg()["metadata"]["version"]


def test_every_ros_runtime_wheel_is_a_package_xml_dependency():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    declared = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends}
    build_only = re.compile(r"^(ament_|rosidl_(?!default_runtime)|rmw_)")
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"ros-([a-z0-9-]+)==", line)
        if m and not build_only.match(m.group(1).replace("-", "_")):
            assert m.group(1).replace("-", "_") in declared, line


# --- entry points: setup.cfg == installed metadata == CMake wrappers -------------------------

def configparser_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def setup_cfg_console_scripts():
    text = configparser_setup_cfg()["options.entry_points"]["console_scripts"]
    return dict(
        tuple(part.strip() for part in line.split("=")) for line in text.strip().splitlines()
    )


def _setup_py(monkeypatch, stop_after):
    monkeypatch.chdir(ROOT)  # setup.py globs relative paths, as pip runs it
    return run_setup(str(ROOT / "setup.py"), stop_after=stop_after)


def test_console_scripts_are_the_contract(monkeypatch):
    assert setup_cfg_console_scripts() == ENTRY_POINTS
    dist = _setup_py(monkeypatch, "config")
    assert sorted(dist.entry_points["console_scripts"]) == sorted(
        f"{k} = {v}" for k, v in ENTRY_POINTS.items()
    )


def test_installed_distribution_has_the_console_scripts():
    eps = importlib.metadata.distribution("cobra_ros").entry_points
    assert {ep.name: ep.value for ep in eps if ep.group == "console_scripts"} == ENTRY_POINTS


def test_cmake_wrappers_match_console_scripts():
    lib = PREFIX / "lib" / "cobra_ros"
    wrappers = {p.name: p.read_text() for p in lib.iterdir()}
    assert set(wrappers) == set(ENTRY_POINTS)
    for name, target in ENTRY_POINTS.items():
        module, func = target.split(":")
        assert f"from {module} import {func}\n" in wrappers[name], name
        assert (lib / name).stat().st_mode & 0o111, f"{name} is not executable"
        compile(wrappers[name], name, "exec")


def test_setup_py_installs_the_ament_share_files(monkeypatch):
    dist = _setup_py(monkeypatch, "init")
    files = {dest: srcs for dest, srcs in dist.data_files}
    assert files["share/ament_index/resource_index/packages"] == ["resource/cobra_ros"]
    assert files["share/cobra_ros"] == ["package.xml"]
    assert "launch/describe.launch.py" in files["share/cobra_ros/launch"]
    assert "config/cobra.yaml" in files["share/cobra_ros/config"]
    assert set(dist.packages) >= {
        "cobra_ros",
        "cobra_ros.model",
        "cobra_ros.ros",
        "cobra_ros.langtable",
    }


def test_harnesses_stay_out_of_the_library(monkeypatch):
    """Only cobra_ros/ is installed (setup.py, CMake): nothing in it may need the harness, example
    or benchmark folders, and no test gadget (a pickle that runs a command) may sit in it."""
    dist = _setup_py(monkeypatch, "init")
    assert all(p == "cobra_ros" or p.startswith("cobra_ros.") for p in dist.packages)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for folder in ("harness", "benchmarks", "examples", "test"):
        assert not re.search(rf"install\((DIRECTORY|FILES|PROGRAMS)[^)]*\b{folder}\b", cmake)
    for path in (ROOT / "cobra_ros").rglob("*.py"):
        text = path.read_text()
        imports = re.search(r"^\s*(from|import)\s+(harness|benchmarks|examples)\b", text, re.M)
        assert not imports, path
        assert "__reduce__" not in text and "os.system" not in text, path


def test_cmake_installed_the_share_files():
    share = PREFIX / "share" / "cobra_ros"
    for rel in ("package.xml", "launch/describe.launch.py", "config/cobra.yaml"):
        assert (share / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert (PREFIX / "share/ament_index/resource_index/packages/cobra_ros").exists()
    assert (PREFIX / "share/ament_index/resource_index/rosidl_interfaces/cobra_ros").exists()


# --- launch file ----------------------------------------------------------------------------

LAUNCH = ROOT / "launch" / "describe.launch.py"


def test_launch_file_declares_the_arguments():
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    declared = {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "DeclareLaunchArgument"
    }
    assert declared >= {"model_path", "device", "image_topic", "namespace"}
    assert any(
        isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
        for n in tree.body
    )


class _Recorder:
    """Stands in for a launch/launch_ros class: remembers its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules(share):
    class LaunchConfiguration(_Recorder):
        def perform(self, context):
            return context[self.args[0]]

    class ParameterValue(_Recorder):
        pass

    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.event_handlers": types.ModuleType("launch.event_handlers"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
        "launch_ros.parameter_descriptions": types.ModuleType("launch_ros.parameter_descriptions"),
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.ModuleType("ament_index_python.packages"),
    }
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    mods["launch.actions"].RegisterEventHandler = type("RegisterEventHandler", (_Recorder,), {})
    mods["launch.event_handlers"].OnProcessExit = type("OnProcessExit", (_Recorder,), {})
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    mods["launch_ros.parameter_descriptions"].ParameterValue = ParameterValue
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: f"{share}/{pkg}"
    return mods


def _launch(monkeypatch, **overrides):
    """Run the launch file against stand-ins and return (declared defaults, the Node's kwargs)."""
    for name, module in _fake_launch_modules("/opt/share").items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = {"__name__": "describe_launch", "__file__": str(LAUNCH)}
    exec(compile(LAUNCH.read_text(), str(LAUNCH), "exec"), namespace)
    entities = namespace["generate_launch_description"]()
    defaults = {
        e.args[0]: e.kwargs["default_value"]
        for e in entities
        if type(e).__name__ == "DeclareLaunchArgument"
    }
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    node, on_exit = opaque[0].kwargs["function"]({**defaults, **overrides})
    assert type(node).__name__ == "Node"
    # the node's exit status reaches `ros2 launch` (checked for real in test_ros_lifecycle.py)
    assert on_exit.args[0].kwargs["target_action"] is node
    return defaults, node.kwargs


def test_launch_defaults_keep_the_yaml(monkeypatch):
    defaults, node = _launch(monkeypatch)
    assert defaults["params_file"] == "/opt/share/cobra_ros/config/cobra.yaml"
    assert (node["package"], node["executable"], node["name"]) == (
        "cobra_ros",
        "cobra_node",
        "cobra",
    )
    assert node["namespace"] is None
    assert node["remappings"] == [("image", "image")]
    assert node["parameters"] == [defaults["params_file"]]


def test_launch_arguments_reach_the_node(monkeypatch):
    _, node = _launch(monkeypatch, model_path="/models/cobra", device="cuda",
                      image_topic="/camera/color/image_raw", namespace="robot1")
    assert node["namespace"] == "robot1"
    assert node["remappings"] == [("image", "/camera/color/image_raw")]
    overrides = node["parameters"][1]
    assert {k: (v.args[0], v.kwargs["value_type"]) for k, v in overrides.items()} == {
        "model_path": ("/models/cobra", str), "device": ("cuda", str)}
    assert set(overrides) <= set(load_node_params())


# --- config/cobra.yaml ----------------------------------------------------------------------

def load_node_params():
    data = yaml.safe_load((ROOT / "config" / "cobra.yaml").read_text())
    assert list(data) == ["/**"]
    return data["/**"]["ros__parameters"]


def test_yaml_has_the_node_parameters():
    params = load_node_params()
    expected = {
        "model_path": "models/langtable-tiny",
        "device": "cpu",
        "dtype": "float32",
        "prompt": "Describe the image specifically.",
        "max_new_tokens": 64,
        "max_new_tokens_limit": 256,
        "describe_rate_hz": 1.0,
        "image_topics": ["image"],
        "transport": "raw",
        "stream_tokens": False,
        "publish_annotated": False,
        "autostart": True,
        "max_question_chars": 2000,
    }
    for name, value in expected.items():
        assert name in params, name
        # type(...) too: ROS parameters are typed, 1 and 1.0 declare different types
        assert (params[name], type(params[name])) == (value, type(value)), name
    assert params["max_new_tokens"] <= params["max_new_tokens_limit"]


# --- the generated type support works with rclpy ------------------------------------------------

def test_interfaces_round_trip_through_rclpy():
    import rclpy
    from rclpy.action import ActionClient, ActionServer
    from rclpy.executors import SingleThreadedExecutor

    from cobra_ros.action import Describe
    from cobra_ros.msg import SceneDescription
    from cobra_ros.srv import Ask

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("packaging_test", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def spin_until(future, what):
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            assert future.done(), f"no {what} within 10 s"
            return future.result()

        received = []
        node.create_subscription(SceneDescription, "description", received.append, 10)
        pub = node.create_publisher(SceneDescription, "description", 10)

        def ask(request, response):
            response.success, response.answer = True, request.question.upper()
            return response

        node.create_service(Ask, "ask", ask)

        def describe(goal_handle):
            goal_handle.publish_feedback(Describe.Feedback(partial_text="a", num_tokens=1))
            goal_handle.succeed()
            result = Describe.Result(success=True)
            result.description.text = goal_handle.request.prompt + "!"
            return result

        ActionServer(node, Describe, "describe", describe)

        client = node.create_client(Ask, "ask")
        assert client.wait_for_service(timeout_sec=10.0)
        assert (
            spin_until(client.call_async(Ask.Request(question="left?")), "Ask response").answer
            == "LEFT?"
        )

        feedback = []
        action = ActionClient(node, Describe, "describe")
        assert action.wait_for_server(timeout_sec=10.0)
        goal = spin_until(
            action.send_goal_async(Describe.Goal(prompt="go"), feedback_callback=feedback.append),
            "goal acceptance",
        )
        assert goal.accepted
        result = spin_until(goal.get_result_async(), "Describe result").result
        assert (result.success, result.description.text) == (True, "go!")
        assert [f.feedback.partial_text for f in feedback] == ["a"]

        for _ in range(50):  # the subscription may match a little after the publisher
            pub.publish(SceneDescription(text="x", is_final=True))
            executor.spin_once(timeout_sec=0.1)
            if received:
                break
        assert received and received[0].text == "x"
    finally:
        rclpy.shutdown(context=context)
