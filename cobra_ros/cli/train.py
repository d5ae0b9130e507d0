"""cobra-train: train a small Cobra on synthetic Language-Table scenes and save it in the release layout."""
from __future__ import annotations

import argparse
from dataclasses import fields

from cobra_ros.train import TrainConfig, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="model directory to write")
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    summary = train(out, TrainConfig(**args))
    print(f"saved {out} in {summary['seconds']:.0f}s: final loss {summary['final_loss']:.3f}, "
          f"held-out yes/no accuracy {summary['held_out_yes_no']:.3f}")


if __name__ == "__main__":
    main()
