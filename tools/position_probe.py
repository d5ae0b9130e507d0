"""Does a pooled image token still say where its blocks are? Probes on frozen tower features.

Each probe is a fresh LDPv2 projector (`fused-ldpnet`, or `fused-ldpnet-pos` with its position
embedding) pooling to a grid, with a linear head that must give every block's presence and board
position. Prints held-out balanced presence accuracy, mean position error (board-normalised) and
how often two blocks > 0.1 apart are put in the right left/right order.

    python tools/position_probe.py --model models/langtable-tiny
    python tools/position_probe.py --model models/langtable-tiny --own   # the model's own tokens
"""
from __future__ import annotations

import argparse

import torch
from torch import nn
from tqdm import tqdm

from cobra_ros.langtable import questions
from cobra_ros.model.checkpoint import load_model_dir
from cobra_ros.model.projector import Projector
from cobra_ros.train import (
    RENDER_SIZE,
    TokenProbe,
    as_model_inputs,
    scene_table,
    split_table,
    table_loss,
    tower_features,
)


class PooledProbe(nn.Module):
    """A projector (fresh, or a model's own, frozen) with cobra-train's TokenProbe head on it."""

    def __init__(self, projector: nn.Module, n_tokens: int, width: int = 192):
        super().__init__()
        self.projector = projector
        self.tokens = TokenProbe(n_tokens, width)

    def forward(self, features):
        # (N, 3K), laid out as split_table reads it
        return self.tokens.head(self.projector(features).flatten(1))


def scores(out, present, where) -> dict:
    logits, xy = split_table(out, present.shape[1])
    hit = ((logits > 0).float() == present).float()
    balanced = 0.5 * (
        (hit * present).sum() / present.sum() + (hit * (1 - present)).sum() / (1 - present).sum()
    )
    error = ((xy - where).abs().mean(-1) * present).sum() / present.sum()
    right = total = 0
    for k in range(len(present)):
        shown = torch.nonzero(present[k]).flatten().tolist()
        for i, a in enumerate(shown):
            for b in shown[i + 1:]:
                if abs(where[k, a, 1] - where[k, b, 1]) > 0.1:
                    total += 1
                    right += int((xy[k, a, 1] < xy[k, b, 1]) == (where[k, a, 1] < where[k, b, 1]))
    return {
        "presence": float(balanced),
        "xy_error": float(error),
        "left_right_order": right / max(1, total),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/langtable-tiny")
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--grids", default="2,1,8")
    parser.add_argument(
        "--own", action="store_true", help="probe the model's own image tokens instead"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, _ = load_model_dir(args.model)
    data = {}
    for name, seed, n in (("train", 0, args.scenes), ("held_out", 10_000, args.held_out)):
        scenes = questions.make_examples(seed, n, image_size=None, render_size=RENDER_SIZE)
        with torch.no_grad():
            data[name] = (tower_features(model.eval(), as_model_inputs(scenes.images, model.cfg)),
                          *scene_table(scenes.truths))
    features, present, where = data["train"]
    if args.own:
        tokens = model.projector(features[:1]).shape[1]
        probes = [
            (
                f"{args.model}'s own tokens",
                PooledProbe(model.projector.requires_grad_(False), tokens, model.cfg.llm.d_model),
            )
        ]
    else:
        probes = [
            (
                f"{kind:<16} grid {grid}",
                PooledProbe(
                    Projector(kind, features.shape[2], 192, grid, features.shape[1]), grid * grid
                ),
            )
            for grid in map(int, args.grids.split(","))
            for kind in ("fused-ldpnet", "fused-ldpnet-pos")
        ]
    for name, probe in probes:
        opt = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], 2e-3)
        pick = torch.Generator().manual_seed(1)
        for _ in tqdm(range(args.steps), desc=name, unit="step", leave=False):
            i = torch.randint(len(features), (64,), generator=pick)
            loss = table_loss(probe(features[i]), present[i], where[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            result = scores(probe(data["held_out"][0]), *data["held_out"][1:])
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
