"""cobra-eval: every answer-quality figure and the latency of a model on frames with ground truth.

By default held-out scenes of the physics world (seeds no recipe trains on: --seed is offset by
evaluate.EVAL_SEED_OFFSET), through the dataset camera, plus as many through the randomised
camera; --source replays frames of another source instead."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import cobra_ros
from cobra_ros.evaluate import (EVAL_SEED_OFFSET, evaluate, replay_scenes, report_lines,
                                sim_scenes, synthetic_frames, write_report)
from cobra_ros.langtable.replay import SOURCE_HELP, SimSource, iter_frames, make_source
from cobra_ros.model.checkpoint import CheckpointError
from cobra_ros.model.scoring import SCORING_HELP, SCORINGS
from cobra_ros.paths import default_model_path


def _frames(args, parser) -> list:
    try:  # the world's held-out layouts: other seeds than training's, N_CHOOSE_K's test sets
        source = make_source(args.source, seed=args.seed + EVAL_SEED_OFFSET,
                             episodes=args.episodes)
    except ValueError as err:
        parser.error(f"--source: {err}")
    if isinstance(source, SimSource):
        source = replace(source, training=False)
    if args.source == "synthetic":
        return synthetic_frames(args.seed, args.episodes, args.stride)
    return [f for f in iter_frames(source, max_episodes=args.episodes)
            if f.step_index % args.stride == 0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None,
                        help="model directory (default: the bundled model)")
    parser.add_argument("--seed", type=int, default=0,
                        help="held-out scenes / episodes of this seed (offset from training's)")
    parser.add_argument("--scenes", type=int, default=100,
                        help="held-out physics-world scenes, and as many through the randomised "
                             "camera (default source)")
    parser.add_argument("--source", default="scenes",
                        help="'scenes' (default): held-out physics-world scenes; or replayed "
                             f"frames: {SOURCE_HELP}; frames without ground truth are skipped")
    parser.add_argument("--episodes", type=int, default=20, help="episodes of a replay --source")
    parser.add_argument("--stride", type=int, default=4,
                        help="use every Nth frame of a replayed episode")
    parser.add_argument("--json", default="eval.json",
                        help="results file; a PNG chart is written beside it")
    parser.add_argument("--scoring", default="plain", choices=sorted(SCORINGS),
                        help=SCORING_HELP + " (default: plain)")
    parser.add_argument("--device", default="cpu", help="torch device to run the model on")
    parser.add_argument("--dtype", default=None, help="model dtype (default: the model's own)")
    args = parser.parse_args(argv)
    camera = []
    if args.source == "scenes":
        scenes = sim_scenes(args.seed, args.scenes, randomize=0.0)
        camera = sim_scenes(args.seed + 500_000, args.scenes, randomize=1.0)
    else:
        scenes = replay_scenes(_frames(args, parser))
    try:
        engine = cobra_ros.load(args.model or default_model_path(), device=args.device,
                                dtype=args.dtype)
    except CheckpointError as err:
        sys.exit(f"cobra-eval: {err}")
    results = evaluate(engine, scenes, seed=args.seed, scoring=args.scoring,
                       camera_scenes=camera)
    results.update(model=engine.name, source=args.source, seed=args.seed)
    png = write_report(results, args.json,
                       f"cobra-eval: {engine.name} on {args.source} (seed {args.seed})")
    print("\n".join(report_lines(results)))
    print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
