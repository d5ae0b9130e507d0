"""The closed loop of examples/closed_loop.py through real rclpy: `langtable_sim`, the cobra node
and the loop's client in three processes.

With ground-truth positions the loop's plumbing (reset, effector, action, ground truth, the
standing questions answered on the world's frames) must bring one seeded episode to success.
With the model's positions the same episode must succeed and stop on the model's own "done";
that needs a model trained to locate, which its config says (`"tasks"` in the cobra_ros block);
the bundled model was not, so that test is skipped with the reason until it is.
"""

import argparse
import json

import pytest

from cobra_ros.control.pusher import Pusher
from cobra_ros.paths import default_model_path
from examples import closed_loop

SEED = 1001  # an episode the pusher solves in ~30 steps on truth positions


def model_tasks(model_dir) -> list:
    config = json.loads((model_dir / "config.json").read_text())
    return list(config.get("cobra_ros", {}).get("tasks", []))


@pytest.fixture(scope="module")
def loop(ros_env):
    args = closed_loop.parse_args(["--episodes", "1"])
    sim, cobra = closed_loop.start(args)
    client = closed_loop.LoopClient(closed_loop.NAMESPACE)
    try:
        for service in (client.reset_client, client.watch_client):
            assert service.wait_for_service(timeout_sec=120.0), (cobra.log()[-2000:],
                                                                sim.log()[-2000:])
        yield client, args
    finally:
        client.close()
        assert cobra.stop() == 0, cobra.log()[-3000:]
        assert sim.stop() == 0, sim.log()[-3000:]


def episode(loop, positions: str) -> closed_loop.Episode:
    client, args = loop
    args = argparse.Namespace(**{**vars(args), "positions": positions})
    return closed_loop.run_episode(client, SEED, args, Pusher())


def test_one_episode_on_truth_positions_succeeds_with_the_node_watching(loop):
    result = episode(loop, "truth")
    assert result.success and result.said_done and result.steps < 200
    # the node answered the standing questions on the world's frames as they came
    assert result.answers >= 0.5 * result.steps and result.frame_agreement


def test_one_episode_on_the_models_positions_succeeds_and_stops_on_its_own_done(loop):
    tasks = model_tasks(default_model_path())
    if "locate" not in tasks:
        pytest.skip(f"the bundled model was not trained to locate (its config's tasks: {tasks}); "
                    "the model issue teaches it")
    result = episode(loop, "model")
    assert result.said_done and result.success, result
