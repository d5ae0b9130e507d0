"""cobra-params: parameter counts of a configuration, built on the meta device (no memory)."""

from __future__ import annotations

import argparse

import torch

from cobra_ros.model.checkpoint import read_config
from cobra_ros.model.config import GPT_NEOX_VOCAB, preset, preset_names


def count_parameters(cfg) -> dict[str, int]:
    from cobra_ros.model.cobra import Cobra

    with torch.device("meta"):
        model = Cobra(cfg)

    def count(module):  # tied embedding / LM head counted once, as parameters() does
        return sum(p.numel() for p in module.parameters())

    return {
        "dino": count(model.vision.dino),
        "siglip": count(model.vision.siglip),
        "projector": count(model.projector),
        "llm": count(model.llm),
        "total": count(model),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--preset",
        default="cobra-3b",
        choices=preset_names(),
        help="a named configuration (default: cobra-3b, the release's shapes)",
    )
    group.add_argument("--model", help="a model directory (reads its config.json)")
    args = parser.parse_args(argv)
    if args.model:
        cfg = read_config(args.model)
    else:
        cfg = preset(args.preset, vocab_size=GPT_NEOX_VOCAB if args.preset == "cobra-3b" else None)
    counts = count_parameters(cfg)
    print(
        f"{cfg.model_id}: vision {cfg.vision_backbone_id}, LLM {cfg.llm_backbone_id}, "
        f"projector {cfg.arch_specifier}"
    )
    for name, n in counts.items():
        print(f"  {name:<10} {n:>15,d}  ({n / 1e6:,.1f}M)")


if __name__ == "__main__":
    main()
