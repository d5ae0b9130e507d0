"""The model side of the node: the engine, the one thread it runs on, and the frames it encoded.

Only this module touches the engine, and only from jobs on the worker thread (worker.py). The node
asks for work with `ask`, `yes_no` and `describe_new_frame`; each job takes the camera's newest
frame if one came since the last job, encodes it once, and keeps that frame and its FrameState
until a newer one comes. Results are plain values (the frame and the engine's Answer or P(yes));
replies.py turns them into messages. One ModelJobs serves one loaded model: a model change is a
lifecycle cleanup (stop) and configure (load), so a kept FrameState never meets another model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cobra_ros.ros import diagnostics, params
from cobra_ros.ros.cameras import Camera, Frame
from cobra_ros.ros.worker import Job, JobCancelled, ModelWorker, WorkerStopped

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

    @classmethod
    def load(cls, settings: params.Settings, report: Callable[[str], None] = lambda m: None):
        engine, path = load_engine(settings)
        return cls(engine, path, settings.queue_size, report)

    # -- work, called from the node's threads; each returns the worker's Job (or raises WorkerBusy)
    def ask(self, camera: Camera, question: str, budget: int, on_text: TextCallback | None = None,
            cancel_requested: Callable[[], bool] = lambda: False, name: str = "ask") -> Job:
        return self._worker.submit(
            lambda job: self._ask(job, camera, question, budget, on_text, cancel_requested), name)

    def yes_no(self, camera: Camera, question: str, scoring: str = "plain") -> Job:
        return self._worker.submit(lambda job: self._yes_no(camera, question, scoring),
                                   "ask_yes_no")

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

    def _yes_no(self, camera, question, scoring) -> Judged:
        frame, state = self._latest(camera)
        started = time.perf_counter()
        probability = self._engine.yes_no(state, question, scoring=scoring)
        self.timings.add(prefill_ms=(time.perf_counter() - started) * 1000.0)
        return Judged(frame, probability)

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
        if use.frame is None:
            reason = problem or "no image received yet"
            raise NoFrame(f"camera {camera.name!r} (topic {camera.topic}): {reason}")
        return use.frame, use.state

    def _on_job_error(self, job: Job, error: BaseException) -> None:
        if not isinstance(error, (NoFrame, JobCancelled, WorkerStopped)):
            self._report(f"{job.name} failed: {type(error).__name__}: {error}")
