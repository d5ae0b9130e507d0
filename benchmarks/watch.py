"""What standing questions cost per frame, through real rclpy (`make watch-bench`).

The cobra node runs in its own process with N standing yes/no questions (~/watch); this client
sends it the PyBullet world's frames one at a time and reads each frame's WatchResult: the
node's own encode_ms, questions_ms (the N questions, one batched call on the kept state) and
total_ms. For N = 1, 4, 16 it prints the time per frame beside encode + N x (one question), both
measured in this run (one question = questions_ms at N = 1), and then a long run of N = 4
questions: the first quarter's p50 against the last quarter's (flat: within 20%).

    python -m benchmarks.watch
    python -m benchmarks.watch --model DIR --frames 40 --long 400 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

from cobra_ros.langtable.world import BLOCK_4, block_text
from cobra_ros.paths import default_model_path
from cobra_ros.stats import percentiles
from harness.ros import NodeProcess, RosClient, isolate_ros_traffic

NAMESPACE = "/watch_bench"
RELATIONS = ("left of", "right of", "above", "below", "next to")


def questions(n: int) -> list[str]:
    """n distinct yes/no questions about the BLOCK_4 blocks."""
    out = [f"Is the {block_text(a)} {r} the {block_text(b)}?" for r in RELATIONS
           for a in BLOCK_4 for b in BLOCK_4 if a != b]
    return out[:n]


def world_frames(count: int, size=(320, 180)) -> list:
    """Frames of the PyBullet world: a few layouts, each pushed a little every frame."""
    import numpy as np

    from cobra_ros.langtable.sim import LangTableSim

    rng, frames = np.random.default_rng(0), []
    with LangTableSim(size=size) as sim:
        while len(frames) < count:
            frames.append(sim.reset(seed=len(frames)).rgb)
            for _ in range(min(9, count - len(frames))):
                frames.append(sim.step(rng.uniform(-0.03, 0.03, 2)).rgb)
    return frames


class WatchClient(RosClient):
    def __init__(self):
        from cobra_ros.msg import WatchResult
        from cobra_ros.srv import Watch

        super().__init__("watch_bench")
        self.lock, self.results = threading.Lock(), {}
        self.watch = self.node.create_client(Watch, f"{NAMESPACE}/cobra/watch")
        self.node.create_subscription(WatchResult, f"{NAMESPACE}/cobra/watch/result",
                                      self._keep, 50)
        from sensor_msgs.msg import Image

        self.image = self.node.create_publisher(Image, f"{NAMESPACE}/image", 10)
        self.Watch, self.stamps = Watch, iter(range(1, 1 << 30))

    def _keep(self, msg):
        with self.lock:
            self.results[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def set_questions(self, qs: list[str]) -> None:
        reply = self.call(self.watch, self.Watch.Request(questions=qs), timeout=60.0)
        if not reply.success:
            raise RuntimeError(reply.message)

    def answer(self, rgb, timeout: float = 60.0):
        """Send the frame (again, under a new stamp, if it was lost) until its WatchResult."""
        from std_msgs.msg import Header

        from cobra_ros.ros.image_conversion import to_image_msg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            header = Header(frame_id="camera_optical_frame")
            header.stamp.sec = next(self.stamps)
            self.image.publish(to_image_msg(rgb, header))
            key = (header.stamp.sec, 0)
            for _ in range(200):  # 2 s for this try
                with self.lock:
                    if key in self.results:
                        return self.results.pop(key)
                time.sleep(0.01)
        raise TimeoutError(f"no WatchResult within {timeout} s")


def measure(client, frames, n: int, warmup: int) -> list:
    client.set_questions(questions(n))
    for rgb in frames[:warmup]:
        client.answer(rgb)
    return [client.answer(rgb) for rgb in frames[warmup:]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_path()),
                        help="Cobra model directory (default: the bundled one)")
    parser.add_argument("--device", default="cpu", help="torch device of the node")
    parser.add_argument("--frames", type=int, default=30, help="frames measured per N")
    parser.add_argument("--warmup", type=int, default=5, help="frames not measured per N")
    parser.add_argument("--long", type=int, default=200, help="frames of the long run")
    parser.add_argument("--sizes", default="1,4,16", help="numbers of questions, comma-separated")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    isolate_ros_traffic()
    sizes = [int(v) for v in args.sizes.split(",")]
    frames = world_frames(max(args.frames + args.warmup, args.long))
    node = NodeProcess(["-p", f"model_path:={args.model}", "-p", f"device:={args.device}",
                        "-p", "describe_rate_hz:=0.0",
                        "-r", f"__ns:={NAMESPACE}"])
    client = WatchClient()
    try:
        deadline = time.monotonic() + 120.0
        while not client.watch.wait_for_service(timeout_sec=1.0):
            if not node.running() or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up:\n{node.log()[-2000:]}")
        rows = {}
        for n in tqdm(sizes, desc="questions per frame"):
            measured = measure(client, frames[:args.frames + args.warmup], n, args.warmup)
            rows[n] = {key: percentiles(getattr(r, key) for r in measured)["p50"]
                       for key in ("encode_ms", "questions_ms", "total_ms")}
        long_run = measure(client, frames[:args.long], 4, 0)
    finally:
        client.close()
        node.stop()
    one = rows[sizes[0]]["questions_ms"] / sizes[0]
    print(f"p50 over {args.frames} frames per N, {args.model} on {args.device}; one question = "
          f"{one:.2f} ms (N = {sizes[0]})")
    print(f"{'N':>3} {'encode ms':>10} {'questions ms':>13} {'per question':>13} "
          f"{'total ms':>9} {'encode + N x one':>17} {'total / that':>13} {'total / encode':>15}")
    for n, r in rows.items():
        predicted = r["encode_ms"] + n * one
        print(f"{n:>3} {r['encode_ms']:>10.2f} {r['questions_ms']:>13.2f} "
              f"{r['questions_ms'] / n:>13.2f} {r['total_ms']:>9.2f} {predicted:>17.2f} "
              f"{r['total_ms'] / predicted:>13.2f} {r['total_ms'] / r['encode_ms']:>15.2f}")
    quarter = len(long_run) // 4
    first = percentiles(r.total_ms for r in long_run[:quarter])["p50"]
    last = percentiles(r.total_ms for r in long_run[-quarter:])["p50"]
    print(f"long run, {len(long_run)} frames x 4 questions: total_ms p50 first quarter "
          f"{first:.2f}, last quarter {last:.2f}, last / first {last / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
