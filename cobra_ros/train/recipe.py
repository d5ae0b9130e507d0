"""A recipe: the whole training of a model as one file (recipes/*.yaml), run by one command.

    name: langtable-tiny-v2
    out: models/langtable-tiny-v2      # default model directory
    start_from: models/langtable-tiny-v1   # optional: a model directory the first phase continues
    hardware: what it was measured on, how long it took
    cache_dir: .cache/scenes           # rendered scenes, keyed by their arguments
    data:
      train: [{seed: 100, scenes: 6000, n_blocks: [1, 8], block_set: BLOCK_8, kind: v2}, ...]
      held_out: {seed: 90000, scenes: 60, kind: v2}   # scored during training
    base: {preset: langtable, lr: 0.0015, ...}         # TrainConfig fields of every phase
    phases:                                            # run in order, each continuing the last
      - {name: towers, steps: 0, tower_steps: 1200}
      - {name: lm, from: towers-only, steps: 1000, ...}
    eval: {seed: 0, scenes: 100}                       # cobra-eval's figures, into eval.json

A data entry holds `questions.make_examples` arguments (source, kind, n_blocks, block_set,
randomize, families, per_relation); the sets are concatenated. A phase holds TrainConfig fields
over `base`, and `from`: "previous" (default: its towers, projector, LM and tokenizer),
"towers-only" (the previous phase's towers under a fresh projector and LM) or "scratch". The
last phase writes the model directory, and with it recipe.yaml, version.json (the code's git
describe and commit, each phase's time) and eval.json / eval.png; the earlier phases' models go
to <out>.phases/ beside it, so a run cut short resumes at the phase it was in (`from_phase`).
"""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path

import yaml
from tqdm import tqdm

from cobra_ros.langtable import questions, world
from cobra_ros.train.config import TrainConfig, check_config
from cobra_ros.train.data import RENDER_SIZE, merge_sets
from cobra_ros.train.loop import train

DATA_KEYS = {"seed", "scenes", "source", "kind", "n_blocks", "block_set", "randomize",
             "families", "per_relation", "standard", "min_visible"}
FROM = ("previous", "towers-only", "scratch")
CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}
# managed by the recipe: a phase's place in the chain, not a knob
CHAINED = {"init_from", "towers_from"}


class RecipeError(ValueError):
    pass


def load_recipe(path, text: str | None = None) -> dict:
    """The recipe at `path` (or its `text`, already read), checked: unknown keys are errors, never
    silently ignored."""
    recipe = yaml.safe_load(Path(path).read_text() if text is None else text)
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping")
    check_recipe(recipe)
    return recipe


def check_recipe(recipe: dict) -> None:
    known = {"name", "out", "start_from", "hardware", "cache_dir", "data", "base", "phases",
             "eval", "notes"}
    if set(recipe) - known:
        raise RecipeError(f"unknown recipe keys {sorted(set(recipe) - known)}")
    if not recipe.get("phases"):
        raise RecipeError("a recipe needs at least one phase")
    data = recipe.get("data", {})
    for entry in list(data.get("train", [])) + ([data["held_out"]] if "held_out" in data else []):
        if set(entry) - DATA_KEYS:
            raise RecipeError(f"unknown data keys {sorted(set(entry) - DATA_KEYS)}")
        if "seed" not in entry or "scenes" not in entry:
            raise RecipeError(f"a data entry needs seed and scenes: {entry}")
    names = set()
    for phase in recipe["phases"]:
        keys = set(phase) - {"name", "from"}
        bad = (keys | set(recipe.get("base", {}))) - CONFIG_FIELDS
        if bad or keys & CHAINED:
            raise RecipeError(f"phase {phase.get('name')}: not TrainConfig fields a recipe may "
                              f"set: {sorted(bad | (keys & CHAINED))}")
        if phase.get("from", "previous") not in FROM:
            raise RecipeError(f"phase {phase.get('name')}: from must be one of {FROM}")
        if not phase.get("name") or phase["name"] in names:
            raise RecipeError("every phase needs a name of its own")
        names.add(phase["name"])
    check_config(phase_config(recipe, 0, recipe.get("start_from")))


