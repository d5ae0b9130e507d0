"""One camera input: a one-slot mailbox (the latest frame wins) and the encoded state of the frame in use.

Subscription callbacks `offer` converted frames or `reject` bad ones; the model worker takes the newest
frame only when it needs one, so a fast camera never builds a backlog. The counts add up exactly:

    received == rejected + dropped + encoded + failed + (1 if a frame waits in the mailbox else 0)

`dropped` frames were replaced by a newer one before the model looked at them; `failed` frames raised
while being encoded (they are skipped and the last good frame stays in use). `lost` counts frames that
a publisher sent but that never reached the node (gaps in its DDS publication sequence numbers: a
best-effort transport losing them, or the subscription queue overflowing), when the middleware says.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Frame:
    rgb: np.ndarray  # HxWx3 uint8
    header: Any  # std_msgs/Header of the source image: acquisition stamp + optical frame_id
    seq: int = 0  # set by the camera: 1, 2, ... in arrival order


class NoFrame(LookupError):
    pass


MAX_PUBLISHERS = 32  # publishers whose sequence numbers are followed; the least recently heard is forgotten


class Camera:
    def __init__(self, name: str, topic: str, on_failure: Callable[[str], None] | None = None,
                 on_encoded: Callable[[float], None] | None = None):
        self.name, self.topic = name, topic  # the image_topics entry, and its resolved topic name
        self._on_failure, self._on_encoded = on_failure, on_encoded
        self._lock = threading.Lock()
        self._pending: Frame | None = None
        self._seq = 0
        self.described_seq = 0  # the newest frame the periodic description has covered
        self.received = self.rejected = self.dropped = self.encoded = self.failed = self.lost = 0
        self._last_sequence: OrderedDict[bytes, int] = OrderedDict()  # publisher gid -> last sequence number
        self.last_problem = ""  # reason of the latest rejected or failed frame
        self._problem_time: float | None = None
        # used by the model worker only
        self.frame: Frame | None = None
        self._state = None
        self._state_generation = -1

    # -- subscription side -------------------------------------------------------------------------------
    def note_sequence(self, publisher: bytes, sequence: int | None) -> None:
        """Count the frames this publisher sent since the last one received here, that never arrived."""
        if sequence is None:  # the middleware does not number its samples
            return
        with self._lock:
            last = self._last_sequence.pop(publisher, None)
            if last is not None and sequence > last + 1:
                self.lost += sequence - last - 1
            self._last_sequence[publisher] = sequence
            if len(self._last_sequence) > MAX_PUBLISHERS:
                self._last_sequence.popitem(last=False)

    def offer(self, frame: Frame) -> None:
        with self._lock:
            self.received += 1
            if self._pending is not None:
                self.dropped += 1
            self._seq += 1
            frame.seq = self._seq
            self._pending = frame

    def reject(self, reason: str) -> None:
        with self._lock:
            self.received += 1
            self.rejected += 1
            self.last_problem, self._problem_time = reason, time.monotonic()

    @property
    def newest_seq(self) -> int:
        """Sequence number of the newest good frame (waiting or in use); 0 before the first."""
        pending, current = self._pending, self.frame
        return pending.seq if pending is not None else (current.seq if current is not None else 0)

    def counts(self) -> dict:
        with self._lock:
            return {"received": self.received, "rejected": self.rejected, "dropped": self.dropped,
                    "encoded": self.encoded, "failed": self.failed, "waiting": int(self._pending is not None),
                    "lost": self.lost}

    def seconds_since_problem(self) -> float | None:
        return None if self._problem_time is None else time.monotonic() - self._problem_time

    # -- model worker side -------------------------------------------------------------------------------
    def _take(self) -> Frame | None:
        with self._lock:
            frame, self._pending = self._pending, None
            return frame

    def latest(self, engine, generation: int):
        """(Frame, FrameState) of the newest good frame, encoding it only if it is new or the model changed."""
        new, problem = self._take(), ""
        if new is not None:
            try:
                state = engine.encode(new.rgb)
            except Exception as err:
                stamp = new.header.stamp
                problem = f"frame {stamp.sec}.{stamp.nanosec:09d} skipped, encoding failed: {type(err).__name__}: {err}"
                with self._lock:
                    self.failed += 1
                    self.last_problem, self._problem_time = problem, time.monotonic()
                if self._on_failure is not None:
                    self._on_failure(f"{self.topic}: {problem}")
            else:
                with self._lock:
                    self.encoded += 1
                self.frame, self._state, self._state_generation = new, state, generation
                if self._on_encoded is not None:
                    self._on_encoded(state.encode_ms)
        if self.frame is None:
            raise NoFrame(f"camera {self.name!r} (topic {self.topic}): " + (problem or "no image received yet"))
        if self._state_generation != generation:  # a new model: the cached state belongs to the old one
            self._state, self._state_generation = engine.encode(self.frame.rgb), generation
            if self._on_encoded is not None:
                self._on_encoded(self._state.encode_ms)
        return self.frame, self._state
