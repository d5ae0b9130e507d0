SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -q --progress-bar off
DEPS_STAMP := $(VENV)/.cobra-deps.stamp

# DDS traffic of tests/demos stays on this machine, and a random domain keeps parallel runs
# (CI, other developers on the same host) from seeing each other's topics.
# One torch thread per process: the node, the replay node and the client share 2 cores, and OpenMP
# threads spinning on a busy core slowed training there 4x.
RUN_ENV = ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$((RANDOM % 100 + 101))} \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

.PHONY: venv test demo loop soak latency watch-bench clean distclean

venv: $(DEPS_STAMP)
	tools/build_interfaces.sh $(VENV)

# torch/torchvision first and pinned: they are the only pair that imports here (timm imports
# torchvision), and nothing installed later may pull another torch.
$(DEPS_STAMP): requirements.txt constraints.txt setup.py setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP_INSTALL) -c constraints.txt -r requirements.txt
	$(PIP_INSTALL) --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $@

test: venv
	$(VENV)/bin/ruff check .
	$(RUN_ENV) $(PY) -m pytest -q test

# The harnesses live outside the installed package; -m runs them from the repository root.
demo: venv
	$(RUN_ENV) $(PY) -m examples.demo

# Block-to-block pushing in the PyBullet world, closed on the node's locate / watch answers,
# beside the same pusher fed the simulator's ground truth.
loop: venv
	$(RUN_ENV) $(PY) -m examples.closed_loop

soak: venv
	$(RUN_ENV) $(PY) -m benchmarks.soak

latency: venv
	$(RUN_ENV) $(PY) -m benchmarks.ros_latency

watch-bench: venv
	$(RUN_ENV) $(PY) -m benchmarks.watch

clean:
	rm -rf build install log .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
