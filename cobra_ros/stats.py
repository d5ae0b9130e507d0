"""Summaries of timing samples: the one place p50/p99 are computed, for benchmarks and reports."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def percentiles(samples: Iterable[float]) -> dict:
    """{"p50", "p99", "mean", "n"} of `samples`, in their own unit (numpy's linear percentiles).

    Raises ValueError on no samples: a figure over nothing is not a figure.
    """
    values = np.asarray(list(samples), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples to summarise")
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "mean": float(values.mean()),
            "n": int(values.size)}
