"""`make demo`: the cobra node with the bundled model, watching replayed Language-Table episodes.

Three processes talk over DDS on this host: the `cobra` node, the `langtable_replay` node
(held-out episodes of the PyBullet Language-Table world, pushed by a scripted pusher, at 10 Hz),
and this client, which prints the node's descriptions as they arrive and asks spatial questions
through ~/ask_yes_no and ~/ask while the episodes play. Every answer names the frame it is about
(image_stamp); the client knows that frame's ground truth because it renders the same episodes
itself, and it checks the node's P(yes) against the engine called directly on that frame.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from collections import defaultdict

import numpy as np

from cobra_ros.evaluate import EVAL_SEED_OFFSET
from cobra_ros.langtable import questions
from cobra_ros.langtable.replay import SOURCE_HELP, iter_frames, make_source
from cobra_ros.paths import default_model_path
from cobra_ros.stats import percentiles

NAMESPACE = "/demo"


def _digest(rgb: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=12).hexdigest()


class Truths:
    """Ground truth of every replayed frame, keyed by pixel content, and the stamps it got."""

    def __init__(self, source):
        self.by_digest = {_digest(f.rgb): f for f in iter_frames(source)}
        self.by_stamp, self.latest = {}, None
        self.lock = threading.Lock()

    def on_image(self, msg) -> None:
        from cobra_ros.ros.image_conversion import to_rgb

        frame = self.by_digest.get(_digest(to_rgb(msg)))
        with self.lock:
            self.by_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = frame
            self.latest = frame

    def at(self, stamp):
        with self.lock:
            return self.by_stamp.get((stamp.sec, stamp.nanosec))


def relabel(example: questions.Example, frame):
    """The example's label on the frame the node answered about (None: not askable there)."""
    blocks = {b.name: b for b in frame.truth.blocks if b.visible >= 0.5}
    # absent blocks are the "no" answers; hidden ones are not askable
    if example.relation == "presence":
        hidden = {b.name for b in frame.truth.blocks if b.visible < 0.5}
        return None if example.blocks[0] in hidden else example.blocks[0] in blocks
    if any(name not in blocks for name in example.blocks):
        return None
    parts = [blocks[n] for n in example.blocks]
    return questions.relation_label(
        example.relation,
        parts[0],
        parts[1],
        parts[2] if len(parts) > 2 else None,
        others=list(blocks.values()),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None,
                        help="model directory (default: the bundled models/langtable-tiny)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the held-out episodes and of the questions")
    parser.add_argument("--source", default="sim:BLOCK_8",
                        help="episodes to replay (sim, synthetic or generated only, since the "
                             "client renders them again for their ground truth): " + SOURCE_HELP)
    parser.add_argument("--episodes", type=int, default=6, help="episodes to replay")
    parser.add_argument("--questions-per-frame", type=int, default=4,
                        help="yes/no questions asked about each frame")
    parser.add_argument("--budget-s", type=float, default=100.0,
                        help="stop asking after this many seconds")
    args = parser.parse_args(argv)

    from harness.ros import CobraClient, NodeProcess, isolate_ros_traffic
    from sensor_msgs.msg import Image

    import cobra_ros

    model = args.model or str(default_model_path())
    isolate_ros_traffic()
    seed = args.seed + EVAL_SEED_OFFSET
    try:
        source = make_source(args.source, seed, args.episodes, (640, 360))
    except ValueError as err:
        parser.error(f"--source: {err}")
    print(f"cobra demo: model {model}, {args.episodes} held-out episodes of {args.source} "
          f"(seed {seed})", flush=True)
    truths = Truths(source)
    engine = cobra_ros.load(model)  # the same model, called directly, to cross-check the services
    node = NodeProcess(
        [
            "-p", f"model_path:={model}", "-p", "describe_rate_hz:=0.5",
            "-p", "max_new_tokens:=96", "-r", f"__ns:={NAMESPACE}",
        ]
    )
    replay = NodeProcess(
        [
            "-p", f"source:={args.source}", "-p", f"seed:={seed}",
            "-p", f"episodes:={args.episodes}", "-p", "wait_for_subscribers:=2",
            "-r", f"__ns:={NAMESPACE}",
        ],
        module="cobra_ros.ros.replay_node",
    )
    client = CobraClient(NAMESPACE)
    client.node.create_subscription(Image, f"{NAMESPACE}/image", truths.on_image, 10)
    stats = {
        "yes_no": defaultdict(list),
        "latency": [],
        "agree": [],
        "dp": [],
        "free": [],
        "desc": [],
    }
    try:
        client.wait_ready(120.0)
        print("node ready; replaying episodes at 10 Hz ...\n", flush=True)
        seen_descriptions = 0
        rng = np.random.default_rng(args.seed)
        t_end = time.monotonic() + args.budget_s
        while time.monotonic() < t_end and replay.running():
            seen_descriptions = _print_descriptions(client, truths, stats, seen_descriptions)
            frame = truths.latest
            if frame is None or frame.truth is None:
                time.sleep(0.1)
                continue
            examples = [
                e for e in questions.scene_examples(frame.truth.blocks, rng) if e.label is not None
            ]
            for example in rng.permutation(examples)[: args.questions_per_frame]:
                _ask_yes_no(client, engine, truths, example, stats)
            free = [
                e
                for e in questions.open_questions(
                    [b for b in frame.truth.blocks if b.visible >= 0.5], rng
                )
                if e.relation in ("where", "closest", "count")
            ]
            if free:
                _ask_free(client, truths, free[0], stats)
        _print_descriptions(client, truths, stats, seen_descriptions)
    finally:
        client.close()
        replay.stop()
        node.stop()
    return _summary(stats)


