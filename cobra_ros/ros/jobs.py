"""The model side of the node: the engine, the one thread it runs on, and the frames it encoded.

Only this module touches the engine, and only from jobs on the worker thread (worker.py). The node
asks for work with `ask`, `yes_no`, `locate` and `describe_new_frame`; each job takes the camera's
newest frame if one came since the last job, encodes it once, and keeps that frame and its
FrameState until a newer one comes. Yes/no questions waiting for the same camera (and scoring)
may be answered together: the worker hands them over as one batch, which takes the camera's newest
frame once and prefills every question on its state in one `yes_no_batch` call. Results are
plain values (the frame and the engine's Answer, P(yes) or box); replies.py turns them into
messages. One ModelJobs serves one loaded model: a model change is a lifecycle cleanup (stop) and
configure (load), so a kept FrameState never meets another model.

Standing questions (`set_watch`) are answered on every frame of their camera that is encoded,
by whichever job encodes it: the watch's own background job (`watch_new_frame`, queued by the
node for each new frame) or a request that came first. So there is one result per encoded frame.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cobra_ros.model.grounding import GroundingError, TableCamera
from cobra_ros.ros import diagnostics, params
from cobra_ros.ros.cameras import Camera, Frame
from cobra_ros.ros.worker import Batch, Job, JobCancelled, ModelWorker, WorkerStopped

TextCallback = Callable[[Frame, str, int], None]  # (frame, text so far, tokens so far)


class NoFrame(LookupError):
    """The camera has no frame the model can use yet."""


@dataclass(frozen=True)
class Asked:
    frame: Frame
    encode_ms: float  # what encoding this frame took (once, when it was new)
    answer: Any  # cobra_ros.model.engine.Answer


@dataclass(frozen=True)
class Judged:
    frame: Frame
    probability: float  # P(yes)


@dataclass(frozen=True)
class Found:
    frame: Frame
    located: Any  # cobra_ros.model.engine.Located, or None when the answer did not parse
    point: Any = None  # (x, y, z) in the board frame, or None without a calibrated camera
    problem: str = ""  # the GroundingError, or why a calibrated camera gave no point
    text: str = ""  # what the model answered


@dataclass(frozen=True)
class Watch:
    """What to answer on every encoded frame of one camera, and where the result goes."""

    camera: str  # the Camera's name
    questions: tuple
    expressions: tuple
    scoring: str
    on_result: Callable[["Watched"], None]
    calibration: Callable[[], TableCamera | None] = lambda: None


@dataclass(frozen=True)
class Watched:
    frame: Frame
    questions: tuple
    probabilities: list
    expressions: tuple
    located: list  # a Located per expression, or None where the answer did not parse
    points: list  # (x, y, z) per expression, or None
    errors: list  # "" per expression, or why it has no box
    encode_ms: float
    questions_ms: float
    locate_ms: float

    @property
    def total_ms(self) -> float:
        return self.encode_ms + self.questions_ms + self.locate_ms


def table_point(calibration: TableCamera | None, box) -> tuple:
    """(point or None, why not) for a parsed box on a calibrated camera."""
    if calibration is None:
        return None, ""
    try:
        return tuple(float(v) for v in calibration.table_point(box)), ""
    except ValueError as err:
        return None, str(err)


class _InUse:
    """A camera's frame in use and its FrameState, with what happened to the frames taken."""

    def __init__(self):
        self.frame: Frame | None = None
        self.state = None
        self.encoded = self.failed = 0
        self.last_problem, self.problem_time = "", None
        self.described_seq = 0  # the newest frame a periodic description has covered


def load_engine(settings: params.Settings):
    """(engine, model directory) for the model the parameters name; ValueError says why not."""
    problem = (params.device_problem(settings.device)
               or params.model_dir_problem(settings.model_path))
    if problem:
        raise ValueError(problem)
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    import cobra_ros

    path = params.resolve_model_path(settings.model_path)
    return cobra_ros.load(path, device=settings.device, dtype=settings.dtype), path


