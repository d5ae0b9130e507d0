"""One camera input: a one-slot mailbox where the latest frame wins.

Subscription callbacks `offer` converted frames or `reject` bad ones; the model side `take`s the
newest frame only when it needs one, so a fast camera never builds a backlog. Every count changes
under one lock and `counts()` reads them under it, so a snapshot always adds up exactly:

    received == rejected + dropped + taken + waiting

`dropped` frames were replaced by a newer one before the model took them. `lost` counts frames
that a publisher sent but that never reached the node (gaps in its DDS publication sequence
numbers: a best-effort transport losing them, or the subscription queue overflowing), when the
middleware says.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PUBLISHERS = 32  # publishers whose sequence numbers are followed; the least recent goes


@dataclass
class Frame:
    rgb: np.ndarray  # HxWx3 uint8
    header: Any  # std_msgs/Header of the source image: acquisition stamp + optical frame_id
    seq: int = 0  # set by the camera: 1, 2, ... in arrival order


class Camera:
    def __init__(self, name: str, topic: str):
        self.name, self.topic = name, topic  # the image_topics entry, and its resolved topic name
        self._lock = threading.Lock()
        self._waiting: Frame | None = None
        self._newest_seq = 0
        self._counts = dict.fromkeys(("received", "rejected", "dropped", "taken", "lost"), 0)
        self._last_sequence: OrderedDict[bytes, int] = OrderedDict()  # publisher gid -> number
        self.last_problem = ""  # reason of the latest rejected frame
        self._problem_time: float | None = None

    def note_sequence(self, publisher: bytes, sequence: int | None) -> None:
        """Count the frames this publisher sent since its last one received, that never came."""
        if sequence is None:  # the middleware does not number its samples
            return
        with self._lock:
            last = self._last_sequence.pop(publisher, None)
            if last is not None and sequence > last + 1:
                self._counts["lost"] += sequence - last - 1
            self._last_sequence[publisher] = sequence
            if len(self._last_sequence) > MAX_PUBLISHERS:
                self._last_sequence.popitem(last=False)

    def offer(self, frame: Frame) -> None:
        with self._lock:
            self._counts["received"] += 1
            if self._waiting is not None:
                self._counts["dropped"] += 1
            self._newest_seq += 1
            frame.seq = self._newest_seq
            self._waiting = frame

    def reject(self, reason: str) -> None:
        with self._lock:
            self._counts["received"] += 1
            self._counts["rejected"] += 1
            self.last_problem, self._problem_time = reason, time.monotonic()

    def take(self) -> Frame | None:
        """The newest good frame if one arrived since the last take, else None."""
        with self._lock:
            frame, self._waiting = self._waiting, None
            if frame is not None:
                self._counts["taken"] += 1
            return frame

    @property
    def newest_seq(self) -> int:
        """Sequence number of the newest good frame received; 0 before the first."""
        with self._lock:
            return self._newest_seq

    def counts(self) -> dict:
        with self._lock:
            return {**self._counts, "waiting": int(self._waiting is not None)}

    def seconds_since_problem(self) -> float | None:
        return None if self._problem_time is None else time.monotonic() - self._problem_time