def phase_config(recipe: dict, index: int, previous, overrides=None,
                 max_steps: int | None = None) -> TrainConfig:
    """Phase `index`'s TrainConfig: base, then the phase's fields, then `overrides`; chained to
    the `previous` phase's model directory as its `from` says."""
    phase = recipe["phases"][index]
    values = {**recipe.get("base", {}), **{k: v for k, v in phase.items()
                                            if k not in ("name", "from")}, **(overrides or {})}
    mode = phase.get("from", "previous")
    if previous is not None and mode == "previous":
        values["init_from"] = str(previous)
    elif previous is not None and mode == "towers-only":
        values["towers_from"] = str(previous)
    # continuing: the towers are already trained, and stay frozen unless the recipe sets
    # tower_steps (then stage 1 trains them on, on this recipe's scenes)
    towers_set = "tower_steps" in values
    if max_steps is not None:
        for key in ("steps", "tower_steps", "first_steps", "probe_steps", "warmup"):
            values[key] = min(values.get(key, getattr(TrainConfig, key)), max_steps)
    cfg = TrainConfig(**values)
    if (cfg.init_from or cfg.towers_from) and not towers_set:
        cfg.tower_steps = 0
    return cfg


def check_phases(recipe: dict, overrides=None, max_steps: int | None = None) -> None:
    """Every phase's TrainConfig checked, each chained as the run will chain it."""
    for i in range(len(recipe["phases"])):
        check_config(phase_config(recipe, i, "previous" if i else recipe.get("start_from"),
                                  overrides, max_steps))


def build_data(recipe: dict, max_scenes: int | None = None, log=print, workers: int = 1):
    """The recipe's training mix and held-out set, rendered (or loaded from its cache_dir).

    With a cache_dir and `workers` > 1, the sets are first rendered into the cache by that many
    processes (a set each: every scene depends only on its set's seed and index), then loaded."""
    data = recipe.get("data", {})
    cache = recipe.get("cache_dir")
    entries = list(data.get("train", [])) + ([data["held_out"]] if "held_out" in data else [])
    calls = [_entry_arguments(e, max_scenes) for e in entries]
    for entry, kw in zip(entries, calls):
        log(f"scenes: {kw['n_scenes']} of {entry}")
    if cache is not None and workers > 1 and len(calls) > 1:
        context = multiprocessing.get_context("spawn")  # a fresh PyBullet and torch each
        with ProcessPoolExecutor(min(workers, len(calls)), mp_context=context) as pool:
            list(pool.map(_render, [{**kw, "cache_dir": cache} for kw in calls]))
    made = [questions.make_examples(**kw, cache_dir=cache) for kw in calls]
    n_train = len(data.get("train", []))
    merged = merge_sets(made[:n_train]) if n_train else None
    held_out = made[n_train] if "held_out" in data else None
    return merged, held_out


def _entry_arguments(entry: dict, max_scenes: int | None) -> dict:
    """A data entry as questions.make_examples arguments."""
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()}
    kw["n_scenes"] = kw.pop("scenes")
    if "block_set" in kw:  # a name: BLOCK_4, BLOCK_8, or ALL (the N_CHOOSE_K subsets)
        sets = {"BLOCK_4": world.BLOCK_4, "BLOCK_8": world.BLOCK_8, "ALL": "ALL"}
        if kw["block_set"] not in sets:
            raise RecipeError(f"block_set must be one of {sorted(sets)}")
        kw["block_set"] = sets[kw["block_set"]]
    if max_scenes is not None:
        kw["n_scenes"] = min(kw["n_scenes"], max_scenes)
    return {**kw, "image_size": None, "render_size": RENDER_SIZE}


def _render(kw: dict) -> None:
    """One data set rendered into its cache (a worker process's job)."""
    questions.make_examples(**kw, progress=False)


def code_version() -> dict:
    """The code that trained: `git describe --always --dirty` and the commit, where git knows."""
    root = Path(__file__).resolve().parents[2]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"describe": git("describe", "--always", "--dirty", "--tags"),
            "commit": git("rev-parse", "HEAD")}


def phase_dir(out: Path, index: int, name: str) -> Path:
    """Where phase `index` (not the last) of a run into `out` saves its model."""
    return out.parent / f"{out.name}.phases" / f"{index}-{name}"


