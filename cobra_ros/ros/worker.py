"""One thread owns the model; every piece of model work runs there, one job (or batch) at a
time.

Client jobs (service calls, action goals) wait in a FIFO of at most `queue_size`: when it is full a
new job is refused at once with WorkerBusy instead of the queue growing. Background jobs (periodic
descriptions) are coalesced by key, so there is at most one per key, and run only when no client
job waits. A job that fails is reported and the worker goes on with the next one.

Client jobs that carry a `Batch` with equal keys run together: when the head of the FIFO has one,
every job waiting with the same key leaves the queue with it and the group runs as one call of the
head's `Batch.run`. The head always goes first and jobs only ever move forward, to join it, so a
job waits for at most the turns of the jobs ahead of it (any turn may have grown into a batch).
If the batched call fails, each job of the group runs alone, so a failure stays with its own job.

The worker knows nothing of the model: a job is a function of the job itself, `fn(job)`, and the
jobs module (jobs.py) closes over the engine. One worker serves one loaded model; a new model gets
a new worker (the node's configure), so no job ever sees two engines.
"""
from __future__ import annotations

import gc
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable

JobFunction = Callable[["Job"], Any]  # job -> result, run on the worker thread


@dataclass(frozen=True)
class Batch:
    """How a job may run with others: waiting jobs with an equal `key` run as one call,
    run([item of each job, in queue order]) -> one result per item."""

    key: Hashable
    item: Any
    run: Callable[[list], list]


class WorkerBusy(RuntimeError):
    pass


class WorkerStopped(RuntimeError):
    pass


class JobCancelled(RuntimeError):
    pass


class Job:
    """A unit of model work and its outcome; `cancelled` is what a generation loop polls."""

    def __init__(self, fn: JobFunction, name: str, batch: Batch | None = None):
        self.fn, self.name, self.batch = fn, name, batch
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._worker: ModelWorker | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Drop the job if it is still queued; ask it to stop early if it is running."""
        self._cancel.set()
        if self._worker is not None:
            self._worker._unqueue(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._done.set()


class ModelWorker:
    def __init__(self, queue_size: int,
                 on_error: Callable[[Job, BaseException], None] | None = None,
                 name: str = "cobra_model_worker"):
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._on_error = on_error
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._background: OrderedDict[str, Job] = OrderedDict()
        self._running: list[Job] = []
        self._stopping = False
        # batches: batched calls made; batched: the jobs they answered
        self._stats = {"done": 0, "failed": 0, "cancelled": 0, "busy": 0, "batches": 0,
                       "batched": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: JobFunction, name: str, batch: Batch | None = None) -> Job:
        """Queue `fn(job)`; with `batch`, the job may run instead in one call with other waiting
        jobs of the same batch key."""
        job = Job(fn, name, batch)
        with self._cond:
            if self._stopping:
                raise WorkerStopped("the model is being unloaded")
            if len(self._queue) >= self.queue_size:
                self._stats["busy"] += 1
                raise WorkerBusy(f"busy: {len(self._queue)} requests are already queued "
                                 f"(queue_size={self.queue_size}); try again later")
            job._worker = self
            self._queue.append(job)
            self._cond.notify()
        return job

    def run_in_background(self, key: str, fn: JobFunction) -> bool:
        """Queue background work unless work under the same key is queued or running; True if
        queued."""
        with self._cond:
            if self._stopping or self.has_background(key):
                return False
            job = Job(fn, key)
            job._worker = self
            self._background[key] = job
            self._cond.notify()
            return True

    def has_background(self, key: str) -> bool:
        return key in self._background or any(job.name == key for job in self._running)

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict:
        """Jobs done, failed, cancelled and refused as busy, and the batched calls and the jobs
        they answered: one consistent snapshot."""
        with self._cond:
            return dict(self._stats)

    def stop(self, reason: str = "the model is being unloaded", timeout: float = 30.0) -> None:
        """Fail every waiting job with `reason`, cancel the running one, and wait for it to end."""
        with self._cond:
            self._stopping = True
            waiting = list(self._queue) + list(self._background.values())
            self._queue.clear()
            self._background.clear()
            for job in self._running:
                job._cancel.set()
            self._cond.notify()
        for job in waiting:
            job._finish(error=WorkerStopped(reason))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        _free_memory()

    def _unqueue(self, job: Job) -> None:
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
            elif self._background.get(job.name) is job:
                del self._background[job.name]
            else:
                return
            self._stats["cancelled"] += 1
        job._finish(error=JobCancelled(f"{job.name} cancelled before it started"))

    def _next_jobs(self) -> list[Job]:
        """The head of the queue and every job waiting with its batch key (else the oldest
        background job); empty when stopping."""
        with self._cond:
            while not (self._stopping or self._queue or self._background):
                self._cond.wait()
            if self._stopping:
                return []
            if self._queue:
                head = self._queue.popleft()
                jobs = [head]
                if head.batch is not None:
                    jobs += [job for job in self._queue
                             if job.batch is not None and job.batch.key == head.batch.key]
                    for job in jobs[1:]:
                        self._queue.remove(job)
            else:
                _, head = self._background.popitem(last=False)
                jobs = [head]
            self._running = jobs
        return jobs

    def _run(self) -> None:
        while jobs := self._next_jobs():
            outcomes = self._run_batch(jobs) if len(jobs) > 1 else None
            if outcomes is None:  # one job, or a batch that failed: each job on its own
                outcomes = [_outcome(job.fn, job) for job in jobs]
            with self._cond:
                self._running = []
                for _, error in outcomes:
                    self._stats["failed" if error is not None else "done"] += 1
            for job, (result, error) in zip(jobs, outcomes):
                if error is not None and self._on_error is not None:
                    try:
                        self._on_error(job, error)
                    except Exception:
                        pass
                job._finish(result, error)

    def _run_batch(self, jobs: list[Job]) -> list | None:
        """[(result, None)] per job from one batched call, or None if that call failed."""
        results, error = _outcome(jobs[0].batch.run, [job.batch.item for job in jobs])
        if error is not None or len(results) != len(jobs):
            return None
        with self._cond:
            self._stats["batches"] += 1
            self._stats["batched"] += len(jobs)
        return [(result, None) for result in results]


def _outcome(fn: Callable, arg) -> tuple[Any, BaseException | None]:
    """(fn(arg), None), or (None, the exception): one failing job must not take the worker
    down."""
    try:
        return fn(arg), None
    except Exception as err:
        _recover_from(err)
        return None, err


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _recover_from(err: BaseException) -> None:
    """After a CUDA out-of-memory error, give the cached blocks back so the next job can run."""
    if "out of memory" in str(err).lower():
        _free_memory()
