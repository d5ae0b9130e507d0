"""Per-block ground truth of one rendered frame, from the simulator's poses and its segmentation.

`visible_fraction` is the block's pixels in the segmentation mask over the pixels its whole
silhouette would cover with nothing in front (the prism's projected faces, inside or outside the
frame), so the arm, the effector, other blocks and the frame edge all count as occluding it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cobra_ros.langtable.sim.shapes import prism
from cobra_ros.langtable.world import (BLOCK_HEIGHT, BOARD_CENTER_X, BOARD_SIZE, block_colour,
                                       block_shape)

_SUB = 4  # fillConvexPoly fractional bits
_SCALE = 4  # silhouette supersampling


@dataclass(frozen=True)
class BlockTruth:
    name: str  # "red_moon"
    xy: tuple  # metres, board frame
    yaw: float  # rad
    z: float  # height of the body origin (bottom face), metres
    pixel: tuple  # (u, v) of the block's centre; nan when behind the camera
    bbox: tuple  # (u1, v1, u2, v2) of the visible mask, u2/v2 one past the last pixel; 0s if none
    visible_fraction: float  # 0..1
    on_board: bool
    in_set: bool
    upright: bool = True
    pixels: int = 0  # visible pixel count

    @property
    def colour(self) -> str:
        return block_colour(self.name)

    @property
    def shape(self) -> str:
        return block_shape(self.name)


def on_board(xy) -> bool:
    return bool(abs(xy[0] - BOARD_CENTER_X) <= BOARD_SIZE[0] / 2
                and abs(xy[1]) <= BOARD_SIZE[1] / 2)


def _rotation(quat) -> np.ndarray:
    x, y, z, w = quat
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def silhouette_pixels(camera, verts_world: np.ndarray, tris: np.ndarray) -> float:
    """Pixels the triangles cover on an unbounded image plane (counted around their own box).

    Rasterised at 4x and scaled back: cv2 fills every pixel an edge touches, the renderer only
    those whose centre is inside, and the finer grid shrinks that difference to a thin band.
    """
    uv = camera.project(verts_world)
    if not np.all(np.isfinite(uv)):
        return 0.0
    uv = (uv - uv.min(0)) * _SCALE  # fillConvexPoly puts integer coordinates on pixel centres
    span = np.ceil(uv.max(0)).astype(int) + 2
    if span.max() > 8192:
        return 0.0
    canvas = np.zeros((span[1], span[0]), np.uint8)
    pts = np.round(uv * (1 << _SUB)).astype(np.int32)[tris.reshape(-1, 3)]
    for tri in pts:  # one by one: fillPoly would cancel where triangles overlap
        cv2.fillConvexPoly(canvas, tri, 1, lineType=cv2.LINE_8, shift=_SUB)
    return float(canvas.sum()) / _SCALE**2


@dataclass(frozen=True)
class BlockGeometry:
    """A block body's mesh in its own frame, and which local axis points up when it stands."""

    verts: np.ndarray  # (N, 3)
    tris: np.ndarray  # (M*3,)
    up: tuple = (0.0, 0.0, 1.0)
    height: float = BLOCK_HEIGHT


def prism_geometry(name: str) -> BlockGeometry:
    verts, _, tris = prism(block_shape(name))
    return BlockGeometry(verts, tris)


def block_truths(camera, seg: np.ndarray, poses: dict, ids: dict, in_set: set,
                 geometry=prism_geometry) -> list:
    """BlockTruth of each block in `poses` ({name: ((x, y, z), quat xyzw)}); ids: name -> body."""
    out = []
    flat = seg.ravel()
    counts = np.bincount(flat[flat >= 0], minlength=max(ids.values()) + 1)
    for name, (pos, quat) in poses.items():
        geo = geometry(name)
        rot = _rotation(quat)
        pos = np.asarray(pos, np.float64)
        up = rot @ np.asarray(geo.up)
        centre = pos + up * geo.height / 2
        pixel = tuple(float(v) for v in camera.project(centre))
        n_vis = int(counts[ids[name]]) if ids[name] < len(counts) else 0
        bbox, fraction = (0, 0, 0, 0), 0.0
        if n_vis:
            vs, us = np.nonzero(seg == ids[name])
            bbox = (int(us.min()), int(vs.min()), int(us.max()) + 1, int(vs.max()) + 1)
            full = silhouette_pixels(camera, geo.verts @ rot.T + pos, geo.tris)
            fraction = min(1.0, n_vis / full) if full else 1.0
        yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
        out.append(BlockTruth(name=name, xy=(float(pos[0]), float(pos[1])), yaw=yaw,
                              z=float(pos[2]), pixel=pixel, bbox=bbox,
                              visible_fraction=float(fraction),
                              on_board=on_board(pos) and name in in_set, in_set=name in in_set,
                              upright=bool(up[2] > 0.9), pixels=n_vis))
    return out
