"""Shared fixtures: small Cobra models built through the same code and file layout as the full
one."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from cobra_ros.cli.init import init_model_dir

    out = tmp_path_factory.mktemp("models") / "tiny"
    init_model_dir("tiny", str(out), seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    import cobra_ros

    return cobra_ros.load(tiny_model_dir)


@pytest.fixture
def rgb():
    def make(seed=0, h=96, w=128):
        return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

    return make


@pytest.fixture(scope="module")
def ros_env():
    """DDS of this test module's nodes stays on this host, in a domain of this process's own."""
    from harness.ros import isolate_ros_traffic

    saved = dict(os.environ)
    isolate_ros_traffic()
    yield
    os.environ.clear()
    os.environ.update(saved)
