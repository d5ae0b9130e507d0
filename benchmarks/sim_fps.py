"""Frames per second of the PyBullet Language-Table world: step + render + ground truth.

    python benchmarks/sim_fps.py [--steps 40] [--sizes 320x180,640x360]

Each timed frame is one `LangTableSim.step` (24 physics sub-steps and the arm's inverse
kinematics), its TinyRenderer frame with segmentation, and every block's ground truth. The
baselines, measured in the same run and printed as ratios: the world's render alone, and a frame
of the 2-D look-alike (`langtable.world.render`) at the same size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from cobra_ros.langtable import world
from cobra_ros.langtable.sim import LangTableSim


def _rate(fn, n: int, desc: str) -> float:
    fn()  # warm
    t0 = time.perf_counter()
    for _ in tqdm(range(n), desc=desc, unit="frame", leave=False):
        fn()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed frames per size and mode")
    parser.add_argument("--sizes", default="320x180,640x360", help="comma-separated WxH")
    parser.add_argument("--seed", type=int, default=0, help="reset seed and action seed")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"{'size':>8} {'step+render+truth':>18} {'render only':>12} {'2-D drawing':>12} "
          f"{'ratio to render':>16} {'ratio to 2-D':>13}")
    for spec in args.sizes.split(","):
        w, h = (int(v) for v in spec.lower().split("x"))
        sim = LangTableSim(block_mode="BLOCK_8", seed=args.seed, size=(w, h))
        scene = world.sample_scene(np.random.default_rng(args.seed))

        def step():  # a random walk of the effector; the target stays clipped to the workspace
            sim.step(rng.uniform(-0.03, 0.03, 2))

        full = _rate(step, args.steps, f"{spec} step+render+truth")
        render = _rate(sim.render, args.steps, f"{spec} render")
        drawn = _rate(lambda: world.render(scene, (w, h)), args.steps, f"{spec} 2-D")
        print(f"{spec:>8} {full:>14.1f} fps {render:>8.1f} fps {drawn:>8.1f} fps "
              f"{full / render:>16.2f} {full / drawn:>13.3f}")
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
