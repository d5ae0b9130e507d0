"""The `langtable_sim` node: the PyBullet Language-Table world (cobra_ros.langtable.sim) on ROS 2.

Publishes, on relative names so that namespaces and remapping work:
  image               sensor_msgs/Image rgb8 (transport raw), or
  image/compressed    sensor_msgs/CompressedImage JPEG (transport compressed)
  camera_info         sensor_msgs/CameraInfo of the camera
  effector            geometry_msgs/PointStamped, the effector (world frame, metres)
  ground_truth        cobra_ros/SimGroundTruth: blocks, effector, its target, the instruction
  instruction         std_msgs/String, latched, once per episode
  /clock              rosgraph_msgs/Clock, the simulated time
Subscribes to `action` (geometry_msgs/Vector3: x, y = effector target delta in metres, z unused)
and serves `~/reset` (cobra_ros/ResetSim).

All stamps are simulated time, 0.1 s per control step (the original's 10 Hz); a reset does not
restart the clock (the new episode starts one step after the last frame), so /clock never goes
back. The world steps on a wall-clock timer at `rate_hz`, or back to back with rate_hz 0. Each
step applies the latest action received since the step before (none: the target stays), each axis
clipped to +-0.1 m and the target to the workspace, as the original does.

    python -m cobra_ros.ros.sim_node --ros-args -p block_mode:=BLOCK_8 -p record_path:=/tmp/bag
"""
from __future__ import annotations

import math
import sys
import threading

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import Point, PointStamped, Pose, Quaternion, Vector3
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from cobra_ros.langtable.sim import BLOCK_MODES, LangTableSim
from cobra_ros.langtable.world import EFFECTOR_HEIGHT
from cobra_ros.msg import BlockState, SimGroundTruth
from cobra_ros.ros import signals
from cobra_ros.srv import ResetSim

TRANSPORTS = ("raw", "compressed")
STEP_NS = 100_000_000  # one control step of simulated time, 1/10 s


def _descriptor(description, low=None, high=None, choices=None) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=description, read_only=True)
    if isinstance(low, float):
        desc.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    elif low is not None:
        desc.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if choices:
        desc.additional_constraints = "one of: " + ", ".join(choices)
    return desc


PARAMETERS = {
    "block_mode": ("BLOCK_4", _descriptor("block set of the first episode", choices=BLOCK_MODES)),
    "seed": (0, _descriptor("world seed: the first layout, and the sequence unseeded resets draw "
                            "from", 0, 2**31 - 1)),
    "width": (640, _descriptor("image width (the datasets store 640x360)", 16, 4096)),
    "height": (360, _descriptor("image height", 16, 4096)),
    "original": (False, _descriptor("run Google's language_table package instead of our world "
                                    "(it must be installed)")),
    "rate_hz": (10.0, _descriptor("control steps per wall-clock second; 0 = as fast as the world "
                                  "steps", 0.0, 1000.0)),
    "episode_steps": (0, _descriptor("reset after this many steps; 0 = only on ~/reset",
                                     0, 1_000_000)),
    "transport": ("raw", _descriptor("raw: Image on image; compressed: JPEG CompressedImage on "
                                     "image/compressed", choices=TRANSPORTS)),
    "frame_id": ("camera_optical_frame", _descriptor("frame_id of the image and camera_info")),
    "world_frame": ("world", _descriptor("frame_id of effector and ground truth: the world frame "
                                         "(x away from the robot base, y to the image right)")),
    "publish_clock": (True, _descriptor("publish the simulated time on /clock")),
    "record_path": ("", _descriptor("record every published frame to a new MCAP bag here; "
                                    "empty = no recording")),
}


def _yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def camera_info(camera, header: Header) -> CameraInfo:
    """The world's pinhole camera. Its pixel (i, j) spans [i, i+1): ROS puts pixel centres on
    integers, hence the half-pixel shift of the principal point."""
    k = np.array(camera.K, np.float64)
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    p = np.hstack([k, np.zeros((3, 1))])
    return CameraInfo(header=header, width=camera.width, height=camera.height,
                      distortion_model="plumb_bob", d=[0.0] * 5, k=k.ravel().tolist(),
                      r=np.eye(3).ravel().tolist(), p=p.ravel().tolist())


