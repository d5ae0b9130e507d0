"""Start-up faults and the managed lifecycle of the cobra node, each node in its own process over
DDS."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

from cobra_ros.ros.image_conversion import to_image_msg
from harness.ros import CobraClient, NodeProcess
from hostile_checkpoint import write_pickled_model_copy

NS = f"/cobra_lifecycle_test_{os.getpid()}"


pytestmark = pytest.mark.usefixtures("ros_env")


def _mismatched_copy(model_dir, out):
    """A model directory whose config.json describes a deeper LM than its checkpoint holds."""
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config["cobra_ros"]["llm"]["n_layer"] += 2
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_bad_model_files_at_start_up_exit_non_zero_with_the_reason(tiny_model_dir, tmp_path):
    pwned = tmp_path / "pwned"
    truncated = shutil.copytree(tiny_model_dir, tmp_path / "truncated")
    checkpoint = truncated / "checkpoints" / "latest-checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    evil = write_pickled_model_copy(tiny_model_dir, tmp_path / "evil", pwned)
    cases = {
        "missing": (["-p", f"model_path:={tmp_path / 'nowhere'}"], 1, "no such directory"),
        "pickled": (
            [
                "-p",
                f"model_path:={evil}",
            ],
            1,
            "refused, it holds pickled objects",
        ),
        "truncated": (["-p", f"model_path:={truncated}"], 1, "unreadable checkpoint"),
        "mismatched": (
            ["-p", f"model_path:={_mismatched_copy(tiny_model_dir, tmp_path / 'deeper')}"],
            1,
            "does not match the config",
        ),
        "bad parameter": (
            ["-p", f"model_path:={tiny_model_dir}", "-p", "transport:=udp"],
            2,
            "transport 'udp' is not one of raw, compressed",
        ),
    }
    # in parallel: each start-up pays for importing torch
    processes = {
        name: NodeProcess([*args, "-r", f"__ns:={NS}/{name.replace(' ', '_')}"])
        for name, (args, _, _) in cases.items()
    }
    try:
        for name, (_, status, reason) in cases.items():
            process = processes[name]
            assert process.wait(timeout=120) == status, f"{name}:\n{process.log()}"
            assert reason in process.log(), f"{name}:\n{process.log()}"
    finally:
        for process in processes.values():
            process.stop()
    assert not pwned.exists(), "unpickling the checkpoint ran code"


def _lifecycle(client, transition_id=None):
    base = client.base
    if transition_id is None:
        reply = client.call(
            client.node.create_client(GetState, f"{base}/get_state"), GetState.Request()
        )
        return reply.current_state.id
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return client.call(
        client.node.create_client(ChangeState, f"{base}/change_state"), request, timeout=120
    ).success


def test_a_managed_node_loads_on_configure_serves_when_active_and_frees_on_cleanup(
    tiny_model_dir, tmp_path
):
    node = NodeProcess(
        [
            "-p",
            "autostart:=false",
            "-p",
            f"model_path:={tmp_path / 'not_yet'}",
            "-p",
            "describe_rate_hz:=0.0",
            "-r",
            f"__ns:={NS}/managed",
        ]
    )
    client = CobraClient(f"{NS}/managed")
    try:
        assert client.node.create_client(GetState, f"{client.base}/get_state").wait_for_service(
            timeout_sec=120
        ), node.log()
        assert _lifecycle(client) == State.PRIMARY_STATE_UNCONFIGURED
        status = client.status(": model")
        assert status.level == DiagnosticStatus.WARN and "no model loaded" in status.message

        # configure with a model that is not there: refused with the reason, stays unconfigured
        assert not _lifecycle(client, Transition.TRANSITION_CONFIGURE)
        assert _lifecycle(client) == State.PRIMARY_STATE_UNCONFIGURED
        status = client.wait_for(
            lambda: (lambda s: s if s.level == DiagnosticStatus.ERROR else None)(
                client.status(": model")
            ),
            15,
            "an ERROR report",
        )
        assert "the model did not load" in status.message and "no such directory" in status.message
        assert not client.ask_client.service_is_ready()

        (result,) = client.set_parameters(model_path=str(tiny_model_dir))
        assert result.successful, result.reason
        assert _lifecycle(client, Transition.TRANSITION_CONFIGURE)
        assert _lifecycle(client) == State.PRIMARY_STATE_INACTIVE
        assert not client.ask_client.service_is_ready()  # inactive: no interfaces yet

        assert _lifecycle(client, Transition.TRANSITION_ACTIVATE)
        client.wait_ready(timeout=60)
        rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        assert client.show(to_image_msg(rgb, client.header(42))).success

        assert _lifecycle(client, Transition.TRANSITION_DEACTIVATE)
        client.wait_for(lambda: not client.ask_client.service_is_ready(), 30, "~/ask to go away")
        assert _lifecycle(client, Transition.TRANSITION_CLEANUP)
        assert _lifecycle(client) == State.PRIMARY_STATE_UNCONFIGURED
        status = client.wait_for(
            lambda: (lambda s: s if "no model loaded" in s.message else None)(
                client.status(": model")
            ),
            15,
            "the model to be freed",
        )
        assert status.level == DiagnosticStatus.WARN

        # and back: configure + activate again serves again
        assert _lifecycle(client, Transition.TRANSITION_CONFIGURE)
        assert _lifecycle(client, Transition.TRANSITION_ACTIVATE)
        client.wait_ready(timeout=60)
        assert client.show(to_image_msg(rgb, client.header(43))).success
        assert _lifecycle(client, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert _lifecycle(client) == State.PRIMARY_STATE_FINALIZED
    finally:
        client.close()
        assert node.stop() == 0, node.log()


def test_use_sim_time_drives_the_node_clock(tiny_model_dir):
    """With use_sim_time, descriptions follow /clock (none while it is silent) and reports carry
    sim time."""
    from rosgraph_msgs.msg import Clock

    node = NodeProcess(
        [
            "-p",
            f"model_path:={tiny_model_dir}",
            "-p",
            "use_sim_time:=true",
            "-p",
            "describe_rate_hz:=2.0",
            "-p",
            "max_new_tokens:=2",
            "-r",
            f"__ns:={NS}/sim",
        ]
    )
    client = CobraClient(f"{NS}/sim")
    try:
        client.wait_ready(timeout=120)
        rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        frame = to_image_msg(rgb, client.header(7))
        assert client.show(frame).success  # requests do not depend on the clock
        # no /clock yet: sim time stands still, so the 2 Hz description timer never fires
        assert not client.wait_for_quiet(lambda: client.descriptions, seconds=1.5)
        clock = client.node.create_publisher(Clock, "/clock", 10)
        sim = {"sec": 1000}

        def tick():
            sim["sec"] += 1
            msg = Clock()
            msg.clock.sec = sim["sec"]
            clock.publish(msg)
            return client.descriptions

        described = client.wait_for(tick, 30, "a description once /clock runs", poll=0.05)
        assert described[0].header == frame.header
        client.wait_for(
            lambda: any(s.sec > 1000 for s in client.diagnostics_stamps), 15, "a sim-time report"
        )
        assert all(
            s.sec < 10_000 for s in client.diagnostics_stamps[-3:]
        )  # sim time, not wall time
    finally:
        client.close()
        assert node.stop() == 0, node.log()


def _ros2_launch(launch_file, *arguments):
    """`ros2 launch cobra_ros LAUNCH_FILE ARGS` in a session of its own (for Ctrl-C)."""
    command = [
        sys.executable,
        "-c",
        "import sys; from ros2cli.cli import main; sys.exit(main())",
        "launch",
        "cobra_ros",
        launch_file,
        *arguments,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


LAUNCH_FILES = ["describe.launch.py", "sim.launch.py"]


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
@pytest.mark.parametrize(
    "argument, reason",
    [
        ("device:=nonsense", "is not a torch device"),
        ("model_path:=/nonexistent", "no such directory"),
    ],
)
def test_ros2_launch_exits_non_zero_when_the_node_does_not_start(launch_file, argument, reason):
    pytest.importorskip("ros2launch", reason="launch, launch_ros and ros2cli are not installed")
    launch = _ros2_launch(launch_file, argument)
    output, _ = launch.communicate(timeout=120)
    assert launch.returncode != 0 and reason in output, output


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_ros2_launch_ends_cleanly_and_quickly_on_ctrl_c(launch_file):
    pytest.importorskip("ros2launch", reason="launch, launch_ros and ros2cli are not installed")
    launch = _ros2_launch(launch_file, f"namespace:={NS}/launched")
    lines = []
    for line in launch.stdout:
        lines.append(line)
        if "active: cameras" in line:
            break
    os.killpg(launch.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole group
    started = time.monotonic()
    rest, _ = launch.communicate(timeout=30)
    took = time.monotonic() - started
    output = "".join(lines) + rest
    assert launch.returncode == 0 and "finished cleanly" in output, output
    assert "rosout" not in output and "context is invalid" not in output, output
    assert took < 2.5, f"{took:.1f} s from Ctrl-C to exit; launch escalates to SIGTERM at 5 s"
