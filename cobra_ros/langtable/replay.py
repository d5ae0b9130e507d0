"""Source-agnostic frame replay: the PyBullet world, an RLDS version dir, a ROS 2 bag, or synthetic
episodes of the 2-D look-alike.

`iter_frames(source)` is all a replay node needs: it yields ReplayFrame tuples with a stamp offset
in seconds (the dataset's 10 Hz control rate for episodes, the recorded stamps for bags). A source
is a spec string (`make_source`) or the object it names:

    sim | sim:BLOCK_4 | sim:BLOCK_8 | sim:N_CHOOSE_K   the PyBullet Language-Table world
    original | original:BLOCK_8 | ...                  the same episodes in Google's simulator
                                                       (its language_table package, installed
                                                       beside the project)
    synthetic                                          the 2-D look-alike's push episodes
    PATH                                               an RLDS version dir or a ROS 2 bag

    python -m cobra_ros.langtable.replay --source sim:BLOCK_8 --episodes 2 --out-dir /tmp/f
    python -m cobra_ros.langtable.replay --source synthetic --episodes 100 --export-rlds /tmp/lt
    python -m cobra_ros.langtable.replay --source /data/language_table/0.0.1 --out-dir /tmp/f
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np

from cobra_ros.langtable import bag, rlds
from cobra_ros.langtable.episodes import iter_push_episodes
from cobra_ros.langtable.world import DEFAULT_SIZE, Rendered, render

CONTROL_RATE_HZ = 10.0  # env control_frequency; OXE and LeRobot list language_table at 10 fps
SOURCE_HELP = ("'sim' or 'sim:BLOCK_4|BLOCK_8|N_CHOOSE_K' (the PyBullet world), 'original' or "
               "'original:MODE' (the same episodes in Google's simulator, when its language_table "
               "package is installed), 'synthetic' "
               "(the 2-D look-alike), an RLDS version dir or a ROS 2 bag")


@dataclass(frozen=True)
class SyntheticSource:
    seed: int = 0
    episodes: int = 10
    size: tuple = DEFAULT_SIZE  # (width, height)


@dataclass(frozen=True)
class SimSource:
    """Episodes of the PyBullet world: episode i is reset with seed (seed, i) and pushed by a
    scripted pusher for `steps` control steps. training=False draws N_CHOOSE_K's test sets.
    original=True runs them in Google's simulator (`LangTableSim(original=True)`)."""

    block_mode: str = "BLOCK_4"
    seed: int = 0
    episodes: int = 10
    size: tuple = DEFAULT_SIZE  # (width, height)
    steps: int = 40
    training: bool = True
    original: bool = False


class ReplayFrame(NamedTuple):
    episode_index: int
    step_index: int
    stamp: float  # seconds since the episode's first frame (a bag counts as one episode)
    rgb: np.ndarray  # HxWx3 uint8 RGB
    instruction: str | None  # a bag's: the last on an `instruction` topic up to the frame
    truth: Rendered | None  # block ground truth: synthetic and sim frames only


def make_source(spec, seed: int = 0, episodes: int = 10, size=DEFAULT_SIZE):
    """A source from its spec string (see the module docstring); ValueError says what is wrong."""
    if not isinstance(spec, str):
        return spec
    if spec == "synthetic":
        return SyntheticSource(seed, episodes, tuple(size))
    world, _, mode = spec.partition(":")
    if world in ("sim", "original"):
        from cobra_ros.langtable.sim import BLOCK_MODES

        mode = mode or "BLOCK_4"
        if mode not in BLOCK_MODES:
            raise ValueError(f"{spec!r}: the world's block mode is one of "
                             f"{', '.join(BLOCK_MODES)}, not {mode!r}")
        return SimSource(mode, seed, episodes, tuple(size), original=world == "original")
    path_kind(spec)  # fail early on a path that is neither
    return spec


def source_kind(source) -> str:
    """'sim', 'synthetic', 'rlds' or 'bag' (a spec string is parsed first)."""
    source = make_source(source)
    if isinstance(source, SimSource):
        return "sim"
    if isinstance(source, SyntheticSource):
        return "synthetic"
    return path_kind(source)