def first_phase(recipe: dict, out: Path, from_phase: str | None) -> tuple[int, str | None]:
    """Where a run starts: (the index of its first phase, the model directory that phase
    continues). A run resumed `from_phase` continues the phase before it as an earlier run into
    the same `out` saved it (phase_dir), so a run cut short loses only the phase it was in."""
    names = [p["name"] for p in recipe["phases"]]
    if from_phase is not None and from_phase not in names:
        raise RecipeError(f"from_phase {from_phase!r}: the recipe's phases are {names}")
    index = names.index(from_phase) if from_phase is not None else 0
    if index == 0:
        start, what = recipe.get("start_from"), "start_from"
    else:
        start = str(phase_dir(out, index - 1, names[index - 1]))
        what = f"phase {names[index - 1]}'s model"
    if start is not None and not (Path(start) / "config.json").is_file():
        raise RecipeError(f"{what} {start}: not a model directory (no config.json)")
    return index, start


def run_recipe(path, out=None, overrides=None, max_steps=None, max_scenes=None, evaluate=True,
               log=print, workers: int = 1, from_phase: str | None = None) -> dict:
    """Train the model `path` describes into `out` (default: the recipe's `out`); its scenes
    rendered by `workers` processes. `from_phase`: skip the phases before it (first_phase)."""
    # what trained is what was there at the start: edits and commits during the run do not count
    recipe_text, code = Path(path).read_text(), code_version()
    recipe = load_recipe(path, recipe_text)  # one read: what is recorded is what runs
    out = Path(out or recipe.get("out") or f"models/{recipe.get('name', 'model')}")
    skip, start = first_phase(recipe, out, from_phase)
    check_phases(recipe, overrides, max_steps)  # every phase checked before hours are spent
    t0 = time.perf_counter()
    data, held_out = build_data(recipe, max_scenes, log, workers)
    phases, previous = [], start
    bar = tqdm(recipe["phases"][skip:], desc="phases", unit="phase", position=0)
    for i, phase in enumerate(bar, start=skip):
        bar.set_postfix(phase=phase["name"])
        last = i == len(recipe["phases"]) - 1
        # earlier phases beside the model, not in it: the model directory stays its own size
        target = out if last else phase_dir(out, i, phase["name"])
        cfg = phase_config(recipe, i, previous, overrides, max_steps)
        if data is not None and max_scenes is not None:  # a smoke run's few scenes
            cfg.tower_batch = min(cfg.tower_batch, len(data.images))
            cfg.scenes_per_step = min(cfg.scenes_per_step, len(data.images))
        started = time.perf_counter()
        summary = train(target, cfg, log, data=data, held_out=held_out)
        phases.append({"name": phase["name"], "seconds": time.perf_counter() - started,
                       "final_loss": summary["final_loss"],
                       "held_out_yes_no": summary["held_out_yes_no"]})
        previous = target
    (out / "recipe.yaml").write_text(recipe_text)
    version = {**code, "recipe": str(path), "hardware": recipe.get("hardware"),
               "overrides": overrides or {}, "max_steps": max_steps, "max_scenes": max_scenes,
               "from_phase": from_phase, "continued": start,
               "seconds": time.perf_counter() - t0, "phases": phases}
    if evaluate and recipe.get("eval"):
        version["eval"] = write_eval(out, recipe["eval"], max_scenes)
    (out / "version.json").write_text(json.dumps(version, indent=1) + "\n")
    return version


def write_eval(out: Path, spec: dict, max_scenes=None) -> dict:
    """cobra-eval's figures for the model in `out`, into out/eval.json and eval.png."""
    import cobra_ros
    from cobra_ros import evaluate as ev

    n = spec.get("scenes", 100) if max_scenes is None else min(spec.get("scenes", 100),
                                                               max_scenes)
    seed = spec.get("seed", 0)
    engine = cobra_ros.load(out)
    results = ev.evaluate(engine, ev.sim_scenes(seed, n, 0.0),
                          camera_scenes=ev.sim_scenes(seed + 500_000, n, 1.0), seed=seed)
    results.update(model=engine.name, source="scenes", seed=seed)
    ev.write_report(results, out / "eval.json", f"{engine.name}: held-out physics-world scenes")
    return {"yes_no_accuracy": results["yes_no_accuracy"], "scenes": n}
