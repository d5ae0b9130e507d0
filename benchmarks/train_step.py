"""What one training step costs with its questions padded in 1, 2, 3 or 4 groups per answer kind.

A recurrent LM steps through every padded position, so the step time follows the padded tokens,
not the real ones. Each setting runs the same sampled batches (the `Batches` seed fixes them) on
the same model, forward and backward with the bundled recipe's probes, so the losses must agree
to float rounding; the times are printed beside the 1-group baseline of this run.

    python -m benchmarks.train_step
    python -m benchmarks.train_step --model DIR --scenes 60 --steps 6 --groups 1,3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.model.checkpoint import load_model_dir
from cobra_ros.paths import default_model_path
from cobra_ros.train import (RENDER_SIZE, Batches, as_model_inputs, loss_on_answers,
                             make_probes, scene_table, tower_features)
from cobra_ros.train.recipe import load_recipe, phase_config

RECIPE = Path(__file__).parents[1] / "recipes" / "langtable-tiny-v2.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the bundled one)")
    parser.add_argument("--scenes", type=int, default=60,
                        help="physics-world scenes of v2 questions to sample batches from")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    parser.add_argument("--groups", default="1,2,3,4",
                        help="comma-separated groups per answer kind; the first is the baseline")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    settings = [int(g) for g in args.groups.split(",")]

    data = questions.make_examples(7, args.scenes, image_size=None, render_size=RENDER_SIZE,
                                   n_blocks=(1, 8), kind="v2", progress=True)
    data.examples = [e for e in data.examples if e.relation != "locate"]
    model, tokenizer = load_model_dir(args.model or default_model_path())
    model.train()
    model.vision.requires_grad_(False).eval()
    features = tower_features(model, as_model_inputs(data.images, model.cfg))
    torch.manual_seed(0)
    # the probes and answer weighting of the bundled model's recipe
    cfg = phase_config(load_recipe(RECIPE), 0, None)
    probes = tuple(make_probes(cfg, model, features).values())
    table = scene_table(data.truths)

    results = {}
    bar = tqdm(total=len(settings) * (args.steps + 1), desc="steps", unit="step")
    for groups in settings:
        batches = Batches(data, tokenizer, seed=0, reword=True, groups=groups)
        times, losses, padded = [], [], 0
        for step in range(args.steps + 1):  # the first step warms up and is not timed
            start = time.perf_counter()
            picked, batch = batches.sample(16, 8)
            scene, tokens, mentions, places = probes
            out = loss_on_answers(model, features[picked], batch, tokenizer.bos_id, scene,
                                  (table[0][picked], table[1][picked]), tokens,
                                  cfg.weigh_answers, mentions, places)
            sum(out).backward()
            model.zero_grad(set_to_none=True)
            for probe in probes:
                if probe is not None:
                    probe.zero_grad(set_to_none=True)
            if step:
                times.append(time.perf_counter() - start)
                losses.append(out[0].item())
                padded += sum(ids.numel() for _, ids, *_ in batch)
            bar.update()
        results[groups] = (float(np.median(times)), losses, padded / args.steps)
    bar.close()

    base_time, base_losses, base_padded = results[settings[0]]
    print(f"{'groups':>6} {'s/step p50':>11} {'vs ' + str(settings[0]):>7} {'padded tokens':>14} "
          f"{'max loss diff':>14}")
    for groups, (t, losses, padded) in results.items():
        diff = max(abs(a - b) for a, b in zip(losses, base_losses))
        print(f"{groups:>6} {t:>11.2f} {base_time / t:>6.2f}x {padded:>14.0f} {diff:>14.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
