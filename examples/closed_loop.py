"""`make loop`: block-to-block pushing in the `langtable_sim` world, closed on the cobra node.

Three processes talk over DDS on this host: `langtable_sim` (the PyBullet world at 10 Hz), the
`cobra` node watching its camera, and this client, which drives the scripted pusher
(cobra_ros/control/pusher.py). Each episode sets the node's standing questions (~/watch): the
two blocks as referring expressions ("the red moon", "the blue cube"), located on every frame
and turned into board-frame points through the world's CameraInfo, and the stop question ("Is
the red moon next to the blue cube?"). With `--positions model` (the default) the pusher gets
block positions only from those answers and stops when the question says yes (P >= 0.5 on
`--done-frames` frames in a row); the effector position comes from the robot (`effector`).
With `--positions truth` the same pusher is fed the simulator's ground truth and stops on it:
the upper bound. Either way the simulator's ground truth judges success (centres within 0.05 m,
the dataset's block-to-block radius).

    python -m examples.closed_loop --episodes 20
    python -m examples.closed_loop --episodes 20 --positions truth
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from cobra_ros.control.pusher import Pusher, succeeded
from cobra_ros.langtable.world import BLOCK_4, block_text
from cobra_ros.paths import default_model_path
from harness.ros import NodeProcess, RosClient, isolate_ros_traffic

NAMESPACE = "/loop"
SIZE = (320, 180)  # the camera the release's Language-Table models see


def task(seed: int) -> tuple[str, str]:
    """The episode's (block to move, block to reach), drawn from the seed."""
    a, b = np.random.default_rng(seed).choice(len(BLOCK_4), 2, replace=False)
    return BLOCK_4[a], BLOCK_4[b]


def done_question(block: str, target: str) -> str:
    return f"Is the {block_text(block)} next to the {block_text(target)}?"


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@dataclass
class Episode:
    seed: int
    block: str
    target: str
    steps: int = 0
    success: bool = False  # ground truth at the end
    said_done: bool = False  # the controller stopped on its done signal
    answers: int = 0  # WatchResults received (node work on one frame each)
    calls: int = 0  # service calls to the cobra node
    located: int = 0  # answered frames with a table point for both blocks
    frame_agreement: list = field(default_factory=list)  # per answered frame: P>=0.5 == truth
    errors: set = field(default_factory=set)


class LoopClient(RosClient):
    def __init__(self, namespace: str):
        from geometry_msgs.msg import PointStamped, Vector3

        from cobra_ros.msg import SimGroundTruth, WatchResult
        from cobra_ros.srv import ResetSim, Watch

        super().__init__("closed_loop")
        node, self.lock = self.node, threading.Lock()
        self.truths, self.results, self.effector = [], [], None
        node.create_subscription(SimGroundTruth, f"{namespace}/ground_truth", self._keep_truth, 50)
        node.create_subscription(WatchResult, f"{namespace}/cobra/watch/result",
                                 self._keep_result, 50)
        node.create_subscription(PointStamped, f"{namespace}/effector", self._keep_effector, 10)
        self.action = node.create_publisher(Vector3, f"{namespace}/action", 10)
        self.reset_client = node.create_client(ResetSim, f"{namespace}/langtable_sim/reset")
        self.watch_client = node.create_client(Watch, f"{namespace}/cobra/watch")
        self.Vector3, self.ResetSim, self.Watch = Vector3, ResetSim, Watch

    def _keep_truth(self, msg):
        with self.lock:
            self.truths.append(msg)

    def _keep_result(self, msg):
        with self.lock:
            self.results.append(msg)

    def _keep_effector(self, msg):
        with self.lock:
            self.effector = (msg.header, np.array([msg.point.x, msg.point.y]))

    def take(self):
        """(ground truths, watch results) received since the last take."""
        with self.lock:
            truths, results = self.truths, self.results
            self.truths, self.results = [], []
            return truths, results


def model_positions(result, block: str, target: str):
    """Board-frame (x, y) of both blocks from one WatchResult, or None where either is missing."""
    found = []
    for name in (block, target):
        i = list(result.expressions).index(f"the {block_text(name)}")
        if not result.has_point[i]:
            return None
        p = result.points[i]
        found.append(np.array([p.x, p.y]))
    return found


def run_episode(client: LoopClient, seed: int, args, pusher: Pusher) -> Episode:
    block, target = task(seed)
    episode = Episode(seed, block, target)
    question = done_question(block, target)
    expressions = [f"the {block_text(block)}", f"the {block_text(target)}"]
    reply = client.call(client.watch_client, client.Watch.Request(
        questions=[question], expressions=expressions), timeout=60.0)
    episode.calls += 1
    if not reply.success:
        raise RuntimeError(f"~/watch refused: {reply.message}")
    instruction = f"push the {block_text(block)} to the {block_text(target)}"
    reset = client.call(client.reset_client, client.ResetSim.Request(
        seed=seed, block_mode="BLOCK_4", instruction=instruction), timeout=60.0)
    if not reset.success:
        raise RuntimeError(f"~/reset failed: {reset.message}")
    start = reset.stamp.sec * 1_000_000_000 + reset.stamp.nanosec
    truth_at, positions, yes_run, last_truth = {}, None, 0, None
    # a world that stalled, not a slow one
    deadline = time.monotonic() + args.max_steps / max(args.rate, 1.0) * 5 + 60
    while time.monotonic() < deadline:  # what came before the reset is dropped by its stamp
        truths, results = client.take()
        truths = [t for t in truths if stamp_ns(t.header) >= start]
        for t in truths:
            blocks = {b.name: (b.pose.position.x, b.pose.position.y) for b in t.blocks}
            truth_at[stamp_ns(t.header)] = succeeded(blocks[block], blocks[target])
            last_truth = (t, blocks)
        for r in (r for r in results if stamp_ns(r.header) >= start):
            episode.answers += 1
            episode.errors.update(e for e in r.errors if e)
            said = r.probabilities[0] >= 0.5
            if stamp_ns(r.header) in truth_at:
                episode.frame_agreement.append(said == truth_at[stamp_ns(r.header)])
            yes_run = yes_run + 1 if said else 0
            found = model_positions(r, block, target)
            episode.located += found is not None
            if args.positions == "model" and found is not None:
                positions = found
        if not truths:
            time.sleep(0.005)
            continue
        t, blocks = last_truth
        episode.steps = t.step
        episode.success = succeeded(blocks[block], blocks[target])
        if args.positions == "truth":
            positions = [np.array(blocks[block]), np.array(blocks[target])]
            done = episode.success
        else:
            done = yes_run >= args.done_frames
        if done:
            episode.said_done = True
            break
        if t.step >= args.max_steps:
            break
        with client.lock:
            effector = client.effector
        if positions is None or effector is None:
            action = (0.0, 0.0)  # nothing located yet: hold still
        else:
            action = pusher.act(effector[1], positions[0], positions[1])
        client.action.publish(client.Vector3(x=float(action[0]), y=float(action[1]), z=0.0))
    return episode


