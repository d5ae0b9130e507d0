"""The release's grounding answer, read strictly, and where a box lies on the table (no ROS).

The release's evaluation asks `Please provide the bounding box coordinate of the region this
sentence describes: "<expression>"` and expects `[x1, y1, x2, y2]`, normalised by the image width
and height (2 decimals in its RefCOCO harness). `parse_box` accepts exactly that shape (any number
of decimals, whitespace anywhere between the tokens) and refuses everything else with a
`GroundingError` that quotes the text: a robot must never act on a guessed box.

`TableCamera` is a calibrated pinhole camera (K in the CameraInfo convention, pixel centres on
integers) and its pose in the board frame; `table_point` intersects the ray through a box's
centre with the horizontal plane at a block's half-height, where the centre of a block's visible
outline lies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

GROUNDING_PROMPT = ('Please provide the bounding box coordinate of the region this sentence '
                    'describes: "{expression}"')
BLOCK_HALF_HEIGHT = 0.0381 / 2  # Language-Table blocks are 0.0381 m tall

_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_BOX = re.compile(r"\s*\[" + ",".join([_NUMBER] * 4) + r"\]\s*")


class GroundingError(ValueError):
    """The model's answer is not a box the node can use; `text` is what the model said."""

    def __init__(self, message: str, text: str):
        super().__init__(f"{message}; the model answered {text!r}")
        self.text = text


def grounding_prompt(expression: str) -> str:
    if '"' in expression:
        raise ValueError(f"the expression must not contain a double quote: {expression!r}")
    return GROUNDING_PROMPT.format(expression=expression.strip())


def parse_box(text: str) -> tuple[float, float, float, float]:
    """`[x1, y1, x2, y2]`, each in [0, 1], x1 < x2 and y1 < y2; GroundingError otherwise."""
    match = _BOX.fullmatch(text)
    if match is None:
        raise GroundingError(_shape_problem(text), text)
    box = tuple(float(v) for v in match.groups())
    outside = [f"{name}={v:g}" for name, v in zip(("x1", "y1", "x2", "y2"), box)
               if not 0.0 <= v <= 1.0]
    if outside:
        raise GroundingError(f"box coordinates outside 0..1: {', '.join(outside)}", text)
    x1, y1, x2, y2 = box
    if not x1 < x2:
        raise GroundingError(f"box is empty or inverted: x1={x1:g} >= x2={x2:g}", text)
    if not y1 < y2:
        raise GroundingError(f"box is empty or inverted: y1={y1:g} >= y2={y2:g}", text)
    return box


def _shape_problem(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "empty answer, expected [x1, y1, x2, y2]"
    if not stripped.startswith("["):
        return "no opening '[': expected [x1, y1, x2, y2]"
    end = stripped.find("]")
    if end < 0:
        return "no closing ']': expected [x1, y1, x2, y2]"
    if stripped[end + 1:].strip():
        return f"text after the box: {stripped[end + 1:].strip()!r}"
    items = stripped[1:end].split(",")
    if len(items) != 4:
        return f"{len(items)} numbers, expected 4 ([x1, y1, x2, y2])"
    bad = [item.strip() for item in items if not re.fullmatch(_NUMBER, item)]
    return f"not a number: {bad[0]!r}" if bad else "malformed box"


def box_pixels(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The normalised box in pixels of a width x height image (max one past the last pixel)."""
    x1, y1, x2, y2 = box
    return (int(round(x1 * width)), int(round(y1 * height)), int(round(x2 * width)),
            int(round(y2 * height)))


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation of fixed-axis XYZ angles (URDF / tf rpy, pybullet's euler): Rz Ry Rx."""
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class TableCamera:
    """K (3x3, pixel centres on integers as in sensor_msgs/CameraInfo) of a width x height
    image, and the optical frame's pose in the board frame: `rotation` maps optical-frame
    directions (x right, y down, z forward) to the board frame, `position` is its origin."""

    K: np.ndarray
    width: int
    height: int
    rotation: np.ndarray
    position: np.ndarray

    @classmethod
    def from_pose(cls, K, width: int, height: int, xyz, rpy) -> "TableCamera":
        return cls(np.asarray(K, np.float64).reshape(3, 3), int(width), int(height),
                   rpy_matrix(*rpy), np.asarray(xyz, np.float64))

    def ray(self, u: float, v: float) -> np.ndarray:
        """Board-frame direction of the ray through pixel (u, v) (CameraInfo convention)."""
        direction = np.linalg.solve(self.K, np.array([u, v, 1.0]))
        return self.rotation @ direction

    def pixel_to_plane(self, u: float, v: float, z: float) -> np.ndarray:
        """The point (x, y, z) of the plane at height z seen at pixel (u, v)."""
        ray = self.ray(u, v)
        if abs(ray[2]) < 1e-12:
            raise ValueError(f"pixel ({u:.1f}, {v:.1f}) looks parallel to the table")
        t = (z - self.position[2]) / ray[2]
        if t <= 0:
            raise ValueError(f"pixel ({u:.1f}, {v:.1f}) does not look at the table")
        return self.position + t * ray

    def table_point(self, box, z: float = BLOCK_HALF_HEIGHT) -> np.ndarray:
        """Where the centre of a normalised box lies on the plane at height z: a block's centre
        for z = its half-height. The box's edges are continuous image coordinates (0..width),
        CameraInfo puts pixel centres on integers, hence the half-pixel shift."""
        x1, y1, x2, y2 = box
        u = (x1 + x2) / 2 * self.width - 0.5
        v = (y1 + y2) / 2 * self.height - 0.5
        return self.pixel_to_plane(u, v, z)
