"""Figures of the PyBullet Language-Table world against the real simulator's reference values.

    python benchmarks/sim_figures.py [--resets 120] [--picture docs/langtable_sim.png]

Random resets cycle through BLOCK_4, BLOCK_8 and N_CHOOSE_K; each is followed by 0-10 random
actions (uniform in the action box), then a 320x180 frame of the dataset camera is measured
from the simulator's segmentation mask. The reference values are those measured on the real
simulator's own frames (the Language-Table reference facts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cobra_ros.langtable.sim import BLOCK_MODES, LangTableSim
from cobra_ros.langtable.sim.scenes import SceneOptions, sim_scene
from cobra_ros.langtable.world import COLOURS

REFERENCE = {
    "board": (47, 47, 47), "ground left": (162, 186, 224), "ground right": (239, 239, 239),
    "red": (194, 77, 77), "blue": (77, 77, 194), "green": (78, 196, 78), "yellow": (191, 191, 76),
}
REFERENCE_BLOCK_PX = 357
REFERENCE_ARM = (0.038, 0.24)  # median, max share of the frame
REFERENCE_NEIGHBOUR = 0.28
PLANE_ID = 0  # the first body the world loads


def measure(resets: int, seed: int, original: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    sim = LangTableSim(seed=seed, size=(320, 180), original=original)
    sums = {k: [] for k in REFERENCE}
    block_px, block_px_all, arm, neighbours = [], [], [], []
    upright = total = off_board = 0
    for i in tqdm(range(resets), desc="resets", unit="reset"):
        frame = sim.reset(seed=seed * 100_000 + i, block_mode=BLOCK_MODES[i % 3])
        xy = np.array([b.xy for b in frame.in_set])
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        neighbours += list(d.min(1) < 0.05)
        for _ in range(int(rng.integers(0, 11))):
            sim.step(rng.uniform(-0.1, 0.1, 2))
        frame = sim.observe(keep_segmentation=True)
        rgb, seg = frame.rgb.reshape(-1, 3), frame.segmentation.ravel()
        left = (np.arange(seg.size) % frame.camera.width) < frame.camera.width / 2
        sums["board"].append(rgb[seg == sim.board_id])
        sums["ground left"].append(rgb[(seg == PLANE_ID) & left])
        sums["ground right"].append(rgb[(seg == PLANE_ID) & ~left])
        for b in frame.in_set:
            sums[b.colour].append(rgb[seg == sim.block_ids[b.name]])
            upright += b.upright
            off_board += not b.on_board
            total += 1
            if b.pixels:
                block_px_all.append(b.pixels)
            if b.visible_fraction >= 0.9:
                block_px.append(b.pixels)
        arm.append(np.isin(seg, (sim.arm_id, sim.effector_id)).mean())
    sim.close()
    means = {k: np.concatenate(v).mean(0) for k, v in sums.items()}
    return dict(means=means, block_px=np.mean(block_px), block_px_all=np.mean(block_px_all),
                arm=(np.median(arm), np.max(arm)), neighbour=np.mean(neighbours),
                upright=(upright, total), off_board=(off_board, total))


def _tile(img: np.ndarray, label: str, size=(640, 360), strip: int = 24) -> np.ndarray:
    """Fit img into a white size tile (nearest-neighbour so native pixels stay visible), with its
    label on a strip below."""
    w, h = size
    scale = min(w / img.shape[1], h / img.shape[0])
    fit = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                     interpolation=cv2.INTER_NEAREST)
    out = np.full((h + strip, w, 3), 255, np.uint8)
    y, x = (h - fit.shape[0]) // 2, (w - fit.shape[1]) // 2
    out[y:y + fit.shape[0], x:x + fit.shape[1]] = fit
    cv2.putText(out, label, (8, h + strip - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    return out


def picture(path: Path, seed: int) -> None:
    tiles = []
    small = LangTableSim(seed=seed, size=(320, 180))
    large = LangTableSim(seed=seed, size=(640, 360))
    for k, mode in enumerate(BLOCK_MODES):
        tiles.append(_tile(small.reset(seed=seed + k, block_mode=mode).rgb,
                           f"{mode}, seed {seed + k}, 320x180 (native)"))
    for k, mode in enumerate(BLOCK_MODES):
        frame = large.reset(seed=seed + k, block_mode=mode)
        for _ in range(6):  # a few pushes toward the board centre
            frame = large.step(np.clip(np.subtract((0.4, 0.0), frame.effector_target_xy), -0.05,
                                       0.05))
        tiles.append(_tile(frame.rgb, f"{mode}, seed {seed + k}, 640x360, after 6 steps"))
    rng = np.random.default_rng(seed)
    for k in range(3):
        opts = SceneOptions(four_three=1.0 if k == 2 else 0.0)
        names = [b for b in ("red_moon", "blue_cube", "green_star", "yellow_pentagon",
                             "red_pentagon", "blue_moon", "green_cube", "yellow_star")][:4 + 2 * k]
        rendered = sim_scene(large, rng, names, (640, 360), opts)
        h, w = rendered.rgb.shape[:2]
        tiles.append(_tile(rendered.rgb, f"randomised camera + light, {w}x{h}"))
    small.close()
    large.close()
    rows = [np.concatenate(tiles[r * 3:r * 3 + 3], axis=1) for r in range(3)]
    sheet = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resets", type=int, default=120,
                        help="random resets to measure (0: only the picture)")
    parser.add_argument("--seed", type=int, default=0, help="seed of resets and actions")
    parser.add_argument("--picture", type=Path, default=None,
                        help="also write the picture of frames here (docs/langtable_sim.png)")
    parser.add_argument("--original", action="store_true",
                        help="measure Google's language_table env instead (when it is installed)")
    args = parser.parse_args(argv)
    if args.picture is not None:
        picture(args.picture, args.seed)
        print(f"wrote {args.picture}")
    if args.resets < 1:
        return 0
    m = measure(args.resets, args.seed, args.original)
    print(f"{'mean colour (RGB)':<22} {'ours':>18} {'reference':>18}")
    for key in ("board", "ground left", "ground right") + COLOURS:
        ours = "(" + ", ".join(f"{v:.0f}" for v in m["means"][key]) + ")"
        ref = "(" + ", ".join(str(v) for v in REFERENCE[key]) + ")"
        print(f"{key:<22} {ours:>18} {ref:>18}")
    print(f"{'block px at 320x180':<22} {m['block_px']:>18.0f} {REFERENCE_BLOCK_PX:>18}"
          f"   (unoccluded; {m['block_px_all']:.0f} over every visible block)")
    print(f"{'arm share of frame':<22} {m['arm'][0]:>8.3f} median {m['arm'][1]:.3f} max "
          f"{REFERENCE_ARM[0]:>5.3f} / {REFERENCE_ARM[1]:.2f}")
    print(f"{'neighbour within 5 cm':<22} {m['neighbour']:>18.2f} {REFERENCE_NEIGHBOUR:>18.2f}")
    print(f"{'upright after pushes':<22} {m['upright'][0]:>11} of {m['upright'][1]:<4} "
          f"{'1438 of 1442':>18}")
    print(f"{'off the board':<22} {m['off_board'][0]:>11} of {m['off_board'][1]:<4} "
          f"{'36 of 1442':>18}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
