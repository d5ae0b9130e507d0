"""The one p50/p99 helper, against values worked out by hand."""
import pytest

from cobra_ros.stats import percentiles


def test_percentiles_interpolate_between_samples():
    # 1..101: the 50th percentile is the middle sample, the 99th the 100th sample
    assert percentiles(range(1, 102)) == {"p50": 51.0, "p99": 100.0, "mean": 51.0, "n": 101}
    # two samples: linear interpolation, 99% of the way from 10 to 20
    want = {"p50": 15.0, "p99": 19.9, "mean": 15.0, "n": 2}
    assert percentiles([20.0, 10.0]) == pytest.approx(want)


def test_one_sample_and_no_sample():
    assert percentiles([3.5]) == {"p50": 3.5, "p99": 3.5, "mean": 3.5, "n": 1}
    with pytest.raises(ValueError, match="no samples"):
        percentiles([])