def summary(episodes: list, positions: str) -> dict:
    n = len(episodes)
    frames = [a for e in episodes for a in e.frame_agreement]
    return {
        "positions": positions, "episodes": n,
        "success": sum(e.success for e in episodes) / n,
        "done agrees with truth (episodes)": sum(e.said_done == e.success for e in episodes) / n,
        "done agrees with truth (frames)": sum(frames) / len(frames) if frames else math.nan,
        "steps / episode": float(np.mean([e.steps for e in episodes])),
        "cobra service calls / episode": float(np.mean([e.calls for e in episodes])),
        "answered frames / episode": float(np.mean([e.answers for e in episodes])),
        "frames with both blocks located": float(np.mean([e.located / max(1, e.answers)
                                                          for e in episodes])),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_path()),
                        help="Cobra model directory the node serves (default: the bundled one)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes, seeds seed..")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode")
    parser.add_argument("--positions", choices=("model", "truth", "both"), default="both",
                        help="where the pusher's block positions come from: the node's answers, "
                             "the simulator's ground truth (upper bound), or both in turn")
    parser.add_argument("--max-steps", type=int, default=200, help="control steps per episode")
    parser.add_argument("--done-frames", type=int, default=2,
                        help="frames in a row the stop question must say yes (model positions)")
    parser.add_argument("--rate", type=float, default=10.0, help="world steps per second")
    parser.add_argument("--device", default="cpu", help="torch device of the cobra node")
    parser.add_argument("--verbose", action="store_true", help="print every episode")
    return parser.parse_args(argv)


def start(args):
    isolate_ros_traffic()
    w, h = SIZE
    sim = NodeProcess(["-p", f"width:={w}", "-p", f"height:={h}", "-p", f"rate_hz:={args.rate}",
                       "-r", f"__ns:={NAMESPACE}"], module="cobra_ros.ros.sim_node")
    cobra = NodeProcess(["-p", f"model_path:={args.model}", "-p", f"device:={args.device}",
                         "-p", "describe_rate_hz:=0.0", "-p", "request_timeout_s:=120.0",
                         "-r", f"__ns:={NAMESPACE}"])
    return sim, cobra


def run(args, client, modes) -> dict:
    from tqdm import tqdm

    pusher, out = Pusher(), {}
    for mode in modes:
        args.positions = mode
        seeds = range(args.seed, args.seed + args.episodes)
        episodes = [run_episode(client, seed, args, pusher)
                    for seed in tqdm(seeds, desc=f"{mode} positions", unit="episode")]
        out[mode] = (summary(episodes, mode), episodes)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    modes = ("model", "truth") if args.positions == "both" else (args.positions,)
    sim, cobra = start(args)
    client = None
    try:
        client = LoopClient(NAMESPACE)
        for service in (client.reset_client, client.watch_client):
            if not service.wait_for_service(timeout_sec=120.0):
                raise TimeoutError(f"{service.srv_name} not available: is a node down?\n"
                                   f"{cobra.log()[-2000:]}\n{sim.log()[-2000:]}")
        results = run(args, client, modes)
    finally:
        if client is not None:
            client.close()
        codes = cobra.stop(), sim.stop()
    if args.verbose:
        for mode, (_, episodes) in results.items():
            for e in episodes:
                agree = (f"{sum(e.frame_agreement)}/{len(e.frame_agreement)}"
                         if e.frame_agreement else "-")
                print(f"{mode:5s} seed {e.seed} {e.block} -> {e.target}: steps {e.steps}, "
                      f"success {e.success}, said done {e.said_done}, answered {e.answers}, "
                      f"frames agreeing {agree}")
    print_table(results)
    for mode, (_, episodes) in results.items():
        errors = sorted({e for ep in episodes for e in ep.errors})
        if errors:
            print(f"{mode}: {len(errors)} distinct locate errors, e.g. {errors[0]}")
    return 0 if codes == (0, 0) else 1


def print_table(results: dict) -> None:
    keys = list(next(iter(results.values()))[0])
    print(f"{'':36s}" + "".join(f"{mode:>14s}" for mode in results))
    for key in keys[1:]:
        cells = []
        for summary_, _ in results.values():
            v = summary_[key]
            cells.append(f"{v:14.2f}" if isinstance(v, float) else f"{v:>14}")
        print(f"{key:36s}" + "".join(cells))


if __name__ == "__main__":
    sys.exit(main())