def path_kind(source) -> str:
    """'rlds' or 'bag': what the file or directory at `source` holds."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: no such file or directory (a source is {SOURCE_HELP})")
    info = [path / "features.json", path / "dataset_info.json"]
    if path.is_dir() and (any(p.exists() for p in info) or any(path.rglob("*.tfrecord*"))):
        return "rlds"
    if (path.is_dir() and (path / "metadata.yaml").exists()) or path.suffix in (".mcap", ".db3"):
        return "bag"
    raise ValueError(f"{source}: not an RLDS version dir (features.json + *.tfrecord-*) "
                     "nor a ROS 2 bag")


def iter_frames(source, *, split: str = "train", topic: str | None = None, start_episode: int = 0,
                max_episodes: int | None = None, drop_terminal: bool = True,
                rate_hz: float = CONTROL_RATE_HZ) -> Iterator[ReplayFrame]:
    """Frames of `source` in order. Episode indices count from 0 at the first episode of the
    source."""
    kind = source_kind(source)
    source = make_source(source)
    if kind == "bag":
        yield from _bag_frames(source, topic)
        return
    if kind == "sim":
        yield from _sim_frames(source, start_episode, max_episodes, rate_hz)
        return
    if kind == "synthetic":
        stop = source.episodes if max_episodes is None else min(source.episodes,
                                                                start_episode + max_episodes)
        for index, episode in enumerate(iter_push_episodes(source.seed, stop)):
            if index < start_episode:
                continue
            kept = [s for s in episode.steps if not (drop_terminal and s.is_terminal)]
            for k, step in enumerate(kept):
                frame = render(step.scene, source.size)
                yield ReplayFrame(index, k, k / rate_hz, frame.rgb, episode.instruction, frame)
        return
    episodes = rlds.iter_episodes(source, split, drop_terminal=drop_terminal, start=start_episode,
                                  limit=max_episodes)
    for index, episode in enumerate(episodes, start=start_episode):
        for k, step in enumerate(episode.steps):
            yield ReplayFrame(index, k, k / rate_hz, step.rgb,
                              step.instruction or episode.instruction, None)


def _bag_frames(path, topic) -> Iterator[ReplayFrame]:
    topics = bag.image_topics(path)
    if topic is None:
        if len(topics) != 1:
            raise ValueError(f"{path}: choose one image topic with topic=... "
                             f"from {sorted(topics) or 'none'}")
        topic = next(iter(topics))
    instructions = _bag_instructions(path)
    first = None
    for k, frame in enumerate(bag.iter_bag_images(path, [topic])):
        first = frame.stamp_ns if first is None else first
        said = [text for stamp, text in instructions if stamp <= frame.stamp_ns]
        yield ReplayFrame(0, k, (frame.stamp_ns - first) / 1e9, frame.rgb,
                          said[-1] if said else None, None)


def _bag_instructions(path) -> list:
    """(log time ns, text) of the bag's std_msgs/String topics named `instruction`, as the
    langtable nodes publish them, in time order."""
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.msgtype == "std_msgs/msg/String"
                       and c.topic.rsplit("/", 1)[-1] == "instruction"]
        if not connections:
            return []
        store = bag.typestore()
        return sorted((stamp, store.deserialize_cdr(raw, c.msgtype).data)
                      for c, stamp, raw in reader.messages(connections=connections))


# ---------------------------------------------------------------- the PyBullet world

PUSH_SPEED = 0.03  # metres per step, about the teleoperators' pace
PUSH_CLEARANCE = 0.045  # effector centre behind the block centre when it starts to push
PUSH_CONTACT = 0.035  # effector centre this near a block centre touches it (radii 0.0127 + ~0.02)
PUSH_STOP = 0.045  # the pushed block stops this far from the goal block's centre, next to it


def push_action(target, block_xy, goal_xy, pushing: bool) -> tuple:
    """A scripted pusher: get behind the block on the line from the goal (around the block, not
    through it), then push it along that line until it lies next to the goal; it starts over when
    the block slips off the line. Returns (action, pushing)."""
    target, block, goal = (np.asarray(v, np.float64) for v in (target, block_xy, goal_xy))
    line = goal - block
    direction = line / max(np.linalg.norm(line), 1e-9)
    behind = block - direction * PUSH_CLEARANCE
    off_line = np.linalg.norm(behind - target)
    pushing = off_line < 0.03 if pushing else off_line < 0.01
    if pushing:
        aim = goal - direction * (PUSH_STOP + PUSH_CLEARANCE)
    else:
        aim = behind
        path = behind - target
        t = np.clip(np.dot(block - target, path) / max(np.dot(path, path), 1e-12), 0.0, 1.0)
        if np.linalg.norm(target + t * path - block) < PUSH_CONTACT:  # the block is in the way
            side = np.array([-direction[1], direction[0]])
            side *= np.sign(np.dot(target - block, side)) or 1.0
            aim = block + (side - 0.5 * direction) * PUSH_CLEARANCE * 1.5
    delta = aim - target
    return delta / max(1.0, np.linalg.norm(delta) / PUSH_SPEED), pushing


def push_task(rng: np.random.Generator, blocks: dict) -> tuple:
    """(block, goal block) for a push the scripted pusher can do: the two over 10 cm apart and
    no third block within 5 cm of the line it pushes along (from behind the block to the goal).
    Any pair when none is clear."""
    def clear(a, b):
        start = np.asarray(blocks[a]) - PUSH_CLEARANCE * _unit(np.subtract(blocks[b], blocks[a]))
        return np.hypot(*np.subtract(blocks[b], blocks[a])) > 0.1 and all(
            _segment_distance(blocks[c], start, blocks[b]) > 0.05
            for c in blocks if c not in (a, b))

    pairs = [(a, b) for a in blocks for b in blocks if a != b]
    good = [p for p in pairs if clear(*p)] or pairs
    return good[int(rng.integers(len(good)))]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def _segment_distance(p, a, b) -> float:
    p, a, b = (np.asarray(v, np.float64) for v in (p, a, b))
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(a + t * ab - p))


def _sim_frames(source: SimSource, start: int, limit: int | None, rate_hz: float):
    from cobra_ros.langtable.episodes import block2block_instruction
    from cobra_ros.langtable.sim import LangTableSim
    from cobra_ros.langtable.sim.scenes import frame_to_rendered

    stop = source.episodes if limit is None else min(source.episodes, start + limit)
    with LangTableSim(source.block_mode, seed=source.seed, size=source.size,
                      training=source.training, original=source.original) as sim:
        for index in range(start, stop):
            rng = np.random.default_rng([source.seed, index])
            frame = sim.reset(seed=int(rng.integers(2**31)))
            names = [b.name for b in frame.blocks if b.in_set]
            a, b = push_task(rng, {n: frame.block(n).xy for n in names})
            instruction = block2block_instruction(rng, a, b)
            pushing = False
            for k in range(source.steps):
                truth = frame_to_rendered(frame)
                yield ReplayFrame(index, k, k / rate_hz, frame.rgb, instruction, truth)
                if k + 1 < source.steps:
                    action, pushing = push_action(frame.effector_target_xy, frame.block(a).xy,
                                                  frame.block(b).xy, pushing)
                    frame = sim.step(action)


# ---------------------------------------------------------------- CLI

def _parse_size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x360") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be at least 16")
    return w, h


def _truth_json(truth: Rendered | None):
    if truth is None:
        return None
    return {"blocks": [asdict(b) for b in truth.blocks], "effector": list(truth.effector),
            "effector_uv": list(truth.effector_uv)}


def write_pngs(frames, out_dir) -> int:
    """Write frames as PNGs plus frames.jsonl (episode, step, stamp, instruction, ground truth)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out_dir / "frames.jsonl", "w") as index:
        for f in tqdm(frames, unit="frame", desc="frames"):
            name = f"ep{f.episode_index:05d}_step{f.step_index:04d}.png"
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
            index.write(json.dumps({"file": name, "episode": f.episode_index, "step": f.step_index,
                                    "stamp": round(f.stamp, 6), "instruction": f.instruction,
                                    "truth": _truth_json(f.truth)}) + "\n")
            count += 1
    return count


