"""cobra-eval: accuracy, description quality and latency of a model on frames with ground truth."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import cobra_ros
from cobra_ros.evaluate import EVAL_SEED_OFFSET, evaluate, synthetic_frames, write_report
from cobra_ros.langtable.replay import SOURCE_HELP, SimSource, iter_frames, make_source
from cobra_ros.model.checkpoint import CheckpointError
from cobra_ros.model.scoring import SCORING_HELP, SCORINGS
from cobra_ros.paths import default_model_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default=None, help="model directory (default: the bundled model)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="held-out synthetic episodes of this seed"
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--stride", type=int, default=4, help="use every Nth frame of an episode")
    parser.add_argument(
        "--source",
        default="synthetic",
        help=f"{SOURCE_HELP}; frames without ground truth are skipped",
    )
    parser.add_argument(
        "--json", default="eval.json", help="results file; a PNG chart is written beside it"
    )
    parser.add_argument(
        "--scoring",
        default="plain",
        choices=sorted(SCORINGS),
        help=SCORING_HELP + " (default: plain)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args(argv)
    try:  # the world's held-out layouts: other seeds than training's, N_CHOOSE_K's test sets
        source = make_source(
            args.source, seed=args.seed + EVAL_SEED_OFFSET, episodes=args.episodes
        )
    except ValueError as err:
        parser.error(f"--source: {err}")
    if isinstance(source, SimSource):
        source = replace(source, training=False)
    try:
        engine = cobra_ros.load(
            args.model or default_model_path(), device=args.device, dtype=args.dtype
        )
    except CheckpointError as err:
        sys.exit(f"cobra-eval: {err}")
    if args.source == "synthetic":
        frames = synthetic_frames(args.seed, args.episodes, args.stride)
    else:
        frames = [
            f
            for f in iter_frames(source, max_episodes=args.episodes)
            if f.step_index % args.stride == 0
        ]
    results = evaluate(engine, frames, seed=args.seed, scoring=args.scoring)
    results.update(
        model=engine.name,
        source=args.source,
        seed=args.seed,
        episodes=args.episodes,
        frames=len(frames),
    )
    png = write_report(
        results, args.json, f"cobra-eval: {engine.name} on {args.source} (seed {args.seed})"
    )
    print(
        f"yes/no accuracy {results['yes_no_accuracy']:.3f} over {results['n_questions']} "
        f"questions (majority baseline {results['majority_baseline']:.3f})"
    )
    for rel, acc in results["per_relation"].items():
        print(
            f"  {rel:<11} {acc:.3f}  (n={results['per_relation_count'][rel]}, "
            f"majority {results['per_relation_majority'][rel]:.3f})"
        )
    print(
        f"descriptions: precision {results['description_precision']:.3f}, "
        f"recall {results['description_recall']:.3f} (n={results['n_descriptions']}); "
        f"blocks placed in their true region {results['description_region_accuracy']:.3f}"
    )
    print(
        "short answers: "
        + ", ".join(f"{k} {v:.3f}" for k, v in results["open_answer_accuracy"].items())
    )
    for name, stats in results["latency_ms"].items():
        print(
            f"  {name:<12} p50 {stats['p50']:.1f} ms  p99 {stats['p99']:.1f} ms  (n={stats['n']})"
        )
    print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