class ModelJobs:
    def __init__(self, engine, model_dir: Path | str, queue_size: int,
                 report: Callable[[str], None] = lambda message: None):
        """`report` gets what went wrong in a job or with a frame (the node logs it, throttled)."""
        self._engine = engine
        self.model, self.device, self.model_dir = engine.name, str(engine.device), str(model_dir)
        self.timings = diagnostics.Timings()
        self._report = report
        self._lock = threading.Lock()  # _in_use: written by the worker, read by diagnostics
        self._in_use: dict[str, _InUse] = {}
        self._worker = ModelWorker(queue_size, on_error=self._on_job_error)
        self._watch: Watch | None = None
        self._watch_lock = threading.Lock()
        self._watch_pending = self._watch_running = False

    @classmethod
    def load(cls, settings: params.Settings, report: Callable[[str], None] = lambda m: None):
        engine, path = load_engine(settings)
        return cls(engine, path, settings.queue_size, report)

    # -- work, called from the node's threads; each returns the worker's Job (or raises WorkerBusy)
    def ask(self, camera: Camera, question: str, budget: int, on_text: TextCallback | None = None,
            cancel_requested: Callable[[], bool] = lambda: False, name: str = "ask") -> Job:
        return self._worker.submit(
            lambda job: self._ask(job, camera, question, budget, on_text, cancel_requested), name)

    def yes_no(self, camera: Camera, question: str, scoring: str = "plain",
               batch: bool = True) -> Job:
        """P(yes) on the camera's newest frame; with `batch`, in one call with the other batched
        yes/no questions waiting for the same camera and scoring."""
        together = Batch(("ask_yes_no", camera, scoring), question,
                         lambda questions: self._yes_no(camera, questions, scoring))
        return self._worker.submit(lambda job: self._yes_no(camera, [question], scoring)[0],
                                   "ask_yes_no", together if batch else None)

    def locate(self, camera: Camera, expression: str,
               calibration: TableCamera | None = None) -> Job:
        return self._worker.submit(lambda job: self._locate(camera, expression, calibration),
                                   "locate")

    def set_watch(self, watch: Watch | None) -> None:
        """Standing questions from now on (None or empty lists: none)."""
        if watch is not None and not (watch.questions or watch.expressions):
            watch = None
        with self._watch_lock:
            self._watch = watch

    def watch_new_frame(self, camera: Camera) -> None:
        """A frame came for `camera`: encode it and answer the standing questions in the
        background. One background job drains new frames while they keep coming; the pending
        flag, under the same lock as `running`, means no frame is left waiting for the next."""
        with self._watch_lock:
            watch = self._watch
            if watch is None or watch.camera != camera.name:
                return
            self._watch_pending = True
            if self._watch_running:
                return
            self._watch_running = True

        def drain(job):
            try:
                while True:
                    with self._watch_lock:
                        if not self._watch_pending or job.cancelled:
                            self._watch_running = False
                            return
                        self._watch_pending = False
                    self._latest(camera)  # answers the watch when the frame is new
            except BaseException:
                with self._watch_lock:
                    self._watch_running = False
                raise

        if not self._worker.run_in_background(f"watch {camera.name}", drain):
            with self._watch_lock:
                self._watch_running = False

    def describe_new_frame(self, camera: Camera, prompt: str, budget: int,
                           on_text: TextCallback | None, on_done: Callable[[Asked], None]) -> bool:
        """Describe the camera's newest frame in the background, unless it was described already or
        a description of this camera is queued or running; True if one was queued."""
        if camera.newest_seq <= self._uses(camera).described_seq:
            return False

        def describe(job):
            covered = camera.newest_seq
            try:
                asked = self._ask(job, camera, prompt, budget, on_text, lambda: False)
                covered = max(covered, asked.frame.seq)
            finally:  # a frame that fails is not retried
                use = self._uses(camera)
                use.described_seq = max(use.described_seq, covered)
            on_done(asked)

        return self._worker.run_in_background(f"describe {camera.name}", describe)

    def stop(self, reason: str) -> None:
        """Answer every waiting job with `reason`, end the running one, and free the model."""
        self._worker.stop(reason)
        self._engine = None

    # -- what diagnostics report
    def queue_depth(self) -> int:
        return self._worker.queue_depth()

    def stats(self) -> dict:
        return self._worker.stats()

    def frames(self, camera: Camera) -> dict:
        """A camera's encoded/failed counts, latest encoding problem and frame in use."""
        with self._lock:
            use = self._in_use.get(camera.name) or _InUse()
            return {"encoded": use.encoded, "failed": use.failed, "last_problem": use.last_problem,
                    "problem_time": use.problem_time, "frame": use.frame}

    # -- on the worker thread
    def _ask(self, job: Job, camera, question, budget, on_text, cancel_requested) -> Asked:
        frame, state = self._latest(camera)
        pieces = []

        def on_token(piece: str, num_tokens: int) -> None:
            pieces.append(piece)
            on_text(frame, "".join(pieces), num_tokens)

        answer = self._engine.ask(state, question, budget,
                                  on_token=on_token if on_text is not None else None,
                                  cancel=lambda: job.cancelled or cancel_requested())
        self.timings.add(prefill_ms=answer.prefill_ms, decode_ms=answer.decode_ms,
                         tokens_per_second=answer.tokens_per_second)
        return Asked(frame, state.encode_ms, answer)

    def _yes_no(self, camera, questions: list, scoring) -> list[Judged]:
        """Every question on one frame, the camera's newest, in one batched prefill."""
        frame, state = self._latest(camera)
        started = time.perf_counter()
        probabilities = self._engine.yes_no_batch([state] * len(questions), questions,
                                                  scoring=scoring)
        self.timings.add(prefill_ms=(time.perf_counter() - started) * 1000.0)
        return [Judged(frame, p) for p in probabilities]

    def _locate(self, camera, expression, calibration) -> Found:
        frame, state = self._latest(camera)
        started = time.perf_counter()
        try:
            located = self._engine.locate(state, expression)
        except GroundingError as err:  # the model's answer is not a box: the reply says so
            return Found(frame, None, problem=str(err), text=err.text)
        finally:
            self.timings.add(locate_ms=(time.perf_counter() - started) * 1000.0)
        point, problem = table_point(calibration, located.box)
        return Found(frame, located, point, problem, located.text)

    def _answer_watch(self, watch: Watch, frame: Frame, state) -> None:
        """The standing questions on a newly encoded frame: every yes/no question in one batched
        call on the kept state, then every expression located in one batched decode."""
        started = time.perf_counter()
        probabilities = []
        if watch.questions:
            probabilities = self._engine.yes_no_batch([state] * len(watch.questions),
                                                      list(watch.questions), scoring=watch.scoring)
        questions_ms = (time.perf_counter() - started) * 1000.0
        started = time.perf_counter()
        located, points, errors = [], [], []
        calibration = watch.calibration() if watch.expressions else None
        expressions = list(watch.expressions)
        for found in self._engine.locate_batch([state] * len(expressions), expressions):
            if isinstance(found, GroundingError):
                located.append(None), points.append(None), errors.append(str(found))
                continue
            point, problem = table_point(calibration, found.box)
            located.append(found), points.append(point), errors.append(problem)
        locate_ms = (time.perf_counter() - started) * 1000.0
        watch.on_result(Watched(frame, watch.questions, probabilities, watch.expressions, located,
                                points, errors, state.encode_ms, questions_ms, locate_ms))

    def _uses(self, camera: Camera) -> _InUse:
        with self._lock:
            return self._in_use.setdefault(camera.name, _InUse())

    def _latest(self, camera: Camera):
        """(frame, FrameState) of the camera's newest good frame, encoding it only if it is new."""
        use, new, problem = self._uses(camera), camera.take(), ""
        if new is not None:
            try:
                state = self._engine.encode(new.rgb)
            except Exception as err:  # a frame the model cannot take: skip it, keep the last one
                stamp = new.header.stamp
                problem = (f"frame {stamp.sec}.{stamp.nanosec:09d} skipped, encoding failed: "
                           f"{type(err).__name__}: {err}")
                with self._lock:
                    use.failed += 1
                    use.last_problem, use.problem_time = problem, time.monotonic()
                self._report(f"{camera.topic}: {problem}")
            else:
                with self._lock:
                    use.encoded += 1
                    use.frame, use.state = new, state
                self.timings.add(encode_ms=state.encode_ms)
                with self._watch_lock:
                    watch = self._watch
                if watch is not None and watch.camera == camera.name:
                    try:
                        self._answer_watch(watch, new, state)
                    except Exception as err:  # the request that encoded the frame goes on
                        self._report(f"{camera.topic}: standing questions failed: "
                                     f"{type(err).__name__}: {err}")
        if use.frame is None:
            reason = problem or "no image received yet"
            raise NoFrame(f"camera {camera.name!r} (topic {camera.topic}): {reason}")
        return use.frame, use.state

    def _on_job_error(self, job: Job, error: BaseException) -> None:
        if not isinstance(error, (NoFrame, JobCancelled, WorkerStopped)):
            self._report(f"{job.name} failed: {type(error).__name__}: {error}")
