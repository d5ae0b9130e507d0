"""Do a model's frozen vision towers keep where a block is, to within a few pixels?

Locating a block within 4 px at 320 x 180 (issue 19) needs every stage of the model to keep where
the block is. This fits a head on the frozen towers of a model and prints, on held-out scenes,
the error in pixels (median, p90, share within 4 px) of each visible block's centre read from:

- `patches`: the towers' patch features (what the projector is fed), with a head per patch that
  says which blocks have their centre in it and where in the patch (stage 1's target). The
  block's centre is read from the patch its logit picks. `patch centres` beside it is the error
  of answering the centre of the right patch: what the patch grid alone gives.

    python tools/locate_probe.py --model models/langtable-tiny

The scenes are the recipe's (its cache_dir): training entry --fit for fitting, entry --score
for scoring (by default the dataset camera's set).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.model.checkpoint import load_model_dir
from cobra_ros.train import as_model_inputs, tower_features
from cobra_ros.train.data import BLOCK_INDEX, RENDER_SIZE, patch_targets, visible_blocks
from cobra_ros.train.recipe import _entry_arguments, load_recipe
from cobra_ros.train.towers import patch_loss


def block_centres(truths) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, blocks) visible mask and (N, blocks, 2) centres over the image width and height."""
    w, h = RENDER_SIZE
    shown = torch.zeros(len(truths), len(BLOCK_INDEX))
    where = torch.zeros(len(truths), len(BLOCK_INDEX), 2)
    for i, blocks in enumerate(truths):
        for b in visible_blocks(blocks):
            shown[i, BLOCK_INDEX[b.name]] = 1.0
            where[i, BLOCK_INDEX[b.name]] = torch.tensor([(b.u + 0.5) / w, (b.v + 0.5) / h])
    return shown, where


def pixel_errors(said: torch.Tensor, where: torch.Tensor, shown: torch.Tensor) -> np.ndarray:
    """Centre errors in pixels of the visible blocks, from positions over width and height."""
    scale = torch.tensor(RENDER_SIZE, dtype=torch.float32)
    error = ((said - where) * scale).norm(dim=-1)
    return error[shown > 0].numpy()


def fit(head: nn.Module, loss_of, n: int, steps: int) -> None:
    opt = torch.optim.AdamW(head.parameters(), 3e-3)
    pick = torch.Generator().manual_seed(0)
    for step in tqdm(range(steps), desc="patches", unit="step", leave=False):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = loss_of(torch.randint(n, (64,), generator=pick))
        opt.zero_grad()
        loss.backward()
        opt.step()


def patch_probe(fit_set, score_set, grid, size, steps):
    """Errors of the centre read from the picked patch, and of that patch's centre alone."""
    features, truths = fit_set
    present, offset = patch_targets(truths, grid, size)
    mean, std = features.mean((0, 1)), features.std((0, 1)) + 1e-3
    head = nn.Linear(features.shape[-1], len(BLOCK_INDEX) + 2)

    def loss_of(i):
        return patch_loss(head((features[i] - mean) / std), present[i], offset[i])

    fit(head, loss_of, len(features), steps)
    features, truths = score_set
    shown, where = block_centres(truths)
    with torch.no_grad():
        out = head((features - mean) / std)
    picked = out[..., :-2].argmax(1)  # (N, blocks): the patch each block's logit picks
    row, col = picked // grid, picked % grid
    inside = torch.sigmoid(torch.gather(out[..., -2:], 1, picked[..., None].expand(-1, -1, 2)))
    said = torch.stack([col + inside[..., 0], row + inside[..., 1]], -1) / grid
    centre = torch.stack([col + 0.5, row + 0.5], -1) / grid
    return pixel_errors(said, where, shown), pixel_errors(centre, where, shown)


def summary(errors: np.ndarray) -> str:
    return (f"p50 {np.median(errors):5.2f} px, p90 {np.percentile(errors, 90):5.2f} px, "
            f"within 4 px {np.mean(errors <= 4):.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/langtable-tiny", help="model directory")
    parser.add_argument("--recipe", default="recipes/langtable-tiny-v2.yaml",
                        help="recipe whose scene sets (and cache_dir) to use")
    parser.add_argument("--fit", type=int, default=0,
                        help="training entry of the recipe to fit on")
    parser.add_argument("--score", type=int, default=3,
                        help="training entry of the recipe to score on (another seed than --fit)")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps of the head")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    recipe = load_recipe(args.recipe)
    model, _ = load_model_dir(args.model)
    model.eval()
    sets = []
    for index in (args.fit, args.score):
        entry = recipe["data"]["train"][index]
        data = questions.make_examples(**_entry_arguments(entry, None),
                                       cache_dir=recipe.get("cache_dir"))
        sets.append((tower_features(model, as_model_inputs(data.images, model.cfg)), data.truths))
    size = model.cfg.dino.image_size
    print(f"{args.model}: towers at {size} px, {size // 14} x {size // 14} patches; fit on "
          f"{len(sets[0][1])} scenes, scored on {len(sets[1][1])} scenes at "
          f"{RENDER_SIZE[0]} x {RENDER_SIZE[1]}")
    said, centres = patch_probe(*sets, size // 14, size, args.steps)
    print(f"patches        ({len(said)} blocks): {summary(said)}", flush=True)
    print(f"patch centres  ({len(centres)} blocks): {summary(centres)}", flush=True)


if __name__ == "__main__":
    main()
