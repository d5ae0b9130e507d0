"""Evaluate a Cobra model on frames with ground truth: held-out physics-world scenes by default.

Every figure of the bundled model's acceptance list (issue 18): yes/no overall and per relation
beside the majority class; the same questions asked on another scene's image (the shuffled-image
control: a model answering from the words alone keeps its score there, one that looks falls to
~0.5); presence false "yes" for absent blocks of the set and for colours/shapes no block has;
counting per number of blocks; closest / extreme / where short answers; description block
precision / recall and region accuracy; held-out wording families (never trained on) overall and
negation apart; relation questions naming blocks by the dataset's synonyms ("the red block",
"the star"); yes/no under the randomised camera; the locate answer's boxes; latency p50 per
call. Every question goes through the engine calls the ROS node uses.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cobra_ros.langtable import questions, wording
from cobra_ros.langtable.replay import SyntheticSource, iter_frames
from cobra_ros.model import grounding
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT
from cobra_ros.stats import percentiles

EVAL_SEED_OFFSET = 1_000_003  # keeps the default eval episodes disjoint from anything trained on
SHORT = ("closest", "extreme", "where", "count", "colour", "shape")

def scene_examples(blocks, rng: np.random.Generator, size, families=wording.STANDARD) -> list:
    """The evaluation's questions about one frame: issue 18's data in `families`' words, with the
    standard wording of every short answer and no typing noise."""
    return questions.scene_examples_v2(blocks, rng, size, families, standard=True)


def parse_box(text: str):
    """The box of a locate answer as the node reads it (`model.grounding.parse_box`, strict);
    None when the node would refuse it."""
    try:
        return list(grounding.parse_box(text))
    except grounding.GroundingError:
        return None


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def evaluate(engine, scenes, seed: int = 0, max_new_tokens: int = 96, progress: bool = True,
             scoring: str = "plain", camera_scenes=()) -> dict:
    """`scenes`: (rgb, blocks) pairs with ground truth; `camera_scenes`: more of them seen
    through the randomised camera (their yes/no figure is reported apart).

    `scoring`: how yes/no questions are put and scored (`cobra_ros.model.scoring`: plain, or the
    release's pope)."""
    rng = np.random.default_rng(seed)
    names_rng = np.random.default_rng([seed, 1])  # own draws: the other figures stay as they were
    r = defaultdict(list)  # figure -> samples
    latency = defaultdict(list)
    samples = []
    states = []
    scenes = list(scenes)
    for rgb, blocks in tqdm(scenes, desc="eval", unit="scene", disable=not progress):
        state = engine.encode(rgb)
        states.append(state)
        latency["encode_ms"].append(state.encode_ms)
        size = (rgb.shape[1], rgb.shape[0])
        for ex in scene_examples(blocks, rng, size):
            t0 = time.perf_counter()
            if ex.label is not None:
                p = engine.yes_no(state, ex.question, scoring=scoring)
                latency["yes_no_ms"].append((time.perf_counter() - t0) * 1000)
                if ex.relation != questions.NONEXISTENT:  # always "No": its own figure
                    r[f"yes_no/{ex.relation}"].append((p >= 0.5) == ex.label)
                if not ex.label:
                    r[f"false_yes/{ex.relation}"].append(p >= 0.5)
            elif ex.relation == "describe":
                answer = engine.ask(state, DESCRIBE_PROMPT, max_new_tokens)
                latency["describe_ms"].append((time.perf_counter() - t0) * 1000)
                present = [b.name for b in blocks if b.visible >= 0.5]
                p, rec = questions.mention_scores(answer.text, present)
                r["describe/precision"].append(p)
                r["describe/recall"].append(rec)
                r["describe/regions"].append(questions.region_hits(answer.text, blocks))
                if len(samples) < 5:
                    samples.append({"truth": ex.answer, "model": answer.text})
            elif ex.relation == "locate":
                answer = engine.ask(state, ex.question, 24)
                latency["locate_ms"].append((time.perf_counter() - t0) * 1000)
                said, truth = parse_box(answer.text), parse_box(ex.answer)
                r["locate/parsed"].append(said is not None)
                r["locate/iou50"].append(said is not None and iou(said, truth) >= 0.5)
            else:
                answer = engine.ask(state, ex.question, 16)
                latency["short_ms"].append((time.perf_counter() - t0) * 1000)
                hit = answer.text.strip().rstrip(".").lower() == ex.answer.lower()
                r[f"short/{ex.relation}"].append(hit)
                if ex.relation == "count":
                    r[f"count/{ex.answer}"].append(hit)
        for ex in scene_examples(blocks, rng, size, wording.HELD_OUT_FAMILIES):
            if ex.label is not None:
                p = engine.yes_no(state, ex.question, scoring=scoring)
                key = "negation" if wording.negates(ex.family) else "other"
                r[f"held_out/{key}"].append((p >= 0.5) == ex.label)
        on_table = [b.name for b in blocks]
        for ex in scene_examples(blocks, names_rng, size):
            names = ex.label is not None and questions.synonym_names(ex, on_table, names_rng)
            if names:
                ex = questions.worded(ex, "plain", names_rng, standard=True, names=names)
                p = engine.yes_no(state, ex.question, scoring=scoring)
                r["names/yes_no"].append((p >= 0.5) == ex.label)
    # The shuffled-image control: each scene's questions asked on the next scene's image.
    for i, (rgb, blocks) in enumerate(scenes if len(scenes) > 1 else ()):
        other = states[(i + 1) % len(scenes)]
        for ex in scene_examples(blocks, rng, (rgb.shape[1], rgb.shape[0])):
            if ex.label is not None and ex.relation != questions.NONEXISTENT:
                p = engine.yes_no(other, ex.question, scoring=scoring)
                r[f"shuffled/{ex.relation}"].append((p >= 0.5) == ex.label)
    for rgb, blocks in camera_scenes:
        state = engine.encode(rgb)
        for ex in scene_examples(blocks, rng, (rgb.shape[1], rgb.shape[0])):
            if ex.label is not None:
                p = engine.yes_no(state, ex.question, scoring=scoring)
                r["camera/yes_no"].append((p >= 0.5) == ex.label)
    results = summarize(r, latency)
    results.update(scoring=scoring, description_samples=samples, n_scenes=len(scenes),
                   n_camera_scenes=len(camera_scenes))
    return results


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(r: dict, latency: dict) -> dict:
    """Figures from the per-question samples `evaluate` collects (None where nothing was asked)."""

    def group(prefix):
        keys = sorted(k for k in r if k.startswith(prefix + "/"))
        return {k.split("/", 1)[1]: _mean(r[k]) for k in keys}

    yes_no = [hit for k, v in r.items() if k.startswith("yes_no/") for hit in v]
    regions = r.get("describe/regions", [])
    counts = {k.split("/")[1]: (_mean(v), len(v)) for k, v in r.items() if k.startswith("count/")}
    held = r.get("held_out/negation", []) + r.get("held_out/other", [])
    return {
        "n_questions": len(yes_no),
        "yes_no_accuracy": _mean(yes_no),
        "per_relation": group("yes_no"),
        "per_relation_count": {k.split("/")[1]: len(v) for k, v in sorted(r.items())
                               if k.startswith("yes_no/")},
        "shuffled_image": group("shuffled"),
        "false_yes": group("false_yes"),
        "short_answers": group("short"),
        "count_by_blocks": {k: {"accuracy": a, "n": n}
                            for k, (a, n) in sorted(counts.items(), key=lambda kv: int(kv[0]))},
        "description_precision": _mean(r.get("describe/precision", [])),
        "description_recall": _mean(r.get("describe/recall", [])),
        "n_descriptions": len(r.get("describe/precision", [])),
        # of the blocks a description places ("... at the top left"), the share placed in their
        # true region
        "description_region_accuracy": (sum(a for a, _ in regions)
                                        / max(1, sum(n for _, n in regions))) if regions else None,
        "held_out_wording": _mean(held),
        "held_out_negation": _mean(r.get("held_out/negation", [])),
        "n_held_out": len(held),
        "dataset_names": _mean(r.get("names/yes_no", [])),
        "n_dataset_names": len(r.get("names/yes_no", [])),
        "camera_yes_no": _mean(r.get("camera/yes_no", [])),
        "n_camera": len(r.get("camera/yes_no", [])),
        "locate_iou50": _mean(r.get("locate/iou50", [])),
        "locate_parsed": _mean(r.get("locate/parsed", [])),
        "latency_ms": {k: percentiles(v) for k, v in sorted(latency.items()) if v},
    }


def sim_scenes(seed: int, n: int, randomize: float, progress: bool = True) -> list:
    """(rgb, blocks) of `n` held-out physics-world scenes: 1 to 8 blocks of BLOCK_8 at 320x180,
    through the dataset camera (randomize=0) or the randomised one (1)."""
    data = questions.make_examples(seed + EVAL_SEED_OFFSET, n, image_size=None,
                                   n_blocks=(1, 8), randomize=randomize, progress=progress)
    return list(zip(data.images, data.truths))


def replay_scenes(frames) -> list:
    """(rgb, blocks) of replayed frames that carry ground truth."""
    return [(f.rgb, f.truth.blocks) for f in frames if f.truth is not None]


def synthetic_frames(seed: int, episodes: int, stride: int = 4, size=(640, 360)):
    source = SyntheticSource(seed + EVAL_SEED_OFFSET, episodes, tuple(size))
    return [f for f in iter_frames(source) if f.step_index % stride == 0]


def report_lines(res: dict) -> list[str]:
    """The figures as cobra-eval prints them."""

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"yes/no accuracy {f(res['yes_no_accuracy'])} over {res['n_questions']} questions "
             f"({res['n_scenes']} scenes)"]
    lines.append(f"  {'relation':<17} {'acc':>6} {'shuffled':>9} {'n':>5}")
    for rel, acc in res["per_relation"].items():
        lines.append(f"  {rel:<17} {f(acc):>6} {f(res['shuffled_image'].get(rel)):>9} "
                     f"{res['per_relation_count'][rel]:>5}")
    fy = res["false_yes"]
    lines.append(f"presence false 'yes': absent blocks of the set {f(fy.get('presence'))}, "
                 f"colours/shapes that do not exist {f(fy.get(questions.NONEXISTENT))}")
    lines.append("counting by blocks: " + ", ".join(
        f"{k}: {f(v['accuracy'])} (n={v['n']})" for k, v in res["count_by_blocks"].items()))
    lines.append("short answers: " + ", ".join(
        f"{k} {f(v)}" for k, v in res["short_answers"].items()))
    lines.append(f"descriptions: precision {f(res['description_precision'])}, recall "
                 f"{f(res['description_recall'])}, region accuracy "
                 f"{f(res['description_region_accuracy'])} (n={res['n_descriptions']})")
    lines.append(f"held-out wording families {f(res['held_out_wording'])} "
                 f"(n={res['n_held_out']}), negation {f(res['held_out_negation'])}")
    lines.append(f"blocks called by the dataset's synonyms (\"the red block\", \"the star\"): "
                 f"yes/no {f(res.get('dataset_names'))} (n={res.get('n_dataset_names', 0)})")
    lines.append(f"randomised camera (4:3, +-5 cm, +-5 deg, +-10% zoom): yes/no "
                 f"{f(res['camera_yes_no'])} (n={res['n_camera']})")
    lines.append(f"locate: IoU >= 0.5 {f(res['locate_iou50'])}, well-formed boxes "
                 f"{f(res['locate_parsed'])}")
    for name, s in res["latency_ms"].items():
        lines.append(f"  {name:<12} p50 {s['p50']:.1f} ms  p99 {s['p99']:.1f} ms  (n={s['n']})")
    return lines


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rels = list(results["per_relation"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(rels))
    ax.bar(x - 0.2, [results["per_relation"][r] or 0 for r in rels], 0.4, label="model",
           color="tab:green")
    ax.bar(x + 0.2, [results["shuffled_image"].get(r) or 0 for r in rels], 0.4,
           label="shuffled images", color="tab:gray")
    ax.axhline(0.9, color="tab:red", lw=0.8, ls="--")
    ax.set_xticks(x, [r.replace("_", " ") for r in rels], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("yes/no accuracy")
    ax.legend(loc="lower right")
    acc = results["yes_no_accuracy"] or 0
    ax.set_title(f"yes/no: {acc:.3f} overall, {results['n_questions']} questions")
    bars = [results["description_precision"], results["description_recall"],
            results["description_region_accuracy"]]
    bx.bar([0, 1, 2], [v or 0 for v in bars], color=["tab:blue", "tab:orange", "tab:purple"])
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
