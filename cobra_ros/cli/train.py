"""cobra-train: train a small Cobra from a recipe file (recipes/*.yaml), saved in release layout
with the recipe, the code version (version.json), loss.png and cobra-eval's eval.json beside it.

Research knobs live in the recipe (its `base` and `phases` hold TrainConfig fields, listed in
cobra_ros/train/config.py); --set overrides one of them for every phase, for a quick try."""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

import yaml

from cobra_ros.train.config import TrainConfig
from cobra_ros.train.recipe import CHAINED, RecipeError, check_phases, load_recipe, run_recipe


def parse_overrides(pairs) -> dict:
    """["memory_init=false", "lr=1e-3"] as TrainConfig values of the fields' own types."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults or key in CHAINED:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of the "
                             f"TrainConfig fields {sorted(set(defaults) - CHAINED)}")
        value = yaml.safe_load(text) if text.strip() else ""
        kind = type(defaults[key])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and not isinstance(value, str):
            value = text.strip()
        if type(value) is not kind:
            raise ValueError(f"--set {key}: expected a {kind.__name__}, got {text!r}")
        out[key] = value
    return out


def parse_args(argv=None):
    """The parsed arguments, the recipe they name and the --set overrides, all checked."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", required=True,
                        help="recipe file, e.g. recipes/langtable-tiny-v2.yaml")
    parser.add_argument("--out", default=None,
                        help="model directory to write (default: the recipe's `out`)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a TrainConfig field in every phase (repeatable), e.g. "
                             "--set threads=2")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap every phase's steps (LM and towers) at this many: a smoke run")
    parser.add_argument("--max-scenes", type=int, default=None,
                        help="cap every data set at this many scenes (with --max-steps: a smoke "
                             "run that renders little)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes that render the recipe's scene sets into its cache_dir "
                             "(default: one per CPU core)")
    parser.add_argument("--from-phase", default=None, metavar="NAME",
                        help="start at this phase of the recipe, continuing the model the phase "
                             "before it saved in <out>.phases/ (a run cut short, resumed)")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the final cobra-eval figures (eval.json)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        recipe = load_recipe(args.recipe)
        check_phases(recipe, overrides, args.max_steps)
    except (ValueError, OSError, yaml.YAMLError) as err:
        parser.error(str(err))
    return args, recipe, overrides


def main(argv=None) -> None:
    args, _, overrides = parse_args(argv)
    try:
        version = run_recipe(args.recipe, args.out, overrides, args.max_steps, args.max_scenes,
                             evaluate=not args.no_eval, workers=args.workers,
                             from_phase=args.from_phase)
    except RecipeError as err:
        raise SystemExit(f"cobra-train: {err}")
    for phase in version["phases"]:
        loss = "n/a" if phase["final_loss"] is None else f"{phase['final_loss']:.3f}"
        print(f"phase {phase['name']}: {phase['seconds']:.0f}s, final loss {loss}")
    if "eval" in version:
        print(f"held-out yes/no {version['eval']['yes_no_accuracy']:.3f} "
              f"({version['eval']['scenes']} scenes; all figures in eval.json)")
    print(f"saved in {version['seconds']:.0f}s, code {version['describe']}")


if __name__ == "__main__":
    main()
