"""Block meshes generated here: each footprint of `world.FOOTPRINTS` extruded to a prism.

The footprints are sized to the extents the Language-Table reference facts give for the dataset's
meshes (cube 3.97 cm, moon 5.25 x 2.57 cm, star 4.44 x 4.08 cm, pentagon 4.44 x 4.13 cm) and every
block is 0.0381 m tall. The original meshes round their top and bottom edges with a quarter
circle of about 2 mm in two segments (vertex rings at 0.6 and 2.0 mm from each face) and shade
them with smooth normals, so ours do the same: it is what makes their blocks read darker than flat
faces would. The body origin is the footprint's reference point on the bottom face, as in the
original assets, so a resting block sits at z = 0.
"""

from __future__ import annotations

from functools import lru_cache

import mapbox_earcut
import numpy as np

from cobra_ros.langtable.world import BLOCK_HEIGHT, FOOTPRINTS

EDGE_RADIUS = 0.002
EDGE_SEGMENTS = 2
MAX_MITER = 2.0  # cap on how far a sharp tip's inset moves, in edge radii


def _ccw_outline(shape: str) -> np.ndarray:
    outline = np.asarray(FOOTPRINTS[shape], np.float64)
    nxt = np.roll(outline, -1, axis=0)
    if np.sum(outline[:, 0] * nxt[:, 1] - nxt[:, 0] * outline[:, 1]) < 0:
        outline = outline[::-1]  # counter-clockwise seen from above: outward faces wind alike
    return outline


def _cap(poly: np.ndarray) -> np.ndarray:
    """Ear-clipped triangles of a simple polygon (the moon and star are not convex), each
    counter-clockwise."""
    tris = mapbox_earcut.triangulate_float64(poly, np.array([len(poly)], np.uint32)).reshape(-1, 3)
    return np.array([t if _ccw(poly[t]) else t[::-1] for t in tris], np.int64)


def _ccw(tri_pts: np.ndarray) -> bool:
    (ax, ay), (bx, by), (cx, cy) = tri_pts
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) > 0


@lru_cache(maxsize=None)
def prism(shape: str, height: float = BLOCK_HEIGHT, radius: float = EDGE_RADIUS,
          segments: int = EDGE_SEGMENTS) -> tuple:
    """(vertices (N, 3), normals (N, 3), triangle indices (M*3,) int32) of the block mesh.

    Every side face has its own vertex column (flat across the face, rounded at its top and
    bottom edge); the caps are the footprint inset by the edge radius.
    """
    outline = _ccw_outline(shape)
    n = len(outline)
    edge = np.roll(outline, -1, axis=0) - outline
    out = np.stack([edge[:, 1], -edge[:, 0]], 1)
    out /= np.linalg.norm(out, axis=1, keepdims=True)  # outward normal of edge i -> i+1
    prev = np.roll(out, 1, axis=0)
    miter = (prev + out) / (1 + np.sum(prev * out, 1, keepdims=True))
    length = np.linalg.norm(miter, axis=1, keepdims=True)
    miter *= np.minimum(length, MAX_MITER) / np.maximum(length, 1e-12)
    angles = np.linspace(-np.pi / 2, 0, segments + 1)
    profile = [(radius + radius * np.sin(a), radius * (1 - np.cos(a)), a) for a in angles]
    profile += [(height - radius - radius * np.sin(a), radius * (1 - np.cos(a)), -a)
                for a in angles[::-1]]
    verts, norms, tris = [], [], []
    for i in range(n):
        j = (i + 1) % n
        base = sum(len(v) for v in verts)
        column, normals = [], []
        for z, inset, a in profile:
            for k in (i, j):
                column.append([*(outline[k] - inset * miter[k]), z])
                normals.append([*(np.cos(a) * out[i]), np.sin(a)])
        verts.append(np.array(column))
        norms.append(np.array(normals))
        for r in range(len(profile) - 1):
            a0, b0, a1, b1 = (base + 2 * r + d for d in range(4))
            tris += [[a0, b0, b1], [a0, b1, a1]]
    inner = outline - radius * miter
    cap = _cap(inner)
    for z, up, faces in ((height, 1.0, cap), (0.0, -1.0, cap[:, ::-1])):
        base = sum(len(v) for v in verts)
        verts.append(np.c_[inner, np.full(n, z)])
        norms.append(np.tile([0.0, 0.0, up], (n, 1)))
        tris += (faces + base).tolist()
    return (np.concatenate(verts), np.concatenate(norms),
            np.asarray(tris, np.int32).ravel())


def footprint_extent(shape: str) -> tuple:
    """(width along x, depth along y) of the footprint in metres."""
    pts = np.asarray(FOOTPRINTS[shape])
    return tuple(float(v) for v in pts.max(0) - pts.min(0))
