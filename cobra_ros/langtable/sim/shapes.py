"""Block meshes generated here: each footprint of `world.FOOTPRINTS` extruded to a prism.

The footprints are sized to the extents the Language-Table reference facts give for the dataset's
meshes (cube 3.97 cm, moon 5.25 x 2.57 cm, star 4.44 x 4.08 cm, pentagon 4.44 x 4.13 cm) and every
block is 0.0381 m tall. The body origin is the footprint's reference point on the block's bottom
face, as in the original assets, so a resting block sits at z = 0.
"""

from __future__ import annotations

from functools import lru_cache

import mapbox_earcut
import numpy as np

from cobra_ros.langtable.world import BLOCK_HEIGHT, FOOTPRINTS


@lru_cache(maxsize=None)
def prism(shape: str, height: float = BLOCK_HEIGHT) -> tuple:
    """(vertices (N, 3) float64, triangle indices (M*3,) int32) of an extruded footprint.

    Caps are ear-clipped (the moon and star are not convex); every side face has its own four
    vertices so flat shading gives the sides their own normals.
    """
    outline = np.asarray(FOOTPRINTS[shape], np.float64)
    nxt = np.roll(outline, -1, axis=0)
    area2 = np.sum(outline[:, 0] * nxt[:, 1] - nxt[:, 0] * outline[:, 1])
    if area2 < 0:  # counter-clockwise seen from above, so outward faces wind the same way
        outline = outline[::-1]
    n = len(outline)
    cap = mapbox_earcut.triangulate_float64(outline, np.array([n], np.uint32)).reshape(-1, 3)
    cap = np.array([t if _ccw(outline[t]) else t[::-1] for t in cap], np.int64)
    bottom = np.c_[outline, np.zeros(n)]
    top = np.c_[outline, np.full(n, height)]
    verts = [bottom, top]
    tris = [cap[:, ::-1], cap + n]  # bottom faces down, top faces up
    base = 2 * n
    for i in range(n):
        j = (i + 1) % n
        verts.append(np.array([bottom[i], bottom[j], top[j], top[i]]))
        k = base + 4 * i
        tris.append(np.array([[k, k + 1, k + 2], [k, k + 2, k + 3]]))
    return np.concatenate(verts), np.concatenate(tris).astype(np.int32).ravel()


def _ccw(tri_pts: np.ndarray) -> bool:
    (ax, ay), (bx, by), (cx, cy) = tri_pts
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) > 0


def footprint_extent(shape: str) -> tuple:
    """(width along x, depth along y) of the footprint in metres."""
    pts = np.asarray(FOOTPRINTS[shape])
    return tuple(float(v) for v in pts.max(0) - pts.min(0))