def _print_descriptions(client, truths, stats, seen: int) -> int:
    with client._lock:
        new = client.descriptions[seen:]
    for msg in new:
        frame = truths.at(msg.header.stamp)
        if frame is not None and frame.truth is not None:
            present = [b.name for b in frame.truth.blocks if b.visible >= 0.5]
            stats["desc"].append(questions.mention_scores(msg.text, present))
        print(
            f"[describe] ep {frame.episode_index if frame else '?'} "
            f"step {frame.step_index if frame else '?'}: "
            f"{msg.text}  ({msg.num_tokens} tok, {msg.tokens_per_second:.0f} tok/s)",
            flush=True,
        )
    return seen + len(new)


def _ask_yes_no(client, engine, truths, example, stats) -> None:
    t0 = time.perf_counter()
    reply = client.yes_no(example.question)
    ms = (time.perf_counter() - t0) * 1000
    frame = truths.at(reply.image_stamp)
    if not reply.success or frame is None:
        print(f"  ? {example.question} -> {reply.message or 'frame unknown'}", flush=True)
        return
    label = relabel(example, frame)
    direct = engine.yes_no(engine.encode(frame.rgb), example.question)
    stats["latency"].append(ms)
    stats["agree"].append((direct >= 0.5) == reply.answer)
    stats["dp"].append(abs(direct - reply.probability))
    if label is None:
        return
    ok = reply.answer == label
    stats["yes_no"][example.relation].append(ok)
    print(
        f"  {'ok ' if ok else 'XX '} [ep {frame.episode_index} step {frame.step_index:>2}] "
        f"{example.question} -> {'yes' if reply.answer else 'no'} ({reply.probability:.2f}), "
        f"truth {'yes' if label else 'no'}, "
        f"{ms:.0f} ms",
        flush=True,
    )


def _ask_free(client, truths, example, stats) -> None:
    reply = client.ask(example.question, max_new_tokens=16)
    frame = truths.at(reply.image_stamp)
    if reply.success and frame is not None:
        print(f"  ask  {example.question} -> {reply.answer!r} (truth then: {example.answer!r}, "
              f"{reply.latency_ms:.0f} ms)", flush=True)
        stats["free"].append(reply.answer.strip().rstrip(".").lower() == example.answer.lower())


def _summary(stats) -> int:
    answers = [ok for oks in stats["yes_no"].values() for ok in oks]
    print("\n=== summary ===")
    if not answers:
        print("no yes/no question was answered: see the node log")
        return 1
    print(f"yes/no accuracy {np.mean(answers):.3f} over {len(answers)} questions (chance 0.5)")
    for relation, oks in sorted(stats["yes_no"].items()):
        print(f"  {relation:<11} {np.mean(oks):.3f} (n={len(oks)})")
    if stats["desc"]:
        p, r = np.mean(stats["desc"], axis=0)
        print(f"descriptions: block-mention precision {p:.3f}, recall {r:.3f} "
              f"(n={len(stats['desc'])})")
    if stats["free"]:
        print(
            "free-form answers matching the truth of the frame asked about: "
            f"{np.mean(stats['free']):.3f} "
            f"(n={len(stats['free'])})"
        )
    latency = percentiles(stats["latency"])
    print(f"AskYesNo round trip: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms")
    print(
        "services vs engine called directly on the same frame: "
        f"same yes/no {np.mean(stats['agree']):.3f}, "
        f"max |dP(yes)| {max(stats['dp']):.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