def export_rlds(source: SyntheticSource, version_dir, image_format: str = "png",
                episodes_per_shard: int = 100):
    """Write synthetic episodes as Language-Table TFRecord shards (the real schema)."""
    from tqdm import tqdm

    episodes = tqdm(iter_push_episodes(source.seed, source.episodes), total=source.episodes,
                    unit="episode", desc="export")
    converted = (e.to_rlds(f"synthetic-{source.seed}-{i:06d}", source.size)
                 for i, e in enumerate(episodes))
    return rlds.write_rlds(version_dir, converted, image_format=image_format,
                           episodes_per_shard=episodes_per_shard)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cobra_ros.langtable.replay",
                                     description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--source", required=True, help=SOURCE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="sim, synthetic: episode seed")
    parser.add_argument("--episodes", type=int, default=10,
                        help="sim, synthetic: number of episodes")
    parser.add_argument("--steps", type=int, default=SimSource.steps,
                        help="sim: control steps per episode")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE,
                        help="sim, synthetic: image WIDTHxHEIGHT")
    parser.add_argument("--split", default="train", help="rlds: split name")
    parser.add_argument("--topic", help="bag: image topic (needed when the bag has several)")
    parser.add_argument("--start-episode", type=int, default=0, help="first episode to replay")
    parser.add_argument("--max-episodes", type=int, help="episodes to replay (default: all)")
    parser.add_argument("--keep-terminal", action="store_true",
                        help="keep is_terminal steps (RLDS drops them)")
    parser.add_argument("--out-dir", help="write frames here as PNG + frames.jsonl")
    parser.add_argument("--export-rlds", metavar="DIR",
                        help="synthetic: write episodes as TFRecord shards")
    parser.add_argument("--image-format", choices=("png", "jpeg"), default="png",
                        help="--export-rlds images")
    args = parser.parse_args(argv)
    if not args.out_dir and not args.export_rlds:
        parser.error("nothing to do: give --out-dir and/or --export-rlds")
    try:
        source = make_source(args.source, args.seed, args.episodes, args.size)
    except ValueError as err:
        parser.error(f"--source: {err}")
    if isinstance(source, SimSource):
        source = replace(source, steps=args.steps)
    if args.export_rlds and not isinstance(source, SyntheticSource):
        parser.error("--export-rlds needs --source synthetic")
    if args.export_rlds:
        paths = export_rlds(source, args.export_rlds, args.image_format)
        print(f"wrote {len(paths)} shard(s) to {args.export_rlds}")
    if args.out_dir:
        frames = iter_frames(source, split=args.split, topic=args.topic,
                             start_episode=args.start_episode, max_episodes=args.max_episodes,
                             drop_terminal=not args.keep_terminal)
        print(f"wrote {write_pngs(frames, args.out_dir)} frame(s) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
