"""The `cobra` node: camera frames in; descriptions, answers and diagnostics out.

A managed (lifecycle) node:
  configure   load the model (model_path, device, dtype) and start the model worker
  activate    subscribe to the cameras; serve ~/ask, ~/ask_yes_no and the ~/describe action; publish
              ~/description, ~/description/stream and ~/annotated
  deactivate  undo activate
  cleanup     stop the worker and free the model (and its GPU memory)
With `autostart` (the default) it configures and activates itself; when the model does not load it
says why and exits with status 1. /diagnostics is published in every state.

Threads: a MultiThreadedExecutor runs the ROS callbacks; all model work (jobs.py) runs on one worker
thread (worker.py) with a bounded queue. Service and action callbacks wait for their job until
request_timeout_s and always reply, with the answer or the reason there is none.

    python -m cobra_ros.ros.node --ros-args -p model_path:=/models/cobra -r image:=/camera/image_raw
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from functools import partial

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

import cobra_ros
from cobra_ros.action import Describe
from cobra_ros.msg import SceneDescription
from cobra_ros.srv import Ask, AskYesNo
from cobra_ros.ros import diagnostics, params
from cobra_ros.ros.cameras import Camera, Frame, NoFrame
from cobra_ros.ros.image_conversion import ImageError, to_rgb
from cobra_ros.ros.jobs import ModelJobs
from cobra_ros.ros.params import MODEL_PARAMETERS, Settings
from cobra_ros.ros.requests import RequestError, check_question, token_budget
from cobra_ros.ros.worker import JobCancelled, ModelWorker, WorkerBusy, WorkerStopped

NODE_NAME = "cobra"
WARN_EVERY_S = 5.0  # at most one warning per cause in this period
OUTPUT_DEPTH = 10  # outputs: reliable, keep last 10
STREAM_DEPTH = 200  # one message per token: a subscriber that is briefly slow still gets every token
LOAD_JOIN_TIMEOUT_S = 120.0
# Requests (services and action goals/cancels/results): reliable, and deep enough that a burst of clients
# is answered "busy" by the node rather than overwritten unseen in the DDS queue (rclpy's default keeps 10).
REQUEST_QOS = QoSProfile(depth=256)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class CobraNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._lifecycle = "unconfigured"
        self._worker: ModelWorker | None = None
        self._cameras: dict[str, Camera] = {}
        self._camera_subscriptions = []
        self._outputs = {}  # publishers created on activate, by role
        self._servers = []  # services and the action server
        self._describe_timer = None
        self._model_dir = ""  # the model being served
        self._model_error = ""  # why the model did not load at configure
        self._reload_error = ""  # why the last run-time model change was refused
        self._loading = ""  # model_path being loaded in the background
        self._loader: threading.Thread | None = None
        self._reverting = False
        self._timings = diagnostics.Timings()
        self._jobs = ModelJobs(self._publish, lambda: self.settings, self._timings)
        self._requests = {"answered": 0, "refused": 0, "timed_out": 0}
        self._requests_lock = threading.Lock()
        self._requests_group = ReentrantCallbackGroup()
        self._frames_group = MutuallyExclusiveCallbackGroup()

        self.add_on_set_parameters_callback(self._validate_parameters)
        params.declare(self)
        self.settings = Settings.read(self)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_DEPTH)
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # reports keep coming when sim time stands still
        self.create_timer(1.0, self._guarded("diagnostics", self._publish_diagnostics), clock=steady)

    # -- lifecycle ----------------------------------------------------------------------------------------
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
        try:
            engine, path = self._load_engine(self.settings)
        except Exception as err:
            self._model_error = f"the model did not load: {err}"
            self.get_logger().error(self._model_error)
            return FAILURE
        self._model_error, self._model_dir = "", str(path)
        self._worker = ModelWorker(engine, self.settings.queue_size, on_error=self._report_job_error)
        self._lifecycle = "inactive"
        self.get_logger().info(f"model {engine.name} loaded from {path} on {engine.device}")
        return SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._outputs = {
            "description": self.create_publisher(SceneDescription, "~/description", OUTPUT_DEPTH),
            "stream": self.create_publisher(SceneDescription, "~/description/stream", STREAM_DEPTH),
            "annotated": self.create_publisher(Image, "~/annotated", OUTPUT_DEPTH),
        }
        group = self._requests_group
        self._servers = [
            self.create_service(Ask, "~/ask", self._always_reply(self._on_ask), callback_group=group,
                                qos_profile=REQUEST_QOS),
            self.create_service(AskYesNo, "~/ask_yes_no", self._always_reply(self._on_ask_yes_no),
                                callback_group=group, qos_profile=REQUEST_QOS),
            ActionServer(self, Describe, "~/describe", self._on_describe, callback_group=group,
                         cancel_callback=lambda request: CancelResponse.ACCEPT,
                         goal_service_qos_profile=REQUEST_QOS, cancel_service_qos_profile=REQUEST_QOS,
                         result_service_qos_profile=REQUEST_QOS),
        ]
        self._subscribe()
        self._start_describe_timer()
        self._lifecycle = "active"
        cameras = ", ".join(c.topic for c in self._cameras.values())
        self.get_logger().info(f"active: cameras {cameras} ({self.settings.transport})")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._close_interfaces()
        self._lifecycle = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        self._lifecycle = "finalized"
        return SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.release()
        return SUCCESS

    def release(self) -> None:
        """Close every interface, stop the worker and free the model."""
        self._close_interfaces()
        loader = self._loader
        if loader is not None and loader is not threading.current_thread():
            loader.join(LOAD_JOIN_TIMEOUT_S)  # exiting while torch loads in that thread aborts the process
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop("the model is being unloaded")
        self._cameras = {}
        self._lifecycle = "unconfigured"

    def _close_interfaces(self) -> None:
        if self._describe_timer is not None:
            self.destroy_timer(self._describe_timer)
            self._describe_timer = None
        self._unsubscribe()
        for server in self._servers:
            if isinstance(server, ActionServer):
                server.destroy()
            else:
                self.destroy_service(server)
        self._servers = []
        outputs, self._outputs = self._outputs, {}
        for publisher in outputs.values():
            self.destroy_publisher(publisher)

    def _load_engine(self, settings: Settings):
        problem = params.device_problem(settings.device) or params.model_dir_problem(settings.model_path)
        if problem:
            raise ValueError(problem)
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        path = params.resolve_model_path(settings.model_path)
        return cobra_ros.load(path, device=settings.device, dtype=settings.dtype), path

    # -- parameters ---------------------------------------------------------------------------------------
    def _validate_parameters(self, parameters) -> SetParametersResult:
        try:
            return self._check_parameters(parameters)
        except Exception as err:  # a check that breaks refuses the change instead of breaking the node
            return SetParametersResult(successful=False, reason=f"cannot check: {type(err).__name__}: {err}")

    def _check_parameters(self, parameters) -> SetParametersResult:
        if self._reverting:
            return SetParametersResult(successful=True)
        declaring = not hasattr(self, "settings")  # overrides are checked as declared; files at configure
        proposed = {p.name: p.value for p in parameters}
        others = {name: proposed[name] if name in proposed else self.get_parameter(name).value
                  for name in params.SPECS if name in proposed or self.has_parameter(name)}
        for parameter in parameters:
            if parameter.name not in params.SPECS:
                continue
            if parameter.name in MODEL_PARAMETERS and self._loading:
                return SetParametersResult(successful=False, reason=(
                    f"{parameter.name}: still loading model_path {self._loading!r}; try again when it is done"))
            problem = params.check(parameter.name, parameter.value, others, check_model=not declaring)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        try:
            self._use_parameters(parameters)
        except Exception as err:
            self.get_logger().error(f"applying {[p.name for p in parameters]} failed: {type(err).__name__}: {err}")

    def _use_parameters(self, parameters) -> None:
        previous, self.settings = self.settings, Settings.read(self)
        if self._reverting:
            return
        changed = {p.name for p in parameters}
        if changed & set(MODEL_PARAMETERS) and self._worker is not None:
            self._start_reload(previous)
        if self._lifecycle == "active" and changed & {"image_topics", "transport"}:
            self._unsubscribe()
            self._subscribe()
        if self._lifecycle == "active" and "describe_rate_hz" in changed:
            self._start_describe_timer()

    def _start_reload(self, previous: Settings) -> None:
        self._loading = self.settings.model_path
        self._loader = threading.Thread(target=self._reload, args=(self.settings, previous),
                                        name="cobra_model_loader", daemon=True)
        self._loader.start()

    def _reload(self, wanted: Settings, previous: Settings) -> None:
        """Load the model the parameters now name; keep the old one and revert them if it fails."""
        try:
            engine, path = self._load_engine(wanted)
        except Exception as err:
            self._reload_error = (f"refused model_path {wanted.model_path!r} (device {wanted.device}, "
                                  f"{wanted.dtype}): {err}; still serving {self._model_dir}")
            self.get_logger().error(self._reload_error)
            self._reverting = True
            try:
                self.set_parameters([Parameter(name, value=getattr(previous, name)) for name in MODEL_PARAMETERS])
            finally:
                self._reverting, self._loading = False, ""
            return
        worker = self._worker
        if worker is not None:  # else the node was cleaned up meanwhile: drop the new model
            worker.replace_engine(engine)
            self._model_dir, self._reload_error = str(path), ""
            self.get_logger().info(f"now serving model {engine.name} from {path} on {engine.device}")
        self._loading = ""

    # -- cameras ------------------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        settings, cameras = self.settings, {}
        for name in settings.image_topics:
            camera = self._cameras.get(name) or Camera(
                name, self.resolve_topic_name(name), on_failure=self._report_frame_failure,
                on_encoded=lambda ms: self._timings.add(encode_ms=ms))
            cameras[name] = camera
            msg_type, topic = (CompressedImage, f"{name}/compressed") if settings.transport == "compressed" \
                else (Image, name)
            self._camera_subscriptions.append(self.create_subscription(
                msg_type, topic, self._image_callback(camera), qos_profile_sensor_data,
                callback_group=self._frames_group))
        self._cameras = cameras

    def _unsubscribe(self) -> None:
        for subscription in self._camera_subscriptions:
            self.destroy_subscription(subscription)
        self._camera_subscriptions = []

    def _image_callback(self, camera: Camera):
        guarded = self._guarded(f"frame from {camera.topic}", partial(self._on_image, camera))

        def on_image(msg, info):  # two parameters: rclpy then passes the MessageInfo too
            guarded(msg, info)
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
            self.get_logger().warning(f"{camera.topic}: frame rejected: {reason}", throttle_duration_sec=WARN_EVERY_S)
            return
        camera.offer(Frame(rgb, msg.header))

    def _camera(self, name: str) -> Camera:
        cameras = list(self._cameras.values())
        if not cameras:
            raise RequestError("the node is not active")
        if not name:
            return cameras[0]
        for camera in cameras:
            if name in (camera.name, camera.topic):
                return camera
        raise RequestError(f"unknown camera {name!r}; cameras: {', '.join(c.name for c in cameras)}")

    # -- requests -----------------------------------------------------------------------------------------
    def _guarded(self, what: str, callback):
        """A timer/subscription callback whose exceptions are reported, not raised: the executor would
        re-raise them from spin() and end the node."""
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
                response.success, response.message = False, f"internal error: {type(err).__name__}: {err}"
                return response
        return callback

    def _run(self, fn, name: str, cancel_requested=lambda: False):
        """Run fn(engine, job) on the worker and wait until request_timeout_s: (result, None) or (None, why)."""
        worker = self._worker
        if worker is None:
            return None, "the model is not loaded"
        try:
            job = worker.submit(fn, name)
        except (WorkerBusy, WorkerStopped) as err:
            return None, str(err)
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout
        while not job.wait(0.02):
            if cancel_requested():
                job.cancel()  # a queued job ends now, a running one at its next token
            if time.monotonic() > deadline:
                job.cancel()
                self._count("timed_out")
                return None, f"timed out: no answer within request_timeout_s = {timeout:g} s"
        if job.error is not None:
            known = (NoFrame, JobCancelled, WorkerStopped)
            return None, str(job.error) if isinstance(job.error, known) else \
                f"model error: {type(job.error).__name__}: {job.error}"
        return job.result, None

    def _count(self, outcome: str) -> None:
        with self._requests_lock:
            self._requests[outcome] += 1

    def _refuse(self, response, reason: str):
        self._count("refused")
        response.success, response.message = False, reason
        return response

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
        result, problem = self._run(partial(self._jobs.answer, camera, question, budget), "ask")
        if problem:
            return self._refuse(response, problem)
        frame, answer = result
        self._count("answered")
        response.success, response.message, response.answer = True, note, answer.text
        response.image_stamp = frame.header.stamp
        response.latency_ms = (time.monotonic() - started) * 1000.0
        return response

    def _on_ask_yes_no(self, request, response):
        started = time.monotonic()
        try:
            question = check_question(request.question, self.settings.max_question_chars)
            camera = self._camera(request.camera)
        except RequestError as err:
            return self._refuse(response, str(err))
        result, problem = self._run(partial(self._jobs.yes_no, camera, question), "ask_yes_no")
        if problem:
            return self._refuse(response, problem)
        frame, probability = result
        self._count("answered")
        response.success, response.answer, response.probability = True, probability >= 0.5, probability
        response.image_stamp = frame.header.stamp
        response.latency_ms = (time.monotonic() - started) * 1000.0
        return response

    def _on_describe(self, goal_handle):
        try:
            return self._describe_goal(goal_handle)
        except Exception as err:  # the client still gets a result that says what went wrong
            self.get_logger().error(f"describe goal failed: {traceback.format_exc()}")
            if goal_handle.is_active:
                goal_handle.abort()
            return Describe.Result(success=False, message=f"internal error: {type(err).__name__}: {err}")

    def _describe_goal(self, goal_handle):
        result = Describe.Result()
        goal, settings = goal_handle.request, self.settings
        try:
            prompt = check_question(goal.prompt, settings.max_question_chars, "prompt") if goal.prompt \
                else settings.prompt
            camera = self._camera(goal.camera)
            budget, note = self._budget(goal.max_new_tokens)
        except RequestError as err:
            self._count("refused")
            goal_handle.abort()
            result.message = str(err)
            return result

        def feedback(text: str, num_tokens: int) -> None:
            goal_handle.publish_feedback(Describe.Feedback(partial_text=text, num_tokens=num_tokens))

        def cancel_requested() -> bool:
            return goal_handle.is_cancel_requested

        job = partial(self._jobs.describe, camera, prompt, budget, feedback, cancel_requested)
        outcome, problem = self._run(job, "describe", cancel_requested)
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            if outcome is not None:
                result.description = outcome[2]
                result.message = f"cancelled after {outcome[1].num_tokens} tokens"
            else:
                result.message = "cancelled before generation started"
            return result
        if problem:
            self._count("refused")
            goal_handle.abort()
            result.message = problem
            return result
        self._count("answered")
        goal_handle.succeed()
        result.success, result.message, result.description = True, note, outcome[2]
        return result

    # -- periodic descriptions ----------------------------------------------------------------------------
    def _start_describe_timer(self) -> None:
        if self._describe_timer is not None:
            self.destroy_timer(self._describe_timer)
            self._describe_timer = None
        rate = self.settings.describe_rate_hz
        if rate > 0:  # the node clock: sim time when use_sim_time
            tick = self._guarded("periodic description", self._describe_tick)
            self._describe_timer = self.create_timer(1.0 / rate, tick)

    def _describe_tick(self) -> None:
        worker, settings = self._worker, self.settings
        if worker is None:
            return
        budget = min(settings.max_new_tokens, settings.max_new_tokens_limit)
        for camera in list(self._cameras.values()):
            if camera.newest_seq > camera.described_seq:  # each frame once at most; none queued while one runs
                worker.run_in_background(f"describe {camera.name}", partial(
                    self._jobs.describe_periodically, camera, settings.prompt, budget))

    # -- outputs ------------------------------------------------------------------------------------------
    def _publish(self, role: str, msg) -> None:
        publisher = self._outputs.get(role)
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except Exception as err:  # deactivated meanwhile: the publisher is gone
            self.get_logger().debug(f"not published on {role}: {err}")

    def _report_frame_failure(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=WARN_EVERY_S)

    def _report_job_error(self, job, error: BaseException) -> None:
        if not isinstance(error, (NoFrame, JobCancelled, WorkerStopped)):
            self.get_logger().error(f"{job.name} failed: {type(error).__name__}: {error}",
                                    throttle_duration_sec=WARN_EVERY_S)

    def _publish_diagnostics(self) -> None:
        node_name = self.get_fully_qualified_name()
        worker, settings = self._worker, self.settings
        engine = worker.engine if worker is not None else None
        device = str(engine.device) if engine is not None else settings.device
        if worker is None:
            level = diagnostics.ERROR if self._model_error else diagnostics.WARN
            message = self._model_error or f"no model loaded (lifecycle state {self._lifecycle})"
        elif self._reload_error:
            level, message = diagnostics.WARN, self._reload_error
        elif self._loading:
            level, message = diagnostics.OK, f"loading {self._loading}; serving {engine.name} meanwhile"
        else:
            level, message = diagnostics.OK, f"serving {engine.name} on {device} ({self._lifecycle})"
        with self._requests_lock:
            requests = {f"requests_{k}": v for k, v in self._requests.items()}
        values = {
            "lifecycle_state": self._lifecycle, "model": engine.name if engine is not None else "",
            "model_dir": self._model_dir, "device": device, "dtype": settings.dtype,
            "queue_depth": worker.queue_depth() if worker is not None else 0, "queue_size": settings.queue_size,
            **({f"jobs_{k}": v for k, v in worker.stats.items()} if worker is not None else {}),
            **requests, **self._timings.means(), **diagnostics.memory(),
        }
        statuses = [diagnostics.status(f"{node_name}: model", level, message, device, values)]
        statuses += [diagnostics.camera_status(node_name, camera, device) for camera in list(self._cameras.values())]
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args=None) -> int:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # bad frames are reported, throttled, by us
    rclpy.init(args=args)
    try:
        node = CobraNode()
    except Exception as err:  # an invalid parameter value or type in the YAML / -p overrides
        print(f"[cobra] invalid parameters: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=node.settings.queue_size + 4)  # waiting requests hold a thread
    executor.add_node(node)
    status = 0
    try:
        if node.settings.autostart and not node.start():
            status = 1
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        node.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
