"""The `cobra` node: camera frames in; descriptions, answers and diagnostics out.

A managed (lifecycle) node:
  configure   load the model (model_path, device, dtype) and start its worker (jobs.py)
  activate    subscribe to the cameras (and camera_info); serve ~/ask, ~/ask_yes_no, ~/locate,
              ~/watch and the ~/describe action; publish ~/description, ~/description/stream,
              ~/annotated and ~/watch/result (the standing questions, on every encoded frame)
  deactivate  undo activate
  cleanup     stop the worker and free the model (and its GPU memory)
With `autostart` (the default) it configures and activates itself; when the model does not load
it says why and exits with status 1. /diagnostics is published in every state. Setting
model_path, device or dtype at run time goes through the same transitions (deactivate, cleanup,
configure, activate); a model that does not load is refused and the old values load again.

The data path runs one way: a frame message is decoded to RGB here (image_conversion) and left in
its camera's mailbox (cameras.py); a request becomes a job (jobs.py), which takes the newest frame
and runs the engine on the worker thread (worker.py); the plain result comes back and replies.py
builds the message. Service and action callbacks wait for their job until request_timeout_s and
always reply, with the answer or the reason there is none.

    python -m cobra_ros.ros.node --ros-args -p model_path:=/models/cobra \
        -r image:=/camera/image_raw
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from cobra_ros.action import Describe
from cobra_ros.model.grounding import TableCamera
from cobra_ros.msg import SceneDescription, WatchResult
from cobra_ros.ros import params, replies, signals
from cobra_ros.ros.cameras import Camera, Frame
from cobra_ros.ros.image_conversion import ImageError, to_rgb
from cobra_ros.ros.jobs import ModelJobs, NoFrame, Watch
from cobra_ros.ros.params import MODEL_PARAMETERS, Settings
from cobra_ros.ros.requests import RequestError, check_question, token_budget
from cobra_ros.ros.worker import JobCancelled, WorkerBusy, WorkerStopped
from cobra_ros.srv import Ask, AskYesNo, Locate
from cobra_ros.srv import Watch as WatchService

NODE_NAME = "cobra"
WARN_EVERY_S = 5.0  # at most one warning per cause in this period
OUTPUT_DEPTH = 10  # outputs: reliable, keep last 10
STREAM_DEPTH = 200  # one message per token: a briefly slow subscriber still gets every token
# Requests (services and action goals/cancels/results): reliable, and deep enough that a burst of
# clients is answered "busy" by the node rather than overwritten unseen in the DDS queue.
REQUEST_QOS = QoSProfile(depth=256)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
KNOWN_FAILURES = (NoFrame, JobCancelled, WorkerStopped)  # their message is the whole reason
WATCH_PARAMETERS = {"watch_questions", "watch_expressions", "watch_camera", "scoring",
                    "image_topics"}
CALIBRATION_PARAMETERS = {"camera_info_topic", "calibrated_camera", "image_topics"}


class CobraNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._state = "unconfigured"
        self._jobs: ModelJobs | None = None
        self._model_error = ""  # why the model did not load at the last configure
        self._model_note = ""  # why the last run-time model change was refused
        self._restoring = False  # while a refused model change puts the old values back
        self._cameras: dict[str, Camera] = {}
        self._camera_subscriptions = []
        self._camera_info = None  # the latest CameraInfo of the calibrated camera
        self._info_subscription = None
        self._outputs = {}  # publishers created on activate, by role
        self._servers = []  # services and the action server
        self._describe_timer = None
        self._requests = dict.fromkeys(("answered", "refused", "timed_out"), 0)
        self._requests_lock = threading.Lock()
        self._requests_group = ReentrantCallbackGroup()
        self._frames_group = MutuallyExclusiveCallbackGroup()

        self.add_on_set_parameters_callback(self._check_parameters)
        params.declare(self)
        self.settings = Settings.read(self)
        self.add_post_set_parameters_callback(self._use_parameters)

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_DEPTH)
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # reports go on when sim time stands
        self.create_timer(1.0, self._guarded("diagnostics", self._publish_diagnostics),
                          clock=steady)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> bool:
        """configure + activate (autostart); False, with the reason logged, when either fails."""
        if self.trigger_configure() != SUCCESS:
            self.get_logger().fatal(f"not starting: {self._model_error or 'configure failed'}")
            return False
        if self.trigger_activate() != SUCCESS:
            self.get_logger().fatal("not starting: activate failed")
            return False
        return True

    def on_configure(self, state) -> TransitionCallbackReturn:
        report = self._report_model_problem
        try:
            self._jobs = ModelJobs.load(self.settings, report)
        except Exception as err:
            self._model_error = f"the model did not load: {err}"
            self.get_logger().error(self._model_error)
            return FAILURE
        self._model_error, self._state = "", "inactive"
        jobs = self._jobs
        self.get_logger().info(f"model {jobs.model} loaded from {jobs.model_dir} on {jobs.device}")
        return SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._outputs = {
            "description": self.create_publisher(SceneDescription, "~/description", OUTPUT_DEPTH),
            "stream": self.create_publisher(SceneDescription, "~/description/stream",
                                            STREAM_DEPTH),
            "annotated": self.create_publisher(Image, "~/annotated", OUTPUT_DEPTH),
            "watch": self.create_publisher(WatchResult, "~/watch/result", OUTPUT_DEPTH),
        }
        group, qos = self._requests_group, REQUEST_QOS
        self._servers = [
            self.create_service(Ask, "~/ask", self._always_reply(self._on_ask),
                                callback_group=group, qos_profile=qos),
            self.create_service(AskYesNo, "~/ask_yes_no", self._always_reply(self._on_ask_yes_no),
                                callback_group=group, qos_profile=qos),
            self.create_service(Locate, "~/locate", self._always_reply(self._on_locate),
                                callback_group=group, qos_profile=qos),
            self.create_service(WatchService, "~/watch", self._always_reply(self._on_watch),
                                callback_group=group, qos_profile=qos),
            ActionServer(self, Describe, "~/describe", self._on_describe, callback_group=group,
                         cancel_callback=lambda request: CancelResponse.ACCEPT,
                         goal_service_qos_profile=qos, cancel_service_qos_profile=qos,
                         result_service_qos_profile=qos),
        ]
        self._subscribe()
        self._subscribe_camera_info()
        self._start_describe_timer()
        self._state = "active"
        self._apply_watch()
        cameras = ", ".join(c.topic for c in self._cameras.values())
        self.get_logger().info(f"active: cameras {cameras} ({self.settings.transport})")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._close_interfaces()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        self._state = "finalized"
        return SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def release(self) -> None:
        """Close every interface, stop the worker and free the model."""
        self._close_interfaces()
        jobs, self._jobs = self._jobs, None
        if jobs is not None:
            jobs.stop("the model is being unloaded")
        self._cameras = {}
        self._state = "unconfigured"

    def _close_interfaces(self) -> None:
        if self._jobs is not None:
            self._jobs.set_watch(None)
        if self._describe_timer is not None:
            self.destroy_timer(self._describe_timer)
            self._describe_timer = None
        self._unsubscribe()
        if self._info_subscription is not None:
            self.destroy_subscription(self._info_subscription)
            self._info_subscription = None
        for server in self._servers:
            if isinstance(server, ActionServer):
                server.destroy()
            else:
                self.destroy_service(server)
        self._servers = []
        outputs, self._outputs = self._outputs, {}
        for publisher in outputs.values():
            self.destroy_publisher(publisher)

    # -- parameters -------------------------------------------------------------------------------
    def _check_parameters(self, parameters) -> SetParametersResult:
        if self._restoring:
            return SetParametersResult(successful=True)
        try:
            declaring = not hasattr(self, "settings")  # overrides; model files: at configure
            proposed = {p.name: p.value for p in parameters if p.name in params.SPECS}
            current = {name: self.get_parameter(name).value for name in params.SPECS
                       if self.has_parameter(name)}
            values = {**current, **proposed}
            for name, value in proposed.items():
                problem = params.check(name, value, values, check_model=not declaring)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
        except Exception as err:  # a check that breaks refuses the change, not the node
            reason = f"cannot check: {type(err).__name__}: {err}"
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _use_parameters(self, parameters) -> None:
        previous, self.settings = self.settings, Settings.read(self)
        if self._restoring:
            return
        changed = {p.name for p in parameters}
        try:
            if changed & set(MODEL_PARAMETERS) and self._jobs is not None:
                self._change_model(previous)
            elif self._state == "active":
                if changed & {"image_topics", "transport"}:
                    self._unsubscribe()
                    self._subscribe()
                if "describe_rate_hz" in changed:
                    self._start_describe_timer()
                if changed & CALIBRATION_PARAMETERS:
                    self._subscribe_camera_info()
                if changed & WATCH_PARAMETERS:
                    self._apply_watch()
        except Exception as err:
            self.get_logger().error(f"applying {sorted(changed)} failed: "
                                    f"{type(err).__name__}: {err}")

    def _change_model(self, previous: Settings) -> None:
        """Through the lifecycle, as an operator would: deactivate, cleanup, configure, activate.
        A model that does not load is refused: the old values go back and load again."""
        was_active, wanted = self._state == "active", self.settings
        if was_active:
            self.trigger_deactivate()
        self.trigger_cleanup()
        if self.trigger_configure() == SUCCESS:
            self._model_note = ""
        else:
            refused = (f"refused model_path {wanted.model_path!r} (device {wanted.device}, "
                       f"{wanted.dtype}): {self._model_error}")
            self._restoring = True
            try:
                self.set_parameters([Parameter(name, value=getattr(previous, name))
                                     for name in MODEL_PARAMETERS])
            finally:
                self._restoring = False
            if self.trigger_configure() != SUCCESS:
                return  # the old model no longer loads either: unconfigured, diagnostics say why
            self._model_note = f"{refused}; serving {self._jobs.model_dir} again"
            self.get_logger().error(self._model_note)
        if was_active:
            self.trigger_activate()

    # -- cameras ----------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        settings, cameras = self.settings, {}
        for name in settings.image_topics:
            camera = self._cameras.get(name) or Camera(name, self.resolve_topic_name(name))
            cameras[name] = camera
            msg_type, topic = (CompressedImage, f"{name}/compressed") \
                if settings.transport == "compressed" else (Image, name)
            self._camera_subscriptions.append(self.create_subscription(
                msg_type, topic, self._image_callback(camera), qos_profile_sensor_data,
                callback_group=self._frames_group))
        self._cameras = cameras

    def _unsubscribe(self) -> None:
        for subscription in self._camera_subscriptions:
            self.destroy_subscription(subscription)
        self._camera_subscriptions = []

    def _image_callback(self, camera: Camera):
        guarded = self._guarded(f"frame from {camera.topic}", self._on_image)

        def on_image(msg, info):  # two parameters: rclpy then passes the MessageInfo too
            guarded(camera, msg, info)
        return on_image

    def _on_image(self, camera: Camera, msg, info) -> None:
        gid = (info.get("publisher_gid") or {}).get("data")
        if gid is not None:
            camera.note_sequence(bytes(gid), info.get("publication_sequence_number"))
        try:
            rgb = to_rgb(msg, self.settings.max_image_pixels)
        except Exception as err:  # ImageError, or anything a decoder raises on hostile bytes
            reason = str(err) if isinstance(err, ImageError) else f"{type(err).__name__}: {err}"
            camera.reject(reason)
            self.get_logger().warning(f"{camera.topic}: frame rejected: {reason}",
                                      throttle_duration_sec=WARN_EVERY_S)
            return
        camera.offer(Frame(rgb, msg.header))
        jobs = self._jobs
        if jobs is not None:
            jobs.watch_new_frame(camera)  # only the watched camera's frames start work

    def _camera(self, name: str) -> Camera:
        cameras = list(self._cameras.values())
        if not cameras:
            raise RequestError("the node is not active")
        if not name:
            return cameras[0]
        for camera in cameras:
            if name in (camera.name, camera.topic):
                return camera
        names = ", ".join(c.name for c in cameras)
        raise RequestError(f"unknown camera {name!r}; cameras: {names}")

    def _subscribe_camera_info(self) -> None:
        if self._info_subscription is not None:
            self.destroy_subscription(self._info_subscription)
            self._info_subscription = None
        self._camera_info = None
        topic = self.settings.camera_info_topic
        if topic:
            self._info_subscription = self.create_subscription(
                CameraInfo, topic, self._guarded("camera_info", self._on_camera_info), 10,
                callback_group=self._frames_group)

    def _on_camera_info(self, msg) -> None:
        self._camera_info = msg

    def _calibration(self, camera: Camera) -> TableCamera | None:
        """The camera's intrinsics (its latest CameraInfo) and pose (parameters), when it is the
        calibrated camera and a CameraInfo with a focal length came."""
        settings, info = self.settings, self._camera_info
        calibrated = settings.calibrated_camera or settings.image_topics[0]
        if info is None or camera.name != calibrated or info.k[0] <= 0 or info.width == 0:
            return None
        return TableCamera.from_pose(info.k, info.width, info.height, settings.camera_xyz,
                                     settings.camera_rpy)

    def _apply_watch(self) -> None:
        jobs, settings = self._jobs, self.settings
        if jobs is None or self._state != "active":
            return
        camera = self._camera(settings.watch_camera)
        board = settings.board_frame

        def on_result(watched) -> None:
            self._publish("watch", replies.watch_result(watched, board))

        jobs.set_watch(Watch(camera.name, settings.watch_questions, settings.watch_expressions,
                             settings.scoring, on_result, lambda: self._calibration(camera)))

    # -- requests ---------------------------------------------------------------------------------
    def _guarded(self, what: str, callback):
        """A timer/subscription callback whose exceptions are reported, not raised: the executor
        would re-raise them from spin() and end the node."""
        def guarded(*args):
            try:
                callback(*args)
            except Exception as err:
                self.get_logger().error(f"{what} failed: {type(err).__name__}: {err}",
                                        throttle_duration_sec=WARN_EVERY_S)
        return guarded

    def _always_reply(self, handler):
        """A service callback that replies even when the handler raises."""
        def callback(request, response):
            try:
                return handler(request, response)
            except Exception as err:
                self.get_logger().error(f"request failed: {traceback.format_exc()}")
                return replies.refused(response, f"internal error: {type(err).__name__}: {err}")
        return callback

    def _wait(self, submit, cancel_requested=None):
        """Submit a job (submit(jobs) -> Job) and wait until request_timeout_s:
        (result, None) or (None, why)."""
        cancellable = cancel_requested is not None
        jobs = self._jobs
        if jobs is None:
            return None, "the model is not loaded"
        try:
            job = submit(jobs)
        except (WorkerBusy, WorkerStopped) as err:
            return None, str(err)
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout
        poll = 0.02 if cancellable else timeout  # only a goal can be cancelled meanwhile
        while not job.wait(min(poll, max(0.0, deadline - time.monotonic()))):
            if cancellable and cancel_requested():
                job.cancel()  # a queued job ends now, a running one at its next token
            if time.monotonic() >= deadline:
                job.cancel()
                self._count("timed_out")
                return None, f"timed out: no answer within request_timeout_s = {timeout:g} s"
        if job.error is not None:
            error = job.error
            return None, str(error) if isinstance(error, KNOWN_FAILURES) else \
                f"model error: {type(error).__name__}: {error}"
        return job.result, None

    def _count(self, outcome: str) -> None:
        with self._requests_lock:
            self._requests[outcome] += 1

    def _refuse(self, response, reason: str):
        self._count("refused")
        return replies.refused(response, reason)

    def _budget(self, requested: int) -> tuple[int, str]:
        s = self.settings
        return token_budget(requested, s.max_new_tokens, s.max_new_tokens_limit)

    def _on_ask(self, request, response):
        started = time.monotonic()
        try:
            question = check_question(request.question, self.settings.max_question_chars)
            camera = self._camera(request.camera)
            budget, note = self._budget(request.max_new_tokens)
        except RequestError as err:
            return self._refuse(response, str(err))
        asked, problem = self._wait(lambda jobs: jobs.ask(camera, question, budget))
        if problem:
            return self._refuse(response, problem)
        self._count("answered")
        self._annotate(asked.frame, f"Q: {question}  A: {asked.answer.text}")
        return replies.ask(response, asked, note, started)

    def _on_ask_yes_no(self, request, response):
        started = time.monotonic()
        try:
            question = check_question(request.question, self.settings.max_question_chars)
            camera = self._camera(request.camera)
        except RequestError as err:
            return self._refuse(response, str(err))
        judged, problem = self._wait(
            lambda jobs: jobs.yes_no(camera, question, self.settings.scoring,
                                     self.settings.batch_yes_no))
        if problem:
            return self._refuse(response, problem)
        self._count("answered")
        self._annotate(judged.frame, f"Q: {question}  P(yes) = {judged.probability:.2f}")
        return replies.ask_yes_no(response, judged, started)

    def _on_locate(self, request, response):
        started = time.monotonic()
        try:
            expression = check_question(request.expression, self.settings.max_question_chars,
                                        "expression")
            if '"' in expression:
                raise RequestError("expression contains a double quote; the grounding prompt "
                                   "quotes it")
            camera = self._camera(request.camera)
        except RequestError as err:
            return self._refuse(response, str(err))
        calibration = self._calibration(camera)
        found, problem = self._wait(lambda jobs: jobs.locate(camera, expression, calibration))
        if problem:
            return self._refuse(response, problem)
        self._count("answered" if found.located is not None else "refused")
        return replies.locate(response, found, self.settings.board_frame, started)

    def _on_watch(self, request, response):
        """Sets the watch parameters, so that the checks, `ros2 param get` and the result are
        the same whichever way the lists were set."""
        result = self.set_parameters_atomically([
            Parameter("watch_questions", value=list(request.questions)),
            Parameter("watch_expressions", value=list(request.expressions)),
            Parameter("watch_camera", value=request.camera)])
        if not result.successful:
            return self._refuse(response, result.reason)
        response.success = True
        response.message = (f"watching {len(request.questions)} questions and "
                            f"{len(request.expressions)} expressions")
        return response

    def _on_describe(self, goal_handle):
        try:
            return self._describe_goal(goal_handle)
        except Exception as err:  # the client still gets a result that says what went wrong
            self.get_logger().error(f"describe goal failed: {traceback.format_exc()}")
            if goal_handle.is_active:
                goal_handle.abort()
            return replies.describe_result(f"internal error: {type(err).__name__}: {err}")

    def _describe_goal(self, goal_handle):
        goal, settings = goal_handle.request, self.settings
        try:
            prompt = check_question(goal.prompt, settings.max_question_chars, "prompt") \
                if goal.prompt else settings.prompt
            camera = self._camera(goal.camera)
            budget, note = self._budget(goal.max_new_tokens)
        except RequestError as err:
            self._count("refused")
            goal_handle.abort()
            return replies.describe_result(str(err))

        def on_text(frame, text: str, num_tokens: int) -> None:
            goal_handle.publish_feedback(replies.describe_feedback(text, num_tokens))
            self._stream(frame, prompt, text, num_tokens)

        def cancel_requested() -> bool:
            return goal_handle.is_cancel_requested

        asked, problem = self._wait(lambda jobs: jobs.ask(
            camera, prompt, budget, on_text, cancel_requested, name="describe"), cancel_requested)
        msg = None if asked is None else replies.description(asked, prompt, self._model_name())
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            return replies.cancelled(msg)
        if problem:
            self._count("refused")
            goal_handle.abort()
            return replies.describe_result(problem)
        self._count("answered")
        self._publish_description(asked, msg)
        goal_handle.succeed()
        return replies.describe_result(note, msg, success=True)

    # -- periodic descriptions --------------------------------------------------------------------
    def _start_describe_timer(self) -> None:
        if self._describe_timer is not None:
            self.destroy_timer(self._describe_timer)
            self._describe_timer = None
        rate = self.settings.describe_rate_hz
        if rate > 0:  # the node clock: sim time when use_sim_time
            tick = self._guarded("periodic description", self._describe_tick)
            self._describe_timer = self.create_timer(1.0 / rate, tick)

    def _describe_tick(self) -> None:
        jobs, settings = self._jobs, self.settings
        if jobs is None:
            return
        prompt = settings.prompt
        budget = min(settings.max_new_tokens, settings.max_new_tokens_limit)

        def on_text(frame, text, num_tokens):
            self._stream(frame, prompt, text, num_tokens)

        def on_done(asked):
            self._publish_description(asked, replies.description(asked, prompt, jobs.model))

        for camera in list(self._cameras.values()):  # each frame once; none queued while one runs
            jobs.describe_new_frame(camera, prompt, budget, on_text, on_done)

    # -- outputs ----------------------------------------------------------------------------------
    def _model_name(self) -> str:
        jobs = self._jobs
        return jobs.model if jobs is not None else ""

    def _publish(self, role: str, msg) -> None:
        publisher = self._outputs.get(role)
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except Exception as err:  # deactivated meanwhile: the publisher is gone
            self.get_logger().debug(f"not published on {role}: {err}")

    def _stream(self, frame, prompt: str, text: str, num_tokens: int) -> None:
        if self.settings.stream_tokens:
            self._publish("stream", replies.partial_description(frame, prompt, text, num_tokens,
                                                                self._model_name()))

    def _publish_description(self, asked, msg) -> None:
        if msg.is_final:
            self._publish("description", msg)
            self._annotate(asked.frame, asked.answer.text)

    def _annotate(self, frame, text: str) -> None:
        if self.settings.publish_annotated:
            self._publish("annotated", replies.annotated(frame, text))

    def _report_model_problem(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=WARN_EVERY_S)

    def _publish_diagnostics(self) -> None:
        node_name, jobs = self.get_fully_qualified_name(), self._jobs
        with self._requests_lock:
            requests = dict(self._requests)
        statuses = [replies.model_status(node_name, jobs, self.settings, self._state,
                                         self._model_error, self._model_note, requests)]
        statuses += [replies.camera_status(node_name, camera, jobs) for camera in
                     list(self._cameras.values())]
        stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(replies.diagnostic_array(statuses, stamp))


def spin_until_signal(executor, node, stop) -> None:
    """Spin until `stop` (`signals.stop_event`: SIGINT or SIGTERM); the caller then cleans up."""
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.1)  # a signal is seen within 0.1 s
        except Exception as err:  # e.g. a reply to a service destroyed by deactivate meanwhile
            node.get_logger().error(f"callback failed: {type(err).__name__}: {err}",
                                    throttle_duration_sec=WARN_EVERY_S)


def main(args=None) -> int:
    """Run the node; the process then ends at once with the status (1: the model did not load,
    2: invalid parameters). Once the node is cleaned up and the context shut down, nothing is
    left to close, but the interpreter's teardown of torch and the model modules would still
    take 1.5-3 s of launch's 5 s between SIGINT and SIGTERM on a busy machine."""
    status = run(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run(args=None) -> int:
    """Run the node until SIGINT or SIGTERM, then clean up in order; the exit status."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we report bad frames
    stop = signals.stop_event()  # from the start: a Ctrl-C while the model loads ends it cleanly
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = CobraNode()
    except Exception as err:  # an invalid parameter value or type in the YAML / -p overrides
        print(f"[cobra] invalid parameters: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=node.settings.queue_size + 4)  # waiters hold one
    executor.add_node(node)
    status = 0
    try:
        if node.settings.autostart and not node.start():
            status = 1
        else:
            spin_until_signal(executor, node, stop)
    finally:
        signals.ignore_interrupts()
        node.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
