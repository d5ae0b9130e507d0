"""Source-agnostic frame replay: an RLDS version dir, a ROS 2 bag, or synthetic episodes.

`iter_frames(source)` is all a replay node needs: it yields ReplayFrame tuples with a stamp offset
in seconds (the dataset's 10 Hz control rate for episodes, the recorded stamps for bags).

    python -m cobra_ros.langtable.replay --source synthetic --episodes 3 --out-dir /tmp/frames
    python -m cobra_ros.langtable.replay --source synthetic --episodes 100 --export-rlds /tmp/lt/0.0.1
    python -m cobra_ros.langtable.replay --source /data/language_table/0.0.1 --max-episodes 2 --out-dir f
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np

from cobra_ros.langtable import bag, rlds
from cobra_ros.langtable.episodes import iter_push_episodes
from cobra_ros.langtable.world import DEFAULT_SIZE, Rendered, render

CONTROL_RATE_HZ = 10.0  # env control_frequency; OXE and LeRobot list language_table at 10 fps


@dataclass(frozen=True)
class SyntheticSource:
    seed: int = 0
    episodes: int = 10
    size: tuple = DEFAULT_SIZE  # (width, height)


class ReplayFrame(NamedTuple):
    episode_index: int
    step_index: int
    stamp: float  # seconds since the episode's first frame (a bag counts as one episode)
    rgb: np.ndarray  # HxWx3 uint8 RGB
    instruction: str | None
    truth: Rendered | None  # block ground truth, synthetic frames only


def make_source(spec: str, seed: int = 0, episodes: int = 10, size=DEFAULT_SIZE):
    """'synthetic' -> SyntheticSource(seed, episodes, size); anything else is a path (RLDS dir or bag)."""
    if spec == "synthetic":
        return SyntheticSource(seed, episodes, tuple(size))
    source_kind(spec)  # fail early on a path that is neither
    return spec


def source_kind(source) -> str:
    """'synthetic', 'rlds' or 'bag'."""
    if isinstance(source, SyntheticSource):
        return "synthetic"
    path = Path(source)
    if path.is_dir() and ((path / "features.json").exists() or (path / "dataset_info.json").exists()
                          or any(path.glob("*.tfrecord-*"))):
        return "rlds"
    if (path.is_dir() and (path / "metadata.yaml").exists()) or path.suffix in (".mcap", ".db3"):
        return "bag"
    raise ValueError(f"{source}: not an RLDS version dir (features.json + *.tfrecord-*) nor a ROS 2 bag")


def iter_frames(source, *, split: str = "train", topic: str | None = None, start_episode: int = 0,
                max_episodes: int | None = None, drop_terminal: bool = True,
                rate_hz: float = CONTROL_RATE_HZ) -> Iterator[ReplayFrame]:
    """Frames of `source` in order. Episode indices count from 0 at the first episode of the source."""
    kind = source_kind(source)
    if kind == "bag":
        yield from _bag_frames(source, topic)
        return
    if kind == "synthetic":
        stop = source.episodes if max_episodes is None else min(source.episodes, start_episode + max_episodes)
        for index, episode in enumerate(iter_push_episodes(source.seed, stop)):
            if index < start_episode:
                continue
            kept = [s for s in episode.steps if not (drop_terminal and s.is_terminal)]
            for k, step in enumerate(kept):
                frame = render(step.scene, source.size)
                yield ReplayFrame(index, k, k / rate_hz, frame.rgb, episode.instruction, frame)
        return
    episodes = rlds.iter_episodes(source, split, drop_terminal=drop_terminal, start=start_episode, limit=max_episodes)
    for index, episode in enumerate(episodes, start=start_episode):
        for k, step in enumerate(episode.steps):
            yield ReplayFrame(index, k, k / rate_hz, step.rgb, step.instruction or episode.instruction, None)


def _bag_frames(path, topic) -> Iterator[ReplayFrame]:
    topics = bag.image_topics(path)
    if topic is None:
        if len(topics) != 1:
            raise ValueError(f"{path}: choose one image topic with topic=... from {sorted(topics) or 'none'}")
        topic = next(iter(topics))
    first = None
    for k, frame in enumerate(bag.iter_bag_images(path, [topic])):
        first = frame.stamp_ns if first is None else first
        yield ReplayFrame(0, k, (frame.stamp_ns - first) / 1e9, frame.rgb, None, None)


# ---------------------------------------------------------------- CLI

def _parse_size(text: str) -> tuple:
    w, h = text.lower().split("x")
    return int(w), int(h)


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


def export_rlds(source: SyntheticSource, version_dir, image_format: str = "png", episodes_per_shard: int = 100):
    """Write synthetic episodes as Language-Table TFRecord shards (the real schema)."""
    from tqdm import tqdm

    episodes = tqdm(iter_push_episodes(source.seed, source.episodes), total=source.episodes, unit="episode",
                    desc="export")
    converted = (e.to_rlds(f"synthetic-{source.seed}-{i:06d}", source.size) for i, e in enumerate(episodes))
    return rlds.write_rlds(version_dir, converted, image_format=image_format, episodes_per_shard=episodes_per_shard)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cobra_ros.langtable.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="'synthetic', an RLDS version dir, or a ROS 2 bag")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: world seed")
    parser.add_argument("--episodes", type=int, default=10, help="synthetic: number of episodes")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, help="synthetic: WIDTHxHEIGHT")
    parser.add_argument("--split", default="train", help="rlds: split name")
    parser.add_argument("--topic", help="bag: image topic (needed when the bag has several)")
    parser.add_argument("--start-episode", type=int, default=0)
    parser.add_argument("--max-episodes", type=int)
    parser.add_argument("--keep-terminal", action="store_true", help="keep is_terminal steps (RLDS drops them)")
    parser.add_argument("--out-dir", help="write frames here as PNG + frames.jsonl")
    parser.add_argument("--export-rlds", metavar="DIR", help="synthetic: write episodes as TFRecord shards")
    parser.add_argument("--image-format", choices=("png", "jpeg"), default="png", help="--export-rlds images")
    args = parser.parse_args(argv)
    if not args.out_dir and not args.export_rlds:
        parser.error("nothing to do: give --out-dir and/or --export-rlds")

    source = make_source(args.source, args.seed, args.episodes, args.size)
    if args.export_rlds and not isinstance(source, SyntheticSource):
        parser.error("--export-rlds needs --source synthetic")
    if args.export_rlds:
        paths = export_rlds(source, args.export_rlds, args.image_format)
        print(f"wrote {len(paths)} shard(s) to {args.export_rlds}")
    if args.out_dir:
        frames = iter_frames(source, split=args.split, topic=args.topic, start_episode=args.start_episode,
                             max_episodes=args.max_episodes, drop_terminal=not args.keep_terminal)
        print(f"wrote {write_pngs(frames, args.out_dir)} frame(s) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
