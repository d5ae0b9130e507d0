"""Evaluate a Cobra model on replayed frames with ground truth (held-out synthetic episodes by
default).

Yes/no accuracy per relation next to the majority-class baseline, block-mention precision/recall of
descriptions (hallucinated blocks count against precision), exact-match accuracy of short answers,
and latency per query. Every question goes through the same engine calls the ROS node uses.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.langtable.replay import SyntheticSource, iter_frames
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT

EVAL_SEED_OFFSET = 1_000_003  # keeps the default eval episodes disjoint from anything trained on


def frame_examples(frame, rng: np.random.Generator) -> list[questions.Example]:
    return questions.scene_examples(frame.truth.blocks, rng, per_relation=1)


def evaluate(
    engine,
    frames,
    seed: int = 0,
    max_new_tokens: int = 96,
    progress: bool = True,
    scoring: str = "plain",
) -> dict:
    """`frames`: ReplayFrames with ground truth (frames without it are skipped).

    `scoring`: how yes/no questions are put and scored (`cobra_ros.model.scoring`: plain, or the
    release's pope)."""
    rng = np.random.default_rng(seed)
    yes_no = defaultdict(list)  # relation -> [(label, p_yes)]
    open_hits = defaultdict(list)
    precision, recall, regions, samples = [], [], [], []
    latency = defaultdict(list)
    skipped = 0
    for frame in tqdm(frames, desc="eval", unit="frame", disable=not progress):
        if frame.truth is None:
            skipped += 1
            continue
        state = engine.encode(frame.rgb)
        latency["encode_ms"].append(state.encode_ms)
        for ex in frame_examples(frame, rng):
            t0 = time.perf_counter()
            if ex.label is not None:
                p = engine.yes_no(state, ex.question, scoring=scoring)
                latency["yes_no_ms"].append((time.perf_counter() - t0) * 1000)
                yes_no[ex.relation].append((ex.label, p))
            elif ex.relation == "describe":
                answer = engine.ask(state, DESCRIBE_PROMPT, max_new_tokens)
                latency["describe_ms"].append((time.perf_counter() - t0) * 1000)
                present = [b.name for b in frame.truth.blocks if b.visible >= 0.5]
                p, r = questions.mention_scores(answer.text, present)
                precision.append(p)
                recall.append(r)
                regions.append(questions.region_hits(answer.text, frame.truth.blocks))
                if len(samples) < 5:
                    samples.append({"truth": ex.answer, "model": answer.text})
            else:
                answer = engine.ask(state, ex.question, 16)
                latency["ask_ms"].append((time.perf_counter() - t0) * 1000)
                open_hits[ex.relation].append(
                    answer.text.strip().rstrip(".").lower() == ex.answer.lower()
                )
    results = summarize(yes_no, open_hits, precision, recall, regions, latency, samples, skipped)
    results["scoring"] = scoring
    return results


def summarize(yes_no, open_hits, precision, recall, regions, latency, samples, skipped) -> dict:
    pairs = [pair for rel in yes_no.values() for pair in rel]
    labels = np.array([label for label, _ in pairs], dtype=bool)
    correct = np.array([(p >= 0.5) == label for label, p in pairs], dtype=bool)

    def majority(ls):
        ls = np.asarray(ls, dtype=bool)
        return float(max(ls.mean(), 1 - ls.mean())) if len(ls) else float("nan")

    return {
        "n_questions": int(len(pairs)),
        "yes_no_accuracy": float(correct.mean()) if len(pairs) else float("nan"),
        "majority_baseline": majority(labels),
        "per_relation": {
            rel: float(np.mean([(p >= 0.5) == label for label, p in v]))
            for rel, v in sorted(yes_no.items())
        },
        "per_relation_majority": {
            rel: majority([label for label, _ in v]) for rel, v in sorted(yes_no.items())
        },
        "per_relation_count": {rel: len(v) for rel, v in sorted(yes_no.items())},
        "description_precision": float(np.mean(precision)) if precision else float("nan"),
        "description_recall": float(np.mean(recall)) if recall else float("nan"),
        "n_descriptions": len(precision),
        # of the blocks a description places ("... at the top left"), the share placed in their
        # true region
        "description_region_accuracy": sum(r for r, _ in regions)
        / max(1, sum(n for _, n in regions)),
        "open_answer_accuracy": {rel: float(np.mean(v)) for rel, v in sorted(open_hits.items())},
        "latency_ms": {
            k: {
                "p50": float(np.percentile(v, 50)),
                "p99": float(np.percentile(v, 99)),
                "n": len(v),
            }
            for k, v in sorted(latency.items())
        },
        "frames_without_truth": skipped,
        "description_samples": samples,
    }


def synthetic_frames(seed: int, episodes: int, stride: int = 4, size=(640, 360)):
    source = SyntheticSource(seed + EVAL_SEED_OFFSET, episodes, tuple(size))
    return [f for f in iter_frames(source) if f.step_index % stride == 0]


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rels = list(results["per_relation"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(rels))
    ax.bar(
        x - 0.2, [results["per_relation"][r] for r in rels], 0.4, label="model", color="tab:green"
    )
    ax.bar(
        x + 0.2,
        [results["per_relation_majority"][r] for r in rels],
        0.4,
        label="majority class",
        color="tab:gray",
    )
    ax.axhline(0.8, color="tab:red", lw=0.8, ls="--")
    ax.set_xticks(x, [r.replace("_", " ") for r in rels], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("yes/no accuracy")
    ax.legend(loc="lower right")
    ax.set_title(
        f"yes/no: {results['yes_no_accuracy']:.3f} overall, {results['n_questions']} questions"
    )
    bx.bar(
        [0, 1, 2],
        [
            results["description_precision"],
            results["description_recall"],
            results["description_region_accuracy"],
        ],
        color=["tab:blue", "tab:orange", "tab:purple"],
    )
    bx.set_xticks([0, 1, 2], ["precision", "recall", "region"])
    bx.set_ylim(0, 1)
    bx.set_title("blocks in descriptions")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, json_path: str | Path, title: str) -> Path:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    png = json_path.with_suffix(".png")
    plot(results, png, title)
    return png
