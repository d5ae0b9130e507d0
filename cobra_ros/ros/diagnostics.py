"""What the node reports on /diagnostics: model timings, memory, and per-camera frame counts."""
from __future__ import annotations

import os
import threading
from collections import deque

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Timings:
    """Recent model timings (the last `window` answers), averaged for reporting."""

    KEYS = ("encode_ms", "prefill_ms", "decode_ms", "tokens_per_second")

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

        values["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, KB on Linux
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            values["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            values["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    except ImportError:
        pass
    return values


def status(name: str, level: int, message: str, hardware_id: str, values: dict) -> DiagnosticStatus:
    def text(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])


def camera_status(node_name: str, camera, hardware_id: str, warn_for_s: float = 10.0) -> DiagnosticStatus:
    """WARN while frames are being rejected or failing (one in the last `warn_for_s` seconds), else OK."""
    counts = camera.counts()
    since = camera.seconds_since_problem()
    if since is not None and since < warn_for_s:
        level = WARN
        message = (f"{counts['rejected']} rejected, {counts['failed']} failed frames so far; latest "
                   f"{since:.1f} s ago: {camera.last_problem}")
    else:
        level, message = OK, "receiving frames" if counts["received"] else "no frames yet"
    values = {"topic": camera.topic, **counts, "last_problem": camera.last_problem}
    if camera.frame is not None:
        stamp = camera.frame.header.stamp
        values["frame_in_use_stamp"] = f"{stamp.sec}.{stamp.nanosec:09d}"
    return status(f"{node_name}: camera {camera.name}", level, message, hardware_id, values)
