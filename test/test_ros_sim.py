"""The langtable_sim node through real rclpy and DDS: stamped frames in simulated time and /clock,
actions that move the effector target as the original does, seeded resets, and a recorded MCAP bag
that our replay reads back frame for frame.

The node runs in this process in an rclpy context of its own, the listener in another; every wait
is on a condition with a timeout. Topics live under a namespace of this process (and /clock is
remapped into it), so parallel runs in one ROS domain do not see each other.
"""
from __future__ import annotations

import math
import os
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Vector3
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from cobra_ros.langtable.replay import iter_frames
from cobra_ros.langtable.world import BLOCK_HEIGHT, X_MAX, X_MIN, Y_MAX, Y_MIN
from cobra_ros.msg import SimGroundTruth
from cobra_ros.ros import sim_node
from cobra_ros.ros.sim_node import STEP_NS, SimNode
from cobra_ros.srv import ResetSim

NS = f"/sim_test_{os.getpid()}"
SIZE = (160, 90)
TIMEOUT = 30.0


def ns_of(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def rgb_of(msg: Image) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


class RunningSim:
    """A SimNode in an rclpy context of its own, spun by a background thread."""

    def __init__(self, *params: str, namespace: str = NS):
        self.context = rclpy.Context()
        args = ["--ros-args", "-r", f"/clock:={namespace}/clock", "-p", f"width:={SIZE[0]}",
                "-p", f"height:={SIZE[1]}"]
        for param in params:
            args += ["-p", param]
        rclpy.init(args=args, context=self.context)
        self.node = SimNode(context=self.context, namespace=namespace)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.executor.shutdown()
            self._thread.join(10.0)
            self.node.destroy_node()
            rclpy.try_shutdown(context=self.context)


class Listener:
    """Keeps everything the sim publishes; `wait(predicate)` blocks until it holds."""

    def __init__(self, namespace: str = NS, compressed: bool = False):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_listener", namespace=namespace, context=self.context)
        self.cond = threading.Condition()
        self.truths, self.images, self.clocks, self.infos, self.instructions = [], [], [], [], []
        self.arrived = {}  # id(message) -> monotonic time it arrived
        keep = QoSProfile(depth=200)
        image_type, image_topic = (CompressedImage, "image/compressed") if compressed else (
            Image, "image")
        for msg_type, topic, store, qos in (
                (SimGroundTruth, "ground_truth", self.truths, keep),
                (image_type, image_topic, self.images, keep),
                (Clock, "clock", self.clocks, keep),
                (CameraInfo, "camera_info", self.infos, keep),
                (String, "instruction", self.instructions,
                 QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))):
            self.node.create_subscription(msg_type, topic, self._keeper(store), qos)
        self.actions = self.node.create_publisher(Vector3, "action", 10)
        self.reset_client = self.node.create_client(ResetSim, "langtable_sim/reset")
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _keeper(self, store):
        def keep(msg):
            now = time.monotonic()
            with self.cond:
                store.append(msg)
                self.arrived[id(msg)] = now
                self.cond.notify_all()
        return keep

    def wait(self, predicate, what: str, timeout: float = TIMEOUT):
        with self.cond:
            value = self.cond.wait_for(predicate, timeout)
        assert value, f"not within {timeout} s: {what}"
        return value

    def latest_truth(self):
        return self.wait(lambda: self.truths and self.truths[-1], "a ground-truth message")

    def steps_later(self, truth, steps: int):
        """The first ground truth `steps` steps after `truth` in its episode."""
        def later():
            return next((t for t in self.truths if t.episode == truth.episode
                         and t.step >= truth.step + steps), None)
        return self.wait(later, f"{steps} steps after step {truth.step}")

    def reset(self, **fields):
        assert self.reset_client.wait_for_service(timeout_sec=TIMEOUT)
        future = self.reset_client.call_async(ResetSim.Request(**fields))
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(TIMEOUT), "no reply from ~/reset"
        return future.result()

    def first_frame_at(self, stamp):
        return self.wait(lambda: next((t for t in self.truths
                                       if ns_of(t.header.stamp) == ns_of(stamp)), None),
                         f"the frame stamped {ns_of(stamp)} ns")

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One node stepping as fast as it can and recording, with its listener."""
    bag_path = tmp_path_factory.mktemp("sim") / "bag"
    sim = RunningSim("rate_hz:=0.0", "seed:=7", f"record_path:={bag_path}")
    listener = Listener()
    yield sim, listener, bag_path
    listener.close()
    sim.stop()


def test_frames_are_stamped_in_simulated_time_with_clock(world):
    sim, listener, _ = world
    first = listener.latest_truth()
    later = listener.steps_later(first, 5)
    listener.wait(lambda: len(listener.images) >= 5 and listener.clocks and listener.infos,
                  "images, /clock and camera_info")
    with listener.cond:
        truths, images = list(listener.truths), list(listener.images)
        clocks, info = [ns_of(c.clock) for c in listener.clocks], listener.infos[-1]
    # 0.1 s of simulated time per step, whatever the wall clock did
    for a, b in zip(truths, truths[1:]):
        if a.episode == b.episode:
            assert ns_of(b.header.stamp) - ns_of(a.header.stamp) == (b.step - a.step) * STEP_NS
    elapsed = ns_of(later.header.stamp) - ns_of(first.header.stamp)
    assert elapsed == (later.step - first.step) * 100_000_000
    # images and /clock run on the same 0.1 s grid of simulated time as the ground truth
    image_stamps = [ns_of(m.header.stamp) for m in images]
    assert image_stamps == sorted(set(image_stamps))
    assert all(stamp % STEP_NS == 0 for stamp in image_stamps + clocks)
    assert clocks == sorted(clocks) and set(clocks) & {ns_of(t.header.stamp) for t in truths}
    assert set(image_stamps) & {ns_of(t.header.stamp) for t in truths}
    image = images[0]
    assert (image.width, image.height, image.encoding, image.header.frame_id) == (
        *SIZE, "rgb8", "camera_optical_frame")
    assert rgb_of(image).std() > 10  # a rendered scene, not a blank frame
    assert first.header.frame_id == "world" and len(first.blocks) == 4 and first.instruction
    # camera_info is the world's camera, pixel centres on integers
    k = np.array(sim.node.sim.camera.K)
    shift = [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), k - shift)
    # block pixels agree with that camera: the block's centre projects to (u, v)
    block = first.blocks[0]
    p = block.pose.position
    uv = sim.node.sim.camera.project([p.x, p.y, p.z + BLOCK_HEIGHT / 2]) - 0.5
    np.testing.assert_allclose([block.u, block.v], uv, atol=0.5)


def _expected_target(target, action):
    step = np.clip(action, -0.1, 0.1)  # action space Box(-0.1, 0.1)
    return np.clip(np.asarray(target) + step, [X_MIN, Y_MIN], [X_MAX, Y_MAX])


def _target(truth):
    return np.array([truth.effector_target.x, truth.effector_target.y])


def _apply(listener, action):
    """Send one action: (the frame before, the first frame whose target moved). Only this test
    moves the target, so the frames between keep the target of the frame before."""
    before = listener.latest_truth()
    listener.actions.publish(Vector3(x=float(action[0]), y=float(action[1]), z=0.0))

    def moved():
        return next((t for t in listener.truths if t.episode == before.episode
                     and t.step > before.step
                     and not np.allclose(_target(t), _target(before), rtol=0, atol=1e-12)),
                    None)
    return before, listener.wait(moved, f"the target to move by {action}")


def test_an_action_moves_the_target_by_one_clipped_step(world):
    _, listener, _ = world
    # 0.3 m asked, 0.1 m taken in y (the action box); x as asked
    before, after = _apply(listener, (0.04, -0.3))
    np.testing.assert_allclose(_target(after), _expected_target(_target(before), (0.04, -0.3)),
                               atol=1e-9)
    # the action is used once: later frames keep the target
    still = listener.steps_later(after, 3)
    np.testing.assert_allclose(_target(still), _target(after), atol=1e-12)
    # pushed against the workspace's far edge, the target stops at it
    for _ in range(6):
        if _target(listener.latest_truth())[0] >= X_MAX - 1e-9:
            break
        before, after = _apply(listener, (0.1, 0.0))
        np.testing.assert_allclose(_target(after),
                                   _expected_target(_target(before), (0.1, 0.0)), atol=1e-9)
    edge = listener.latest_truth()
    assert _target(edge)[0] == pytest.approx(X_MAX)
    listener.actions.publish(Vector3(x=0.1, y=0.0, z=0.0))
    np.testing.assert_allclose(_target(listener.steps_later(edge, 3)), _target(edge), atol=1e-12)
    # the effector follows its target (the arm lags a little)
    effector = listener.steps_later(edge, 10).effector
    assert math.hypot(effector.x - X_MAX, effector.y - _target(edge)[1]) < 0.03


def test_a_malformed_action_is_ignored_and_the_world_goes_on(world):
    _, listener, _ = world
    before = listener.latest_truth()
    listener.actions.publish(Vector3(x=float("nan"), y=0.01, z=0.0))
    after = listener.steps_later(before, 5)
    np.testing.assert_allclose(_target(after), _target(before), atol=1e-12)


def test_reset_with_a_seed_gives_the_same_ground_truth(world):
    _, listener, _ = world
    last = listener.latest_truth()
    first = listener.reset(seed=11, block_mode="BLOCK_8")
    assert first.success, first.message
    a = listener.first_frame_at(first.stamp)
    assert (a.step, a.episode, a.block_mode, len(a.blocks)) == (0, last.episode + 1, "BLOCK_8", 8)
    assert ns_of(first.stamp) > ns_of(last.header.stamp)  # the clock goes on across resets
    listener.steps_later(a, 2)  # let the world move on before resetting again

    again = listener.reset(seed=11)  # block mode kept
    b = listener.first_frame_at(again.stamp)
    assert (b.episode, b.block_mode) == (a.episode + 1, "BLOCK_8")
    assert b.instruction == a.instruction
    for x, y in zip(a.blocks, b.blocks):
        assert x.name == y.name and x.on_board == y.on_board
        np.testing.assert_allclose([x.pose.position.x, x.pose.position.y, x.u, x.v, *x.bbox],
                                   [y.pose.position.x, y.pose.position.y, y.u, y.v, *y.bbox],
                                   atol=1e-9)
        assert x.visible_fraction == pytest.approx(y.visible_fraction)

    other = listener.first_frame_at(listener.reset(seed=12).stamp)
    assert [x.pose.position.x for x in other.blocks] != [x.pose.position.x for x in a.blocks]

    told = listener.reset(seed=3, block_mode="BLOCK_4", instruction="push the red moon to the "
                                                                    "blue cube")
    assert told.success
    c = listener.first_frame_at(told.stamp)
    assert c.instruction == "push the red moon to the blue cube" and len(c.blocks) == 4
    listener.wait(lambda: listener.instructions
                  and listener.instructions[-1].data == c.instruction, "the new instruction")

    bad = listener.reset(block_mode="BLOCK_5")
    assert not bad.success and "BLOCK_5" in bad.message
    listener.steps_later(c, 2)  # and the episode goes on


def test_the_recorded_bag_replays_frame_for_frame(world):
    from rosbags.highlevel import AnyReader

    sim, listener, bag_path = world
    listener.steps_later(listener.latest_truth(), 2)
    sim.stop()  # closes the bag
    with listener.cond:
        seen = {ns_of(m.header.stamp): rgb_of(m) for m in listener.images}
        truths = {ns_of(t.header.stamp): t for t in listener.truths}

    frames = list(iter_frames(bag_path))
    stamps = [STEP_NS + round(f.stamp * 1e9) for f in frames]  # the first frame is at 0.1 s
    # every frame is in the bag, resets included: the clock moves 0.1 s from one to the next
    assert np.all(np.diff(stamps) == STEP_NS) and len(frames) > 20
    assert set(seen) <= set(stamps)
    by_stamp = dict(zip(stamps, frames))
    for stamp, rgb in seen.items():
        np.testing.assert_array_equal(by_stamp[stamp].rgb, rgb)
    # and each frame comes with the instruction of its episode
    for stamp, truth in truths.items():
        assert by_stamp[stamp].instruction == truth.instruction
    # the ground truth is recorded with its definition: any reader can decode it
    with AnyReader([bag_path]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics[f"{NS}/ground_truth"] == "cobra_ros/msg/SimGroundTruth"
        assert topics[f"{NS}/instruction"] == "std_msgs/msg/String"
        conns = [c for c in reader.connections if c.topic == f"{NS}/ground_truth"]
        recorded = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(conns)]
    assert [ns_of(t.header.stamp) for t in recorded] == stamps
    for t in recorded:
        if ns_of(t.header.stamp) in truths:
            live = truths[ns_of(t.header.stamp)]
            assert [b.name for b in t.blocks] == [b.name for b in live.blocks]
            assert [b.pose.position.x for b in t.blocks] == [b.pose.position.x
                                                             for b in live.blocks]


def test_ten_hz_on_the_wall_clock_and_compressed_images():
    namespace = f"{NS}_paced"
    sim = RunningSim("rate_hz:=10.0", "transport:=compressed", namespace=namespace)
    listener = Listener(namespace, compressed=True)
    try:
        first = listener.latest_truth()
        later = listener.steps_later(first, 20)
        with listener.cond:
            wall = listener.arrived[id(later)] - listener.arrived[id(first)]
        # 2 s of simulated time took at least 1.9 s of wall time: the timer paces the world (the
        # margin is for delivery delays)
        elapsed = ns_of(later.header.stamp) - ns_of(first.header.stamp)
        assert elapsed == (later.step - first.step) * STEP_NS
        assert wall > 1.5, wall
        image = listener.wait(lambda: listener.images and listener.images[-1], "an image")
        rgb = cv2.imdecode(np.frombuffer(bytes(image.data), np.uint8), cv2.IMREAD_COLOR)
        assert rgb.shape == (SIZE[1], SIZE[0], 3) and image.format.startswith("rgb8; jpeg")
    finally:
        listener.close()
        sim.stop()


def test_bad_parameters_stop_the_node_with_the_reason(tmp_path, capsys):
    assert sim_node.main(["--ros-args", "-p", "block_mode:=BLOCK_9"]) == 2
    assert "block_mode 'BLOCK_9' is not one of" in capsys.readouterr().err
    (tmp_path / "bag").mkdir()
    assert sim_node.main(["--ros-args", "-p", f"record_path:={tmp_path / 'bag'}", "-p",
                          f"width:={SIZE[0]}", "-p", f"height:={SIZE[1]}"]) == 2
    assert "never overwritten" in capsys.readouterr().err
