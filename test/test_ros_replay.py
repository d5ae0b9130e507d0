"""The langtable_replay node in its own process: episode frames as a camera, with recorded
timing."""

import os
import threading
import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import String

from cobra_ros.langtable.replay import SyntheticSource, iter_frames
from cobra_ros.ros.image_conversion import to_rgb
from harness.ros import NodeProcess, RosClient

NS = f"/cobra_replay_test_{os.getpid()}"


pytestmark = pytest.mark.usefixtures("ros_env")


def test_replay_publishes_every_frame_with_recorded_stamps_and_instructions():
    source = SyntheticSource(seed=3, episodes=2, size=(160, 90))
    expected = list(iter_frames(source))
    client = RosClient("replay_listener")
    frames, instructions, arrivals = [], [], []
    done = threading.Event()

    def on_image(msg):
        frames.append(msg)
        arrivals.append(time.monotonic())
        if len(frames) == len(expected):
            done.set()

    client.node.create_subscription(
        Image, f"{NS}/image", on_image, QoSProfile(depth=len(expected))
    )
    client.node.create_subscription(
        String,
        f"{NS}/instruction",
        lambda m: instructions.append(m.data),
        QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    replay = NodeProcess(
        [
            "-r",
            f"__ns:={NS}",
            "-p",
            "source:=synthetic",
            "-p",
            "seed:=3",
            "-p",
            "episodes:=2",
            "-p",
            "width:=160",
            "-p",
            "height:=90",
            "-p",
            "rate_mode:=recorded",
            "-p",
            "speed:=5.0",
            "-p",
            "frame_id:=table_camera_optical_frame",
            "-p",
            "wait_for_subscribers:=1",
        ],
        module="cobra_ros.ros.replay_node",
    )
    try:
        assert done.wait(120), f"{len(frames)} of {len(expected)} frames\n{replay.log()}"
        assert replay.wait(30) == 0, replay.log()
    finally:
        replay.stop()
        client.close()

    # every frame, in order, pixel for pixel
    for got, want in zip(frames, expected):
        np.testing.assert_array_equal(to_rgb(got), want.rgb)
    assert {f.header.frame_id for f in frames} == {"table_camera_optical_frame"}
    # stamps: recorded 10 Hz spacing from the start, the second episode a period after the first
    stamps = np.array([f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in frames])
    first_episode = sum(1 for f in expected if f.episode_index == 0)
    recorded = [
        f.stamp if f.episode_index == 0 else expected[first_episode - 1].stamp + 0.1 + f.stamp
        for f in expected
    ]
    np.testing.assert_allclose(stamps - stamps[0], recorded, atol=2e-6)
    assert instructions == [expected[0].instruction, expected[-1].instruction]
    # speed 5: the recorded span plays in a fifth of the time (not flat out, not in real time).
    # The rate is the median over every pair of frames half the stream apart, so one frame that
    # a busy host delivers late (often the first) cannot stretch or shrink it.
    half = len(arrivals) // 2
    rate = np.median([(arrivals[i + half] - arrivals[i]) / (recorded[i + half] - recorded[i])
                      for i in range(len(arrivals) - half)])
    assert 0.8 / 5 < rate < 1 / 2, rate


def test_a_bad_source_is_refused_with_the_reason(tmp_path):
    replay = NodeProcess(["-p", f"source:={tmp_path}"], module="cobra_ros.ros.replay_node")
    try:
        assert replay.wait(60) == 2
        assert "not an RLDS version dir" in replay.log()
    finally:
        replay.stop()
