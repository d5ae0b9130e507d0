"""Locate on held-out PyBullet scenes: the issue's figures, beside the geometry's own floor.

For every block at least half visible in `--scenes` held-out layouts (320x180, the dataset
camera), the model is asked the release's grounding turn for "the <colour> <shape>"; its box is
compared with the simulator's visible-mask box (IoU, centre error in pixels) and its table point
(cobra_ros/model/grounding.py, the world's calibrated camera) with the block's true position.
The `truth box` row feeds the simulator's own boxes through the same geometry: the error a
perfect box still has (a visible outline's centre is not the block's centre), measured in the
same run.

    python -m benchmarks.locate --scenes 50
    python -m benchmarks.locate --model DIR --device cuda
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from cobra_ros.paths import default_model_path

HELD_OUT_SEED = 900_000  # layouts far from any training seed


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def table_camera(sim_camera):
    """The node's calibration of the world's camera (as from its CameraInfo)."""
    from cobra_ros.model.grounding import TableCamera

    K = sim_camera.K.copy()
    K[:2, 2] -= 0.5  # CameraInfo puts pixel centres on integers
    return TableCamera(K, sim_camera.width, sim_camera.height, sim_camera.rotation,
                       sim_camera.position)


def row(name: str, results: list, total: int) -> str:
    parsed = [r for r in results if r is not None]
    if not parsed:
        return f"{name:10s} {0:>7.2f} {'-':>9} {'-':>14} {'-':>15}"
    ious, centre, point = (np.array([r[i] for r in parsed]) for i in range(3))
    hits = np.sum(ious >= 0.5) / total  # over every block named: unparsed answers miss
    return (f"{name:10s} {len(parsed) / total:>7.2f} {hits:>9.2f} "
            f"{np.median(centre):>14.2f} {np.median(point) * 100:>15.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_path()),
                        help="Cobra model directory (default: the bundled one)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--scenes", type=int, default=20, help="held-out layouts")
    parser.add_argument("--block-mode", default="BLOCK_8", help="BLOCK_4, BLOCK_8 or N_CHOOSE_K")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    import cobra_ros
    from cobra_ros.langtable.sim import LangTableSim
    from cobra_ros.langtable.world import block_text
    from cobra_ros.model.grounding import GroundingError

    engine = cobra_ros.load(args.model, device=args.device)
    model, truth, errors, total = [], [], {}, 0
    with LangTableSim(block_mode=args.block_mode, size=(320, 180)) as sim:
        camera = table_camera(sim.camera)
        for i in tqdm(range(args.scenes), desc="scenes"):
            frame = sim.reset(seed=HELD_OUT_SEED + i)
            state = engine.encode(frame.rgb)
            for block in frame.in_set:
                if block.visible_fraction < 0.5:
                    continue
                total += 1
                true_box = np.array(block.bbox, float) / [320, 180, 320, 180]
                xy = np.array(block.xy)

                def measure(box):
                    centre = (np.array(box[:2]) + box[2:]) / 2 - (true_box[:2] + true_box[2:]) / 2
                    point = camera.table_point(box)[:2]
                    return (iou(box, true_box), float(np.linalg.norm(centre * [320, 180])),
                            float(np.linalg.norm(point - xy)))

                truth.append(measure(true_box))
                try:
                    found = engine.locate(state, f"the {block_text(block.name)}")
                except GroundingError as err:
                    model.append(None)
                    errors[err.text] = errors.get(err.text, 0) + 1
                    continue
                model.append(measure(np.array(found.box)))
    print(f"{total} visible blocks in {args.scenes} held-out {args.block_mode} scenes, 320x180, "
          f"{args.model}")
    print(f"{'boxes':10s} {'parsed':>7} {'IoU>=0.5':>9} {'centre px p50':>14} "
          f"{'point cm p50':>15}")
    print(row("model", model, total))
    print(row("truth box", truth, total))
    if errors:
        common = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
        print("unparsed answers, most common: " + ", ".join(f"{t!r} x{n}" for t, n in common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
