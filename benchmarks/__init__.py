"""Measurements against baselines of the same run (`make soak`, `make latency`); not installed."""
