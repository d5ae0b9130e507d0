"""Overload soak: a fast camera, many concurrent clients and cancelled Describe goals against one
cobra node.

Everything stays on this host (DDS on localhost, a domain of its own) and stops by itself. It
checks:
  - the node never dies (it is still running at the end, and stops cleanly);
  - every call gets a reply (success or a clear error) within its deadline: none is left
  unanswered;
  - frames are counted exactly: received == rejected + dropped + taken + waiting, and
    published == received + lost (lost: DDS sequence gaps, frames that never reached the node);
  - memory stays flat: the slope of the node's RSS over the second half of the run (MB per minute);
and reports calls, replies, errors by kind, drops, and p50/p99 latency per call type.

With --compare-batching the same node runs the soak with batch_yes_no false, then true (set at
run time; --rounds repeats the pair, so slow drift on a shared machine hits both alike), and
prints throughput and p50/p99 latency of each setting and their ratios.

    python -m benchmarks.soak --minutes 5          # `make soak`: 60 Hz camera, 16 clients
    python -m benchmarks.soak --seconds 20 --clients 4 --camera-hz 30 --json soak.json
    python -m benchmarks.soak --seconds 60 --compare-batching --rounds 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cobra_ros.stats import percentiles

# a reply may take the node's request_timeout_s plus this before it counts as lost
REPLY_GRACE_S = 15.0


def node_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def error_kind(message: str) -> str:
    for kind in (
        "busy",
        "timed out",
        "no image",
        "cancelled",
        "unknown camera",
        "model error",
        "internal error",
    ):
        if kind in message:
            return kind
    return message.split(":")[0][:40]


class Soak:
    def __init__(self, client, args):
        self.client, self.args = client, args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = Counter()
        self.replies = Counter()
        self.errors = Counter()
        self.lost = []  # calls without a reply in time: must stay empty
        self.latency = defaultdict(list)
        # Describe goals that ended as cancelled (the rest finished before the cancel landed)
        self.cancelled = 0
        self.published = 0
        rng = np.random.default_rng(0)
        self.frames = [
            rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(8)
        ]

    def record(
        self, kind: str, started: float, reply=None, error: str = "", lost: str = ""
    ) -> None:
        with self.lock:
            self.calls[kind] += 1
            if lost:
                self.lost.append(f"{kind}: {lost}")
                return
            self.replies[kind] += 1
            outcome = f"error ({error_kind(error)})" if error else "answered"
            self.latency[f"{kind} {outcome}"].append((time.monotonic() - started) * 1000.0)
            if error:
                self.errors[f"{kind}: {error_kind(error)}"] += 1

    # -- load ---------------------------------------------------------------------------------
    def camera(self) -> None:
        from cobra_ros.ros.image_conversion import to_image_msg

        period, tick = 1.0 / self.args.camera_hz, time.monotonic()
        while not self.stop.is_set():
            now = time.time()
            header = self.client.header(int(now), int(now % 1 * 1e9))
            self.client.publish(
                to_image_msg(self.frames[self.published % len(self.frames)], header)
            )
            self.published += 1
            tick += period
            self.stop.wait(max(0.0, tick - time.monotonic()))

    def asker(self, seed: int) -> None:
        rng = random.Random(seed)
        questions = [
            "Is the red moon left of the blue cube?", "What is on the table?",
            "Is there a green star?", "Where is the yellow pentagon?",
        ]
        while not self.stop.is_set():
            kind = rng.choice(("ask", "ask_yes_no"))
            started = time.monotonic()
            try:
                if kind == "ask":
                    reply = self.client.ask(
                        rng.choice(questions),
                        max_new_tokens=rng.choice((4, 8, 16)),
                        timeout=self.args.deadline_s,
                    )
                else:
                    reply = self.client.yes_no(rng.choice(questions), timeout=self.args.deadline_s)
            except TimeoutError as err:
                self.record(kind, started, lost=str(err))
                continue
            self.record(kind, started, reply, "" if reply.success else reply.message)
            if not reply.success and "busy" in reply.message:
                self.stop.wait(self.args.busy_backoff_s)

    def canceller(self) -> None:
        from action_msgs.msg import GoalStatus

        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, result, _ = self.client.describe(max_new_tokens=64, cancel_after=1,
                                                         timeout=self.args.deadline_s)
            except (TimeoutError, RuntimeError) as err:
                self.record("describe_cancel", started, lost=f"{type(err).__name__}: {err}")
                continue
            ok = status in (GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_SUCCEEDED)
            self.record("describe_cancel", started, result, "" if ok else result.message)
            if not ok and "busy" in result.message:
                self.stop.wait(self.args.busy_backoff_s)
            if status == GoalStatus.STATUS_CANCELED:
                with self.lock:
                    self.cancelled += 1

    def run(self, pid: int) -> dict:
        threads = [threading.Thread(target=self.camera, name="camera")]
        threads += [
            threading.Thread(target=self.asker, args=(i,), name=f"client{i}")
            for i in range(self.args.clients)
        ]
        threads.append(threading.Thread(target=self.canceller, name="describe_cancel"))
        started = time.monotonic()
        before = self.client.camera_counts(newer_than=started - 5)
        for thread in threads:
            thread.start()
        rss = []
        while time.monotonic() - started < self.args.duration_s:
            rss.append((time.monotonic() - started, node_rss_mb(pid)))
            self.stop.wait(min(5.0, max(0.5, self.args.duration_s / 60)))
        self.stop.set()
        for thread in threads:
            thread.join(self.args.deadline_s + REPLY_GRACE_S)
        after = self.client.camera_counts(newer_than=time.monotonic())
        return {
            "rss": rss,
            "before": before,
            "after": after,
            "elapsed_s": time.monotonic() - started,
        }


def model_counts(client) -> dict:
    """The node's batched yes/no calls and the jobs they answered, from a fresh diagnostics
    report."""
    values = {kv.key: kv.value for kv in client.status(": model", time.monotonic()).values}
    return {k: int(values[f"jobs_{k}"]) for k in ("batches", "batched")}


def rss_slope_mb_per_min(samples, warmup_fraction: float = 0.5) -> float:
    """Least-squares slope of RSS after warm-up (allocators and caches grow early, then level)."""
    points = [(t, mb) for t, mb in samples if t >= samples[-1][0] * warmup_fraction]
    if len(points) < 3:
        return float("nan")
    t, mb = np.array(points).T
    return float(np.polyfit(t / 60.0, mb, 1)[0])


def summary(soak: Soak, figures: dict) -> dict:
    """One run's figures (everything but the node's fate)."""
    before, after = figures["before"], figures["after"]
    counted = {k: after[k] - before[k] for k in after}
    exact = after["received"] == sum(after[k] for k in ("rejected", "dropped", "taken", "waiting"))
    # frames sent before the node's first frame from this publisher are not gaps it could see
    unseen = soak.published - counted["received"] - counted["lost"]
    return {
        "duration_s": figures["elapsed_s"],
        "calls": dict(soak.calls),
        "replies": dict(soak.replies),
        "errors": dict(soak.errors),
        "describe_goals_cancelled": soak.cancelled,
        "unanswered": soak.lost,
        "frames_published": soak.published,
        "frames": counted,
        "frame_counts_exact": exact,
        "frames_published_but_not_counted": unseen,
        "rss_mb_start_end": [figures["rss"][0][1], figures["rss"][-1][1]],
        "rss_slope_mb_per_min": rss_slope_mb_per_min(figures["rss"]),
        "rss_trace_mb": [round(mb, 1) for _, mb in figures["rss"]],
        "latency_ms": {kind: percentiles(v) for kind, v in soak.latency.items()},
    }


def problems(report: dict, args) -> list[str]:
    found = []
    if report["unanswered"]:
        found.append(f"{len(report['unanswered'])} calls without a reply in time")
    if not report["frame_counts_exact"]:
        found.append(f"frame counts do not add up: {report['frames']}")
    slope = report["rss_slope_mb_per_min"]
    if not slope <= args.max_rss_slope:
        found.append(f"RSS grows {slope:.2f} MB/min after warm-up (limit {args.max_rss_slope})")
    return found


def compare_batching(runs: list) -> dict:
    """Throughput (answered calls per second) and p50/p99 latency (ms) per call kind, pooled over
    the runs of each batch_yes_no setting, and the ratios batched / one at a time."""
    figures = {}
    for setting in (False, True):
        mine = [(soak, figures_, batches) for batch, soak, figures_, batches in runs
                if batch == setting]
        seconds = sum(f["elapsed_s"] for _, f, _ in mine)
        row = {}
        for kind in ("ask_yes_no", "ask"):
            samples = [ms for soak, _, _ in mine for ms in soak.latency[f"{kind} answered"]]
            stats = percentiles(samples) if samples else {"p50": math.nan, "p99": math.nan}
            row[f"{kind} answered/s"] = len(samples) / seconds
            row[f"{kind} p50 ms"], row[f"{kind} p99 ms"] = stats["p50"], stats["p99"]
        answered = sum(len(soak.latency[f"{kind} answered"]) for soak, _, _ in mine
                       for kind in ("ask_yes_no", "ask"))
        row["all answered/s"] = answered / seconds
        calls, jobs = (sum(b[k] for _, _, b in mine) for k in ("batches", "batched"))
        row["yes/no jobs per batch"] = jobs / calls if calls else math.nan
        figures[f"batch_yes_no {str(setting).lower()}"] = row
    off, on = figures["batch_yes_no false"], figures["batch_yes_no true"]
    figures["ratio true / false"] = {
        k: on[k] / off[k] for k in off if k != "yes/no jobs per batch" and off[k]}
    return figures


def print_comparison(figures: dict) -> None:
    columns = list(figures)
    print("ratios: above 1 is better for answered/s, below 1 for latency")
    print(f"{'':<24}" + "".join(f"{c:>20}" for c in columns))
    for row in figures[columns[0]]:
        cells = [figures[c].get(row, math.nan) for c in columns]
        print(f"{row:<24}" + "".join(f"{v:>20.3f}" for v in cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the run (default 5 minutes)")
    length.add_argument("--seconds", type=float, help="length of the run, in seconds")
    parser.add_argument(
        "--model", help="model directory (default: the bundled model, else a random tiny one)"
    )
    parser.add_argument(
        "--camera-hz", type=float, default=60.0, help="frames published per second"
    )
    parser.add_argument("--clients", type=int, default=16,
                        help="threads calling Ask/AskYesNo as fast as they are answered")
    parser.add_argument("--width", type=int, default=640, help="frame width in pixels")
    parser.add_argument("--height", type=int, default=360, help="frame height in pixels")
    parser.add_argument("--request-timeout-s", type=float, default=10.0,
                        help="the node's request_timeout_s")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of the node")
    parser.add_argument(
        "--busy-backoff-s",
        type=float,
        default=0.2,
        help="a client told 'busy' waits this long before asking again (0: hammer)",
    )
    parser.add_argument(
        "--max-rss-slope", type=float, default=5.0, help="MB/min allowed after warm-up"
    )
    parser.add_argument(
        "--default-dds-transport",
        action="store_true",
        help="keep Fast DDS's default transport (large frames then get lost in UDP fragments)",
    )
    parser.add_argument("--compare-batching", action="store_true",
                        help="run with batch_yes_no false, then true, on the same node, and "
                             "print both settings' throughput and latency and their ratios")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare-batching: how many (false, true) pairs to run, "
                             "each run --seconds/--minutes long")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    args.duration_s = args.seconds if args.seconds else 60.0 * (args.minutes or 5.0)
    args.deadline_s = args.request_timeout_s + REPLY_GRACE_S

    from cobra_ros.paths import default_model_path
    from harness.ros import CobraClient, NodeProcess, isolate_ros_traffic

    model = args.model or (
        str(default_model_path()) if (default_model_path() / "config.json").is_file() else None
    )
    if model is None:
        from cobra_ros.cli.init import init_model_dir

        model = str(Path(tempfile.mkdtemp(prefix="cobra_soak_")) / "tiny")
        init_model_dir("tiny", model, seed=0)
    isolate_ros_traffic()
    if not args.default_dds_transport:
        from cobra_ros.ros.dds import use_large_frames

        use_large_frames()
    namespace = f"/soak_{os.getpid()}"
    node = NodeProcess(
        [
            "-p", f"model_path:={model}", "-p", "describe_rate_hz:=2.0",
            "-p", "max_new_tokens:=16", "-p", f"request_timeout_s:={args.request_timeout_s}",
            "-r", f"__ns:={namespace}",
        ],
        torch_threads=args.torch_threads,
    )
    client = CobraClient(namespace)
    print(
        f"soak: {args.duration_s:.0f} s, camera {args.camera_hz:g} Hz {args.width}x{args.height}, "
        f"{args.clients} clients + 1 cancelled Describe loop, model {model}, "
        f"node pid {node.process.pid}, "
        f"DDS profile {os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE') or 'default'}",
        flush=True,
    )
    settings = [False, True] * args.rounds if args.compare_batching else [None]
    runs = []  # (batch_yes_no or None: the node's default, Soak, its figures, batch counts)
    try:
        client.wait_ready(timeout=120)
        for batch in settings:
            if batch is not None:
                (result,) = client.set_parameters(batch_yes_no=batch)
                if not result.successful:
                    raise RuntimeError(f"batch_yes_no refused: {result.reason}")
            start = model_counts(client)
            soak = Soak(client, args)
            figures = soak.run(node.process.pid)
            end = model_counts(client)
            runs.append((batch, soak, figures, {k: end[k] - start[k] for k in end}))
        alive = node.running()
    finally:
        client.close()
        exit_status = node.stop()

    reports = [{**({} if batch is None else {"batch_yes_no": batch}), **summary(soak, figures),
                "yes_no_batches": counts["batches"], "yes_no_batched": counts["batched"]}
               for batch, soak, figures, counts in runs]
    report = {"node_alive_at_end": alive, "node_exit_status": exit_status}
    if args.compare_batching:
        report.update(runs=reports, comparison=compare_batching(runs))
    else:
        report.update(reports[0])
    print(json.dumps(report, indent=2))
    if args.compare_batching:
        print_comparison(report["comparison"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    failures = []
    if not alive or exit_status != 0:
        failures.append(f"node alive at end {alive}, exit status {exit_status}")
    failures += [problem for r in reports for problem in problems(r, args)]
    print("soak " + ("FAILED: " + "; ".join(failures) if failures else "passed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
