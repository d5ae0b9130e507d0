"""What the node measures for /diagnostics: recent model timings and memory (replies.py builds
the messages)."""
from __future__ import annotations

import os
import threading
from collections import deque



class Timings:
    """Recent model timings (the last `window` answers), averaged for reporting."""

    KEYS = ("encode_ms", "prefill_ms", "decode_ms", "tokens_per_second", "locate_ms")

    def __init__(self, window: int = 50):
        self._lock = threading.Lock()
        self._recent = {key: deque(maxlen=window) for key in self.KEYS}

    def add(self, **values: float) -> None:
        with self._lock:
            for key, value in values.items():
                self._recent[key].append(float(value))

    def means(self) -> dict:
        with self._lock:
            return {key: (sum(v) / len(v) if v else 0.0) for key, v in self._recent.items()}


def memory() -> dict:
    """Resident set size of this process and, on CUDA, what torch holds on the GPU (MB)."""
    values = {"rss_mb": 0.0}
    try:
        with open("/proc/self/statm") as statm:
            values["rss_mb"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        # the peak, in KB on Linux
        values["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            values["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            values["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    except ImportError:
        pass
    return values

