"""The `langtable_replay` node: Language-Table frames as a camera, for the cobra node and demos.

Publishes the frames of `cobra_ros.langtable.replay.iter_frames` (synthetic episodes, an RLDS
version dir or a ROS 2 bag) as sensor_msgs/Image on `image` (or CompressedImage on
`image/compressed`), and each episode's instruction on `instruction` (std_msgs/String, latched).
Header stamps follow the recorded timing (10 Hz for episodes) from the time playback started,
whatever the pace:
  rate_mode recorded  as recorded, sped up by `speed`
  rate_mode fixed     at `rate_hz`
  rate_mode fast      as fast as frames can be made and sent

    python -m cobra_ros.ros.replay_node --ros-args -p source:=synthetic -p episodes:=3 \
        -p loop:=true
"""
from __future__ import annotations

import sys
import threading
import time

import cv2
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from cobra_ros.langtable.replay import CONTROL_RATE_HZ, SOURCE_HELP, iter_frames, make_source
from cobra_ros.langtable.world import DEFAULT_SIZE
from cobra_ros.ros import params, signals
from cobra_ros.ros.image_conversion import to_image_msg
from cobra_ros.ros.params import Spec

RATE_MODES = ("recorded", "fixed", "fast")
BIG = 1_000_000_000

# Read once at start-up, so every one is read-only.
SPECS = {name: Spec(*args, read_only=True, **kwargs) for name, args, kwargs in [
    ("source", ("synthetic", SOURCE_HELP), {}),
    ("seed", (0, "synthetic and sim: world seed", (0, 2**31 - 1)), {}),
    ("episodes", (10, "synthetic and sim: number of episodes", (1, 1_000_000)), {}),
    ("width", (DEFAULT_SIZE[0], "synthetic and sim: image width", (16, 4096)), {}),
    ("height", (DEFAULT_SIZE[1], "synthetic and sim: image height", (16, 4096)), {}),
    ("split", ("train", "rlds: split"), {}),
    ("bag_topic", ("", "bag: image topic to replay; empty = the bag's only image topic"), {}),
    ("start_episode", (0, "first episode to play", (0, BIG)), {}),
    ("max_episodes", (0, "episodes to play; 0 = all", (0, BIG)), {}),
    ("max_frames", (0, "stop after this many frames per pass; 0 = all", (0, BIG)), {}),
    ("rate_mode", ("recorded", "recorded (x speed), fixed (rate_hz) or fast"),
     {"choices": RATE_MODES}),
    ("speed", (1.0, "recorded: playback speed factor", (0.01, 100.0)), {}),
    ("rate_hz", (CONTROL_RATE_HZ, "fixed: frames per second", (0.1, 1000.0)), {}),
    ("loop", (False, "start again after the last frame"), {}),
    ("wait_for_subscribers", (0, "wait until the image topic has this many subscribers",
                              (0, 1000)), {}),
    ("queue_depth", (100, "history depth of the image publisher: a reliable subscriber that "
                          "matches late or falls behind by fewer frames loses none", (1, 10000)),
     {}),
    ("frame_id", ("camera_optical_frame", "header frame_id of the images"), {}),
    ("transport", ("raw", "raw: Image on image; compressed: JPEG CompressedImage on "
                          "image/compressed"), {"choices": params.TRANSPORTS}),
]}


class ReplayNode(Node):
    def __init__(self, **kwargs):
        super().__init__("langtable_replay", **kwargs)
        params.declare(self, SPECS)
        self.p = params.values(self, SPECS)
        problems = params.problems(self.p, SPECS)
        if problems:
            raise ValueError("; ".join(problems))
        self.source = self._source()
        depth = self.p["queue_depth"]
        if self.p["transport"] == "compressed":
            self._images = self.create_publisher(CompressedImage, "image/compressed", depth)
        else:
            self._images = self.create_publisher(Image, "image", depth)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._instructions = self.create_publisher(String, "instruction", latched)
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="replay", daemon=True)

    def _source(self):
        # raises ValueError with the reason for a spec that is no source
        return make_source(self.p["source"], self.p["seed"], self.p["episodes"],
                           (self.p["width"], self.p["height"]))

    def _frames(self):
        return iter_frames(self.source, split=self.p["split"], topic=self.p["bag_topic"] or None,
                           start_episode=self.p["start_episode"],
                           max_episodes=self.p["max_episodes"] or None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    @property
    def playing(self) -> bool:
        return self._thread.is_alive()

    def _play(self) -> None:
        wanted = self.p["wait_for_subscribers"]
        while self._images.get_subscription_count() < wanted:
            if self._stop.wait(0.05):
                return
        try:
            while not self._stop.is_set():
                self._play_once()
                if not self.p["loop"]:
                    break
        except Exception as err:  # a broken file mid-way: say so and stop
            self.get_logger().error(f"replay stopped: {type(err).__name__}: {err}")
        self.get_logger().info(f"replay finished: {self.published} frames published")

    def _play_once(self) -> None:
        start_stamp = self.get_clock().now()
        start_wall = time.monotonic()
        episode, offset, last_stamp = None, 0.0, 0.0
        mode, speed, rate_hz = self.p["rate_mode"], self.p["speed"], self.p["rate_hz"]
        for count, frame in enumerate(self._frames()):
            if self._stop.is_set() or (self.p["max_frames"] and count >= self.p["max_frames"]):
                return
            if frame.episode_index != episode:
                if episode is not None:  # the next one starts a control period after the last
                    offset += last_stamp + 1.0 / CONTROL_RATE_HZ
                episode = frame.episode_index
                if frame.instruction:
                    self._instructions.publish(String(data=frame.instruction))
            last_stamp = frame.stamp
            recorded = offset + frame.stamp  # seconds since the first frame, as recorded
            due = {"recorded": recorded / speed, "fixed": count / rate_hz, "fast": 0.0}[mode]
            delay = start_wall + due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            stamp = start_stamp + Duration(nanoseconds=int(round(recorded * 1e9)))
            header = Header(frame_id=self.p["frame_id"], stamp=stamp.to_msg())
            self._images.publish(self._message(frame.rgb, header))
            self.published += 1

    def _message(self, rgb, header):
        if self.p["transport"] == "compressed":
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            return CompressedImage(header=header, format="rgb8; jpeg compressed bgr8",
                                   data=data.tobytes())
        return to_image_msg(rgb, header)


def main(args=None) -> int:
    # no rclpy signal handlers (see signals.py): the playing thread stops first, the context last
    stop = signals.stop_event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = ReplayNode()
    except Exception as err:  # bad parameters or source: say why
        print(f"[langtable_replay] cannot start: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    node.start()
    try:
        while node.playing and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
