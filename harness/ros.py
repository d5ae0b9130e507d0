"""A cobra node in its own process, reached over real DDS: for tests, examples and benchmarks.

DDS traffic stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and in a domain derived
from the calling process id, so test runs in parallel do not see each other.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import MultiThreadedExecutor


def isolate_ros_traffic() -> int:
    """Keep this process's and its children's DDS traffic on localhost, in a domain of their own"""
    domain = 1 + os.getpid() % 100
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


class NodeProcess:
    """`python -m cobra_ros.ros.node --ros-args ...` with its output in a log file."""

    def __init__(
        self,
        ros_args: list[str],
        module: str = "cobra_ros.ros.node",
        torch_threads: int | None = 1,
    ):
        """torch_threads=1 by default: on a small shared machine, several processes each spinning
        one OpenMP thread per core are far slower than one thread each."""
        self.log_path = Path(tempfile.mkstemp(prefix="cobra_node_", suffix=".log")[1])
        self._log = open(self.log_path, "w")
        self.command = [sys.executable, "-u", "-m", module, "--ros-args", *ros_args]
        env = os.environ.copy()
        if torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(torch_threads)
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (a clean shutdown), then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class RosClient:
    """An rclpy node in a context of its own, spun by a background thread."""

    def __init__(self, name: str = "cobra_client", namespace: str | None = None):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(
            target=self.executor.spin, name=f"{name}_spin", daemon=True
        )
        self._thread.start()

    def wait_future(self, future, timeout: float, what: str = "reply"):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout) and not future.done():
            raise TimeoutError(f"no {what} within {timeout} s")
        return future.result()

    def call(self, client, request, timeout: float = 30.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available within {timeout} s")
        return self.wait_future(
            client.call_async(request), timeout, f"reply from {client.srv_name}"
        )

    @staticmethod
    def wait_for(predicate, timeout: float, what: str, poll: float = 0.01):
        """Poll `predicate` until it returns something truthy; return that."""
        value = RosClient.wait_for_quiet(predicate, timeout, poll)
        if not value:
            raise TimeoutError(f"{what}: not within {timeout} s")
        return value

    @staticmethod
    def wait_for_quiet(predicate, seconds: float, poll: float = 0.05):
        """Watch `predicate` for `seconds`: its first truthy value, or None if it stayed falsy."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        return None

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class CobraClient(RosClient):
    """A client of one cobra node: frames out; services, action, outputs and diagnostics in."""

    def __init__(self, namespace: str = "/", node_name: str = "cobra"):
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import GetParameters, SetParameters
        from rclpy.action import ActionClient

        from cobra_ros.action import Describe
        from cobra_ros.msg import SceneDescription
        from cobra_ros.srv import Ask, AskYesNo

        super().__init__("cobra_test_client")
        self.namespace = namespace.rstrip("/")
        self.base = f"{self.namespace}/{node_name}"
        from rclpy.qos import QoSProfile

        node = self.node
        many = QoSProfile(depth=256)  # one client object shared by many threads: keep every reply
        self.ask_client = node.create_client(Ask, f"{self.base}/ask", qos_profile=many)
        self.yes_no_client = node.create_client(
            AskYesNo, f"{self.base}/ask_yes_no", qos_profile=many
        )
        self.describe_client = ActionClient(
            node,
            Describe,
            f"{self.base}/describe",
            goal_service_qos_profile=many,
            result_service_qos_profile=many,
            cancel_service_qos_profile=many,
        )
        # rclpy's ActionClient drops a goal's feedback callback once its result arrives, and the
        # result travels apart from the feedback: a last feedback that lands after the result is
        # never seen there. The action's own feedback topic, read directly, keeps every one.
        self._feedback = {}  # goal uuid -> [Describe.Feedback]
        self._on_goal_feedback = {}  # goal uuid -> called after each feedback
        self.feedback_topic = f"{self.base}/describe/_action/feedback"
        node.create_subscription(
            Describe.Impl.FeedbackMessage, self.feedback_topic, self._on_feedback_message, many
        )
        self.get_params_client = node.create_client(GetParameters, f"{self.base}/get_parameters")
        self.set_params_client = node.create_client(SetParameters, f"{self.base}/set_parameters")
        self._lock = threading.Lock()
        self.descriptions, self.stream, self.annotated = [], [], []
        self.diagnostics = {}  # status name -> (receive time, DiagnosticStatus)
        self.diagnostics_stamps = []  # header stamps of the node's DiagnosticArrays (its clock)
        for topic, store in (
            ("description", self.descriptions),
            ("description/stream", self.stream),
        ):
            node.create_subscription(
                SceneDescription, f"{self.base}/{topic}", self._keeper(store), 100
            )
        from sensor_msgs.msg import Image
        node.create_subscription(Image, f"{self.base}/annotated", self._keeper(self.annotated), 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._publishers = {}

    def _keeper(self, store):
        def keep(msg):
            with self._lock:
                store.append(msg)
        return keep

    def _on_feedback_message(self, msg):
        goal = bytes(msg.goal_id.uuid)
        with self._lock:
            if goal not in self._feedback:
                return
            self._feedback[goal].append(msg.feedback)
            then = self._on_goal_feedback.get(goal)
        if then is not None:
            then()

    def _on_diagnostics(self, msg):
        now = time.monotonic()
        with self._lock:
            mine = [status for status in msg.status if status.name.startswith(self.base + ":")]
            for status in mine:
                self.diagnostics[status.name] = (now, status)
            if mine:
                self.diagnostics_stamps.append(msg.header.stamp)

    def wait_ready(self, timeout: float = 60.0) -> None:
        for client in (self.ask_client, self.yes_no_client, self.get_params_client):
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"{client.srv_name} not available within {timeout} s")
        if not self.describe_client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f"{self.base}/describe not available within {timeout} s")
        self.wait_for(
            lambda: self.node.count_publishers(self.feedback_topic) > 0,
            timeout,
            f"a publisher on {self.feedback_topic}",
        )

    # -- frames -------------------------------------------------------------------------------
    def publish(self, msg, topic: str = "image") -> None:
        full = topic if topic.startswith("/") else f"{self.namespace}/{topic}"
        key = (full, type(msg))
        if key not in self._publishers:
            self._publishers[key] = self.node.create_publisher(type(msg), full, 10)
        self._publishers[key].publish(msg)

    @staticmethod
    def header(sec: int, nanosec: int = 0, frame_id: str = "camera_optical_frame"):
        from std_msgs.msg import Header

        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header

    def show(self, msg, topic: str = "image", camera: str = "", timeout: float = 30.0):
        """Publish `msg` until the node answers about it (its stamp comes back); the reply."""
        want = (msg.header.stamp.sec, msg.header.stamp.nanosec)

        def answered_about_it():
            self.publish(msg, topic)
            reply = self.yes_no("Is this the frame?", camera=camera, timeout=timeout)
            return reply if (reply.image_stamp.sec, reply.image_stamp.nanosec) == want else None

        return self.wait_for(
            answered_about_it, timeout, f"the node to answer about frame {want}", poll=0.05
        )

    # -- requests -----------------------------------------------------------------------------
    def ask(self, question: str, camera: str = "", max_new_tokens: int = 0, timeout: float = 30.0):
        from cobra_ros.srv import Ask

        request = Ask.Request(question=question, camera=camera, max_new_tokens=max_new_tokens)
        return self.call(self.ask_client, request, timeout)

    def yes_no(self, question: str, camera: str = "", timeout: float = 30.0):
        from cobra_ros.srv import AskYesNo

        return self.call(
            self.yes_no_client, AskYesNo.Request(question=question, camera=camera), timeout
        )

    def describe(
        self,
        prompt: str = "",
        max_new_tokens: int = 0,
        camera: str = "",
        cancel_after: int | None = None,
        timeout: float = 60.0,
    ):
        """A Describe goal, cancelled after `cancel_after` feedbacks; (status, result, feedback).

        `feedback` is the goal's feedback as read from the action's feedback topic; it keeps
        growing while feedback that landed after the result is still arriving."""
        from uuid import uuid4

        from unique_identifier_msgs.msg import UUID

        from cobra_ros.action import Describe

        goal_id = UUID(uuid=list(uuid4().bytes))
        key = bytes(goal_id.uuid)
        feedback = []
        state = {"handle": None, "cancelled": False}

        # feedback may arrive before the goal response: whichever comes last cancels
        def cancel_when_due():
            with self._lock:
                due = cancel_after is not None and len(feedback) >= cancel_after
                if due and state["handle"] is not None and not state["cancelled"]:
                    state["cancelled"] = True
                    state["handle"].cancel_goal_async()

        with self._lock:
            self._feedback[key] = feedback
            self._on_goal_feedback[key] = cancel_when_due
        goal = Describe.Goal(prompt=prompt, max_new_tokens=max_new_tokens, camera=camera)
        future = self.describe_client.send_goal_async(goal, goal_uuid=goal_id)
        goal_handle = self.wait_future(future, timeout, "goal response")
        if not goal_handle.accepted:
            raise RuntimeError("goal rejected")
        with self._lock:
            state["handle"] = goal_handle
        cancel_when_due()
        result = self.wait_future(goal_handle.get_result_async(), timeout, "Describe result")
        return result.status, result.result, feedback

    # -- parameters ---------------------------------------------------------------------------
    def get_parameters(self, *names: str) -> dict:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        reply = self.call(self.get_params_client, GetParameters.Request(names=list(names)))
        return {name: parameter_value_to_python(value) for name, value in zip(names, reply.values)}

    def set_parameters(self, **values) -> list:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[
                Parameter(name, value=value).to_parameter_msg() for name, value in values.items()
            ]
        )
        return list(self.call(self.set_params_client, request).results)

    # -- diagnostics --------------------------------------------------------------------------
    def status(self, suffix: str, newer_than: float = 0.0, timeout: float = 15.0):
        """The latest DiagnosticStatus named ...`suffix` received after `newer_than` (monotonic)"""
        def find():
            with self._lock:
                for name, (received, status) in self.diagnostics.items():
                    if (
                        name.startswith(self.base + ":")
                        and name.endswith(suffix)
                        and received > newer_than
                    ):
                        return status
            return None

        return self.wait_for(find, timeout, f"diagnostics '{suffix}'", poll=0.05)

    def camera_counts(self, camera: str = "image", newer_than: float = 0.0) -> dict:
        status = self.status(f"camera {camera}", newer_than)
        values = {kv.key: kv.value for kv in status.values}
        keys = ("received", "rejected", "dropped", "taken", "encoded", "failed", "waiting", "lost")
        return {k: int(values[k]) for k in keys}
