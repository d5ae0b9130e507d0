"""Cost of the release's PIL resampling against the torch resize it replaced, per frame.

    python benchmarks/preprocess.py [--size 384] [--frames 20] [--shape 480x640]

Times `Preprocess` (resize + ToTensor + Normalize for both towers) on CPU frames, for each strategy
with the release's PIL path and for resize-naive with the torch path our bundled model keeps, and
prints each against the torch baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

from cobra_ros.model.config import preset
from cobra_ros.model.vision import Preprocess


def per_frame_ms(pre: Preprocess, frames: list[np.ndarray], repeats: int) -> float:
    pre(frames[0][None])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for frame in frames:
            pre(frame[None])
    return (time.perf_counter() - t0) * 1000 / (repeats * len(frames))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=384, help="model input size S (default: the release's)"
    )
    parser.add_argument("--frames", type=int, default=20, help="distinct random frames")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the frames")
    parser.add_argument("--shape", default="480x640", help="frame HxW")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    h, w = (int(v) for v in args.shape.split("x"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.frames)]
    base = preset("tiny")
    towers = dict(
        dino=replace(base.dino, image_size=args.size),
        siglip=replace(base.siglip, image_size=args.size),
    )
    runs = [
        ("resize-naive", "torch"),
        ("resize-naive", "pil"),
        ("resize-crop", "pil"),
        ("letterbox", "pil"),
    ]
    results = {}
    for strategy, resample in tqdm(runs, desc="preprocess", unit="config"):
        cfg = replace(base, **towers, image_resize_strategy=strategy, resample=resample)
        results[(strategy, resample)] = per_frame_ms(Preprocess(cfg), frames, args.repeats)
    baseline = results[("resize-naive", "torch")]
    print(f"{h}x{w} -> {args.size}x{args.size}, one thread, ms per frame (both towers):")
    for (strategy, resample), ms in results.items():
        print(
            f"  {strategy:<13} {resample:<6} {ms:7.2f} ms  "
            f"x{ms / baseline:.2f} of torch resize-naive"
        )


if __name__ == "__main__":
    main()
