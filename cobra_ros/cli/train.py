"""cobra-train: train a small Cobra on synthetic Language-Table scenes, saved in release layout."""
from __future__ import annotations

import argparse
from dataclasses import fields

from cobra_ros.train import TrainConfig, check_config, train


def _flag(text: str) -> bool:
    """`--memory-init false` must mean False (bool("false") is True)."""
    if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes", "on")


def parse_args(argv=None) -> tuple[str, TrainConfig]:
    """The output directory and the TrainConfig that the command line asks for."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="model directory to write")
    for f in fields(TrainConfig):
        kind = _flag if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    cfg = TrainConfig(**args)
    try:
        check_config(cfg)
    except ValueError as err:
        parser.error(str(err))
    return out, cfg


def main(argv=None) -> None:
    out, cfg = parse_args(argv)
    summary = train(out, cfg)
    # --steps 0: the towers (if any) and an untrained LM were saved
    if summary["final_loss"] is None:
        print(f"saved {out} in {summary['seconds']:.0f}s without LM steps")
    else:
        print(f"saved {out} in {summary['seconds']:.0f}s: final loss {summary['final_loss']:.3f}, "
              f"held-out yes/no accuracy {summary['held_out_yes_no']:.3f}")


if __name__ == "__main__":
    main()