def block_state(block) -> BlockState:
    """One of the world's BlockTruth as a message, pixels in ROS's convention (see camera_info)."""
    x, y = block.xy
    return BlockState(name=block.name,
                      pose=Pose(position=Point(x=float(x), y=float(y), z=float(block.z)),
                                orientation=_yaw_quaternion(float(block.yaw))),
                      u=float(block.pixel[0]) - 0.5, v=float(block.pixel[1]) - 0.5,
                      bbox=[int(b) for b in block.bbox],
                      visible_fraction=float(block.visible_fraction),
                      on_board=bool(block.on_board))


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("langtable_sim", **kwargs)
        self.declare_parameters("", [(n, default, d) for n, (default, d) in PARAMETERS.items()])
        self.p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, choices in (("block_mode", BLOCK_MODES), ("transport", TRANSPORTS)):
            if self.p[name] not in choices:
                raise ValueError(f"{name} {self.p[name]!r} is not one of {', '.join(choices)}")
        self.sim = LangTableSim(self.p["block_mode"], seed=self.p["seed"],
                                size=(self.p["width"], self.p["height"]),
                                original=self.p["original"])
        self.recorder = None
        if self.p["record_path"]:
            from cobra_ros.ros.bag_recorder import BagRecorder

            self.recorder = BagRecorder(self.p["record_path"])

        if self.p["transport"] == "compressed":
            self._image_pub = self.create_publisher(CompressedImage, "image/compressed", 10)
        else:
            self._image_pub = self.create_publisher(Image, "image", 10)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", 10)
        self._effector_pub = self.create_publisher(PointStamped, "effector", 10)
        self._truth_pub = self.create_publisher(SimGroundTruth, "ground_truth", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._instruction_pub = self.create_publisher(String, "instruction", latched)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", 10)

        # The timer, the reset service and the action subscription each have a callback group
        # (and an executor thread) of their own: with rate_hz 0 the timer is always ready and
        # would starve anything sharing its group. The world itself is used under _world.
        self._world = threading.Lock()
        self._lock = threading.Lock()  # guards _action
        self._action = None  # the latest action since the last step
        self.create_subscription(Vector3, "action", self._on_action, 10,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(ResetSim, "~/reset", self._on_reset,
                            callback_group=MutuallyExclusiveCallbackGroup())

        self.episode = 0
        self._episode_start_ns = STEP_NS  # a zero stamp means "unset" to ROS tools
        self._last_ns = 0
        self._unpublished = self.sim.reset(seed=self.p["seed"])
        period = 1.0 / self.p["rate_hz"] if self.p["rate_hz"] > 0 else 0.0
        self._timer = self.create_timer(period, self._tick,
                                        callback_group=MutuallyExclusiveCallbackGroup(),
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------ inputs

    def _on_action(self, msg: Vector3) -> None:
        action = (msg.x, msg.y)
        if not all(math.isfinite(v) for v in action):
            self.get_logger().warning(f"action ignored: not finite {action}",
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            self._action = action

    def _on_reset(self, request, response):
        mode = request.block_mode or None
        if mode is not None and mode not in BLOCK_MODES:
            response.success = False
            response.message = f"block_mode {mode!r} is not one of {', '.join(BLOCK_MODES)}"
            return response
        try:
            with self._world:
                frame = self._reset(None if request.seed < 0 else request.seed, mode,
                                    request.instruction or None)
                response.stamp = self._publish(frame)
        except Exception as err:  # e.g. a layout the world could not place: say why
            response.success, response.message = False, f"{type(err).__name__}: {err}"
            return response
        response.success = True
        response.message = f"episode {self.episode}: {frame.instruction}"
        return response

    # ------------------------------------------------------------------ the world

    def _reset(self, seed, block_mode, instruction):
        frame = self.sim.reset(seed=seed, block_mode=block_mode, instruction=instruction)
        self.episode += 1
        self._episode_start_ns = self._last_ns + STEP_NS
        self._unpublished = None  # a frame of the old episode not sent yet
        with self._lock:
            self._action = None  # an action meant for the old layout
        return frame

    def _tick(self) -> None:
        try:
            with self._world:
                self._advance()
        except Exception as err:  # one failed step (or a full disk) does not end the node
            self.get_logger().error(f"step failed: {type(err).__name__}: {err}",
                                    throttle_duration_sec=5.0)

    def _advance(self) -> None:
        """Publish the frame a reset left, or step the world with the latest action."""
        frame, self._unpublished = self._unpublished, None
        if frame is None:
            with self._lock:
                action, self._action = self._action, None
            frame = self.sim.step(action if action is not None else (0.0, 0.0))
        self._publish(frame)
        if self.p["episode_steps"] and frame.step >= self.p["episode_steps"]:
            self._unpublished = self._reset(None, None, None)

    # ------------------------------------------------------------------ outputs

    def _publish(self, frame):
        """Publish one frame stamped with its simulated time; returns the stamp."""
        stamp_ns = self._episode_start_ns + frame.step * STEP_NS
        self._last_ns = stamp_ns
        stamp = Time(nanoseconds=stamp_ns).to_msg()
        if self.p["publish_clock"]:
            self._clock_pub.publish(ClockMsg(clock=stamp))
        if frame.step == 0:
            self._send(self._instruction_pub, String(data=frame.instruction), stamp_ns)
        camera = Header(stamp=stamp, frame_id=self.p["frame_id"])
        world = Header(stamp=stamp, frame_id=self.p["world_frame"])
        self._send(self._image_pub, self._image(frame.rgb, camera), stamp_ns)
        self._send(self._info_pub, camera_info(self.sim.camera, camera), stamp_ns)
        effector = Point(x=float(frame.effector_xy[0]), y=float(frame.effector_xy[1]),
                         z=EFFECTOR_HEIGHT)
        self._send(self._effector_pub, PointStamped(header=world, point=effector), stamp_ns)
        target = Point(x=float(frame.effector_target_xy[0]), y=float(frame.effector_target_xy[1]),
                       z=EFFECTOR_HEIGHT)
        truth = SimGroundTruth(header=world, episode=self.episode, step=frame.step,
                               block_mode=frame.block_mode, instruction=frame.instruction,
                               effector=effector, effector_target=target,
                               blocks=[block_state(b) for b in frame.blocks if b.in_set])
        self._send(self._truth_pub, truth, stamp_ns)
        return stamp

    def _send(self, publisher, msg, stamp_ns: int) -> None:
        publisher.publish(msg)
        if self.recorder is not None:
            self.recorder.write(publisher.topic_name, msg, stamp_ns)

    def _image(self, rgb: np.ndarray, header: Header):
        if self.p["transport"] == "compressed":
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError("OpenCV could not encode the frame as JPEG")
            return CompressedImage(header=header, format="rgb8; jpeg compressed bgr8",
                                   data=data.tobytes())
        h, w = rgb.shape[:2]
        return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                     step=w * 3, data=np.ascontiguousarray(rgb).tobytes())

    def destroy_node(self):
        # also runs for a node whose __init__ failed half-way (the context destroys its nodes)
        for part in (getattr(self, "recorder", None), getattr(self, "sim", None)):
            if part is not None:
                part.close()
        return super().destroy_node()


def main(args=None) -> int:
    # no rclpy signal handlers (see signals.py): the world stops stepping first, the context last
    stop = signals.stop_event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = SimNode()
    except Exception as err:  # bad parameters, no original package, an existing bag: say why
        print(f"[langtable_sim] cannot start: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=3)  # timer, reset service, actions
    executor.add_node(node)
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)  # a signal is seen within 0.1 s
    except ExternalShutdownException:
        pass
    finally:
        signals.ignore_interrupts()
        node._timer.cancel()  # no new step; the one in flight still publishes
        executor.shutdown()
        node.destroy_node()  # closes the bag, so what was recorded can be read
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
