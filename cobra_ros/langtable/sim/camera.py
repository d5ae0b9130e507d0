"""The Language-Table camera as a pinhole model, with the jitter a real camera brings.

Pose (0.75, 0, 0.5), fixed-axis XYZ euler (pi/5, pi, -pi/2), fx = fy = 0.803 * W at 16:9
(language_table/environments/constants.py). The camera looks along R z with image-up R (-y), so the
OpenCV camera frame (x right, y down, z forward) is R itself. The focal length is tied to the frame
height (0.803 * 16/9 * H, the same number at 16:9), so a 4:3 frame is a centre crop of the 16:9
view rather than a zoom. Pixel (i, j) covers [i, i+1) x [j, j+1); the optical axis meets the
image at (W/2, H/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cobra_ros.langtable.world import CAMERA_EULER, CAMERA_POSITION, FOCAL_PER_WIDTH
from cobra_ros.model.grounding import rpy_matrix

Z_NEAR, Z_FAR = 0.01, 10.0  # the env's OpenGL depth range
FOCAL_PER_HEIGHT = FOCAL_PER_WIDTH * 16 / 9


@dataclass(frozen=True)
class CameraJitter:
    """Offsets from the dataset camera: shift (m, world frame), rotation (rad, added to the
    euler angles), zoom (focal length factor)."""

    shift: tuple = (0.0, 0.0, 0.0)
    rotation: tuple = (0.0, 0.0, 0.0)
    zoom: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator, shift: float = 0.05, angle: float = np.radians(5),
               zoom: float = 0.10) -> "CameraJitter":
        """Uniform within +-shift metres per axis, +-angle per euler angle, zoom 1 +- zoom."""
        return cls(tuple(float(v) for v in rng.uniform(-shift, shift, 3)),
                   tuple(float(v) for v in rng.uniform(-angle, angle, 3)),
                   float(rng.uniform(1 - zoom, 1 + zoom)))


class SimCamera:
    """Intrinsics, extrinsics and the pybullet matrices of one (possibly jittered) camera."""

    def __init__(self, size=(640, 360), jitter: CameraJitter | None = None):
        j = jitter or CameraJitter()
        self.width, self.height = int(size[0]), int(size[1])
        self.jitter = j
        self.rotation = rpy_matrix(*(np.asarray(CAMERA_EULER) + j.rotation))  # camera -> world
        self.position = np.asarray(CAMERA_POSITION, np.float64) + j.shift
        f = FOCAL_PER_HEIGHT * self.height * j.zoom
        self.K = np.array([[f, 0.0, self.width / 2], [0.0, f, self.height / 2], [0.0, 0.0, 1.0]])
        w2c = np.eye(4)
        w2c[:3, :3] = self.rotation.T
        w2c[:3, 3] = -self.rotation.T @ self.position
        self.world_to_camera = w2c

    @property
    def focal(self) -> float:
        return float(self.K[0, 0])

    def project(self, xyz) -> np.ndarray:
        """World points (..., 3) -> pixel (..., 2) as (u, v); nan behind the camera."""
        p = np.asarray(xyz, np.float64)
        c = p @ self.world_to_camera[:3, :3].T + self.world_to_camera[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = c[..., :2] / c[..., 2:3] * self.focal + self.K[:2, 2]
        return np.where(c[..., 2:3] > Z_NEAR, uv, np.nan)

    def depth(self, xyz) -> np.ndarray:
        p = np.asarray(xyz, np.float64)
        return p @ self.world_to_camera[2, :3] + self.world_to_camera[2, 3]

    def pixel_to_table(self, u, v, z: float = 0.0) -> np.ndarray:
        """The point (x, y) on the horizontal plane at height z seen at pixel (u, v)."""
        ray = self.rotation @ np.array([(u - self.K[0, 2]) / self.focal,
                                        (v - self.K[1, 2]) / self.focal, 1.0])
        if abs(ray[2]) < 1e-12:
            raise ValueError(f"pixel ({u}, {v}) looks parallel to the table")
        t = (z - self.position[2]) / ray[2]
        if t <= 0:
            raise ValueError(f"pixel ({u}, {v}) does not look at the table")
        return (self.position + t * ray)[:2]

    def view_matrix(self, client) -> tuple:
        forward = self.rotation @ [0.0, 0.0, 1.0]
        up = self.rotation @ [0.0, -1.0, 0.0]
        return client.computeViewMatrix(self.position.tolist(), (self.position + forward).tolist(),
                                        up.tolist())

    def projection_matrix(self, client) -> tuple:
        fov = np.degrees(2 * np.arctan(self.height / 2 / self.focal))
        return client.computeProjectionMatrixFOV(float(fov), self.width / self.height, Z_NEAR,
                                                 Z_FAR)
