"""Frames of the PyBullet world as scenes for the description / question generators.

`sim_scene` resets the world with a chosen block set, renders it through a randomised camera and
light, and returns the same `world.Rendered` structure the 2-D look-alike produces, so
`questions.scene_examples` and friends run on the simulator's ground truth unchanged.
Randomisation (strength 1): camera shifted up to +-5 cm and turned up to +-5 deg per axis, zoom
+-10%, light direction, colour and shading, per-colour block tint, brightness/contrast and sensor
noise, and a share of 4:3 frames (a centre crop of the same view).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cobra_ros.langtable.sim.camera import CameraJitter, SimCamera
from cobra_ros.langtable.sim.world import LangTableSim, Lighting, SimFrame
from cobra_ros.langtable.world import (BLOCK_HEIGHT, COLOUR_RGB, COLOURS, BlockTruth, Rendered,
                                       block_colour)

NOMINAL_LIGHT = (0.5, 0.0, 0.866)  # close to TinyRenderer's default look from this camera


@dataclass(frozen=True)
class SceneOptions:
    """How much a generated scene varies; randomize=0 gives the dataset camera and look."""

    randomize: float = 1.0
    shift: float = 0.05  # metres per axis at randomize=1
    angle: float = np.radians(5)  # per euler angle
    zoom: float = 0.10
    four_three: float = 0.25  # share of 4:3 frames at randomize=1
    light_angle: float = np.radians(25)
    tint: float = 0.06  # per block colour
    brightness: float = 0.15
    contrast: float = 0.15
    noise: float = 0.02  # std, in [0, 1] units


@dataclass(frozen=True)
class Look:
    camera: CameraJitter
    lighting: Lighting
    tint: tuple  # per COLOURS entry
    brightness: float
    contrast: float
    noise: float
    noise_seed: int
    four_three: bool


def sample_look(rng: np.random.Generator, opts: SceneOptions = SceneOptions()) -> Look:
    s = opts.randomize
    if s <= 0:
        return Look(CameraJitter(), Lighting(), (1.0,) * 4, 1.0, 1.0, 0.0, 0, False)
    el = np.arcsin(NOMINAL_LIGHT[2]) + rng.uniform(-1, 1) * opts.light_angle * s
    az = rng.uniform(-1, 1) * opts.light_angle * s
    direction = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    lighting = Lighting(direction=tuple(float(v) for v in direction),
                        colour=tuple(float(v) for v in 1 + rng.uniform(-0.08, 0.08, 3) * s),
                        ambient=float(0.6 + rng.uniform(-0.1, 0.1) * s),
                        diffuse=float(0.35 + rng.uniform(-0.1, 0.1) * s),
                        specular=float(0.05 + rng.uniform(-0.03, 0.03) * s))
    return Look(
        camera=CameraJitter.sample(rng, opts.shift * s, opts.angle * s, opts.zoom * s),
        lighting=lighting,
        tint=tuple(float(v) for v in 1 + rng.uniform(-opts.tint, opts.tint, 4) * s),
        brightness=float(1 + rng.uniform(-1, 1) * opts.brightness * s),
        contrast=float(1 + rng.uniform(-1, 1) * opts.contrast * s),
        noise=float(rng.uniform(0, opts.noise * s)),
        noise_seed=int(rng.integers(2**31)),
        four_three=bool(rng.random() < opts.four_three * s),
    )


def _tint_blocks(sim: LangTableSim, tint) -> None:
    for name, body in sim.block_ids.items():
        colour = block_colour(name)
        rgb = np.clip(np.asarray(COLOUR_RGB[colour]) * tint[COLOURS.index(colour)], 0, 1)
        sim.client.changeVisualShape(body, -1, rgbaColor=list(rgb) + [1.0])


def _post(rgb: np.ndarray, look: Look) -> np.ndarray:
    if (look.brightness, look.contrast, look.noise) == (1.0, 1.0, 0.0):
        return rgb
    f = rgb.astype(np.float32)
    f = (f - f.mean()) * look.contrast + f.mean() * look.brightness
    if look.noise > 0:
        f += np.random.default_rng(look.noise_seed).standard_normal(f.shape, np.float32) * (
            look.noise * 255)
    return cv2.convertScaleAbs(f)


def frame_to_rendered(frame: SimFrame) -> Rendered:
    """The 2-D world's Rendered for a sim frame: the blocks of this reset's set on the board,
    their top-face centre pixel and visible fraction."""
    cam = frame.camera
    truths = []
    for b in frame.blocks:
        if not (b.in_set and b.on_board):
            continue
        u, v = cam.project([b.xy[0], b.xy[1], b.z + BLOCK_HEIGHT])
        truths.append(BlockTruth(b.name, b.colour, b.shape, b.xy[0], b.xy[1], b.yaw, float(u),
                                 float(v), b.visible_fraction, tuple(float(c) for c in b.bbox)))
    eu, ev = cam.project([frame.effector_xy[0], frame.effector_xy[1], 0.0])
    return Rendered(frame.rgb, truths, tuple(float(v) for v in frame.effector_xy),
                    (float(eu), float(ev)))


def sim_scene(sim: LangTableSim, rng: np.random.Generator, blocks, size=(320, 180),
              opts: SceneOptions = SceneOptions()) -> Rendered:
    """Reset `sim` with `blocks` on the table and render it through a randomised look."""
    # one block cannot take the drawn block-to-block instruction
    sim.reset(seed=int(rng.integers(2**31)), blocks=tuple(blocks),
              instruction="" if len(blocks) < 2 else None)
    look = sample_look(rng, opts)
    w, h = size
    render_size = (h * 4 // 3, h) if look.four_three else (w, h)
    _tint_blocks(sim, look.tint)
    frame = sim.observe(SimCamera(render_size, look.camera), look.lighting)
    frame.rgb = _post(frame.rgb, look)
    return frame_to_rendered(frame)


_shared = {}


def shared_sim(size=(320, 180)) -> LangTableSim:
    """One world per process for scene generation (each scene rebuilds it anyway)."""
    if "sim" not in _shared:
        _shared["sim"] = LangTableSim(seed=0, size=size)
    return _shared["sim"]
