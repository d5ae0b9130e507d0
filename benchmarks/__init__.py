"""Measurements that print ratios against baselines of the same run (`make soak`, `make
latency`)."""
