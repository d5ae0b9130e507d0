"""The 2-D Language-Table look-alike: blocks on a dark board seen by the dataset's camera.

The bundled model was trained on it; the PyBullet world (`cobra_ros.langtable.sim`) replaces it
for scenes. Geometry, colours and camera follow google-research/language-table (constants.py,
blocks.py, workspace_real.urdf). The board frame is the robot's:
x grows away from the robot base (image bottom), y grows to the image right.
Everything is a pure function of a seed, so a scene renders to the same pixels every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cobra_ros.model.grounding import rpy_matrix

# Workspace (constants.py) and the board mesh (0.457 x 0.610 m placed at x=0.35 in
# language_table.py).
X_MIN, X_MAX = 0.15, 0.6
Y_MIN, Y_MAX = -0.3048, 0.3048
SPAWN_BUFFER = 0.08
BOARD_CENTER_X = 0.35
BOARD_SIZE = (0.457, 0.610)
ARM_DISTANCE = 0.06  # ARM_DISTANCE_THRESHOLD: effector spawn clearance from blocks

BLOCK_HEIGHT = 0.0381
EFFECTOR_RADIUS = 0.0127
EFFECTOR_HEIGHT = 0.145

CAMERA_POSITION = np.array([0.75, 0.0, 0.5])
CAMERA_EULER = (np.pi / 5, np.pi, -np.pi / 2)
FOCAL_PER_WIDTH = 0.803
DEFAULT_SIZE = (640, 360)  # (width, height), as stored in the datasets

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("moon", "cube", "star", "pentagon")
COLOUR_RGB = {
    "red": (1.0, 0.4, 0.4),
    "blue": (0.4, 0.4, 1.0),
    "green": (0.4, 1.0, 0.4),
    "yellow": (1.0, 1.0, 0.4),
}
BLOCK_8 = (
    "red_moon",
    "red_pentagon",
    "blue_moon",
    "blue_cube",
    "green_cube",
    "green_star",
    "yellow_star",
    "yellow_pentagon",
)
BLOCK_4 = ("red_moon", "blue_cube", "green_star", "yellow_pentagon")
ALL_BLOCKS = tuple(f"{c}_{s}" for c in COLOURS for s in SHAPES)


def block_colour(name: str) -> str:
    return name.split("_")[0]


def block_shape(name: str) -> str:
    return name.split("_")[1]


def block_text(name: str) -> str:
    """'red_moon' -> 'red moon' (the dataset's text names)."""
    return name.replace("_", " ")


# ---------------------------------------------------------------- footprints (block frame, metres)


def _regular_star(points: int, outer: float, inner_ratio: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, outer * inner_ratio)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _crescent(width: float, height: float, thickness: float, n: int = 16) -> np.ndarray:
    """A crescent with the given bounding box, opening upward, `thickness` thick at its middle.

    The origin is the middle of the solid band on the symmetry axis (a crescent's centroid can fall
    in its hollow, and the reported block position should lie on the block).
    """
    r = ((width / 2) ** 2 + height**2) / (
        2 * height
    )  # outer circle through both tips and the bottom
    tip_y = height - r
    tip_x = np.sqrt(r * r - tip_y * tip_y)
    tip = np.arcsin(tip_y / r)
    d = (r * r - (r - thickness) ** 2) / (
        2 * (r - thickness + tip_y)
    )  # inner circle centre (0, d)
    r_in = d + r - thickness
    inner_tip = np.arctan2(tip_y - d, tip_x)
    outer = np.linspace(np.pi - tip, 2 * np.pi + tip, n)
    inner = np.linspace(inner_tip, -np.pi - inner_tip, n)[1:-1]
    pts = np.concatenate(
        [
            np.stack([r * np.cos(outer), r * np.sin(outer)], 1),
            np.stack([r_in * np.cos(inner), d + r_in * np.sin(inner)], 1),
        ]
    )
    return pts - [0.0, -r + thickness / 2]


def _centred(poly: np.ndarray) -> np.ndarray:
    """Shift a polygon so its area centroid is the origin (the block's reported position)."""
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    cx = ((x + xn) * cross).sum() / (6 * area)
    cy = ((y + yn) * cross).sum() / (6 * area)
    return poly - [cx, cy]


# Footprints sized to the mesh extents in the reference (cube 3.97, moon 5.25x2.57, star 4.44x4.08,
# pentagon 4.44x4.13 cm).
FOOTPRINTS = {
    "cube": _centred(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.01985),
    "moon": _crescent(0.0525, 0.0257, 0.012),
    "star": _centred(_regular_star(5, 0.02334, 0.5)),
    "pentagon": _centred(_regular_star(5, 0.02334, 1.0)[::2]),
}
# Radius of the disc a block occupies, used for spacing and simple push contacts.
BLOCK_RADIUS = 0.022


# ---------------------------------------------------------------- scene description


@dataclass(frozen=True)
class BlockPose:
    name: str
    x: float
    y: float
    yaw: float

    @property
    def colour(self) -> str:
        return block_colour(self.name)

    @property
    def shape(self) -> str:
        return block_shape(self.name)


@dataclass(frozen=True)
class Appearance:
    """Per-scene randomisation: lighting, camera jitter, materials, sensor noise."""

    brightness: float = 1.0
    contrast: float = 1.0
    cast: tuple = (1.0, 1.0, 1.0)
    light_dir: tuple = (0.35, -0.25)  # shadow offset direction on the table, per unit height
    shadow: float = 0.35  # how much a shadow darkens the board
    board_grey: float = 0.2
    floor_tones: tuple = ((0.72, 0.74, 0.80), (0.55, 0.60, 0.75))
    colour_gain: tuple = (1.0, 1.0, 1.0, 1.0)  # per block colour, in COLOURS order
    camera_shift: tuple = (0.0, 0.0, 0.0)
    camera_rotation: tuple = (0.0, 0.0, 0.0)
    focal_scale: float = 1.0
    illumination: tuple = (0.0, 0.0, 0.0)  # smooth gain field: x slope, y slope, vignette
    blur: float = 0.0  # gaussian sigma as a fraction of 640 px width
    noise: float = 0.0  # std of additive gaussian noise, in [0, 1] intensity units
    noise_seed: int = 0


@dataclass(frozen=True)
class Scene:
    blocks: tuple  # of BlockPose
    effector: tuple  # (x, y) in metres
    appearance: Appearance = field(default_factory=Appearance)

    def moved(self, blocks=None, effector=None) -> "Scene":
        return Scene(
            tuple(blocks) if blocks is not None else self.blocks,
            tuple(effector) if effector is not None else self.effector,
            self.appearance,
        )


@dataclass(frozen=True)
class BlockTruth:
    name: str
    colour: str
    shape: str
    x: float
    y: float
    yaw: float
    u: float  # pixel column of the top-face centre in the rendered image
    v: float  # pixel row
    visible: float  # fraction of the block's silhouette not hidden by the arm
    # (u1, v1, u2, v2) pixel box of the visible mask (the physics world's); None when not known
    bbox: tuple | None = None


@dataclass
class Rendered:
    rgb: np.ndarray  # HxWx3 uint8
    blocks: list  # of BlockTruth, in scene order
    effector: tuple  # (x, y) metres
    effector_uv: tuple  # pixel of the effector tip

    def truth(self, name: str) -> BlockTruth:
        return next(b for b in self.blocks if b.name == name)


def sample_appearance(rng: np.random.Generator, strength: float = 1.0) -> Appearance:
    """Random lighting / camera / material variation; strength 0 gives the neutral look."""
    s = strength

    def jitter(scale, n=None):
        return rng.uniform(-scale * s, scale * s, n)

    base_floor = np.array([0.66, 0.68, 0.72]) + jitter(0.1) + jitter(0.03, 3)
    return Appearance(
        brightness=float(1 + jitter(0.25)),
        contrast=float(1 + jitter(0.2)),
        cast=tuple(float(c) for c in 1 + jitter(0.05, 3)),
        light_dir=tuple(float(v) for v in np.array([0.35, -0.25]) + jitter(0.3, 2)),
        shadow=float(np.clip(0.35 + jitter(0.25), 0.0, 0.7)),
        board_grey=float(0.2 + jitter(0.05)),
        floor_tones=(tuple(base_floor), tuple(base_floor * np.array([0.86, 0.9, 1.0]))),
        colour_gain=tuple(float(g) for g in 1 + jitter(0.06, 4)),
        camera_shift=tuple(float(v) for v in jitter(0.012, 3)),
        camera_rotation=tuple(float(v) for v in jitter(np.radians(1.5), 3)),
        focal_scale=float(1 + jitter(0.04)),
        illumination=tuple(float(v) for v in jitter(0.12, 3)),
        blur=float(abs(jitter(1.2))),
        noise=float(abs(jitter(0.025))),
        noise_seed=int(rng.integers(2**31)),
    )


def _spawn_bounds(buffer: float = SPAWN_BUFFER):
    return (X_MIN + buffer, X_MAX - buffer), (Y_MIN + buffer, Y_MAX - buffer)


def sample_scene(
    rng: np.random.Generator,
    n_blocks=(4, 8),
    block_set=BLOCK_8,
    min_distance: float = 0.06,
    randomize: float = 1.0,
) -> Scene:
    """Place a random subset of `block_set` (n_blocks: int or inclusive (lo, hi)) and the effector.

    Positions are uniform inside the workspace shrunk by the 0.08 m spawn buffer; a draw is
    rejected when it comes closer than `min_distance` to a placed block (the env uses 0.0175 m
    and lets physics separate contacts; this drawing keeps blocks apart so every one stays
    visible).
    """
    lo, hi = (n_blocks, n_blocks) if np.isscalar(n_blocks) else n_blocks
    count = int(rng.integers(lo, hi + 1))
    names = [block_set[i] for i in sorted(rng.choice(len(block_set), count, replace=False))]
    (x0, x1), (y0, y1) = _spawn_bounds()
    placed = []
    for name in names:
        for _ in range(1000):
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            if all(np.hypot(x - p.x, y - p.y) >= min_distance for p in placed):
                break
        else:
            raise RuntimeError(f"could not place {count} blocks {min_distance} m apart")
        placed.append(BlockPose(name, float(x), float(y), float(rng.uniform(0, 2 * np.pi))))
    effector = sample_effector(rng, placed)
    return Scene(tuple(placed), effector, sample_appearance(rng, randomize))


def sample_effector(rng: np.random.Generator, blocks, clearance: float = ARM_DISTANCE) -> tuple:
    (x0, x1), (y0, y1) = _spawn_bounds()
    for _ in range(1000):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if all(np.hypot(x - b.x, y - b.y) >= clearance for b in blocks):
            return (float(x), float(y))
    return (float(x), float(y))


# ---------------------------------------------------------------- camera


class Camera:
    """Pinhole camera of the Language-Table env: looks along R*z with image-up R*(-y)."""

    def __init__(self, size=DEFAULT_SIZE, appearance: Appearance | None = None):
        app = appearance or Appearance()
        self.width, self.height = size
        rot = rpy_matrix(*(np.array(CAMERA_EULER) + app.camera_rotation))
        self.forward = rot @ [0.0, 0.0, 1.0]
        self.up = rot @ [0.0, -1.0, 0.0]
        self.right = np.cross(self.forward, self.up)
        self.position = CAMERA_POSITION + app.camera_shift
        self.focal = FOCAL_PER_WIDTH * self.width * app.focal_scale

    def project(self, points) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel (u, v)."""
        d = np.asarray(points, dtype=np.float64) - self.position
        depth = d @ self.forward
        u = self.width / 2 + self.focal * (d @ self.right) / depth
        v = self.height / 2 - self.focal * (d @ self.up) / depth
        return np.stack([u, v], axis=-1)


# ---------------------------------------------------------------- rendering

_SUBPIXEL = 4  # fillPoly fractional bits


def _fill(img, polys, colour, aa=True):
    pts = [np.round(p * (1 << _SUBPIXEL)).astype(np.int32) for p in polys]
    cv2.fillPoly(img, pts, colour, lineType=cv2.LINE_AA if aa else cv2.LINE_8, shift=_SUBPIXEL)


def _block_outline(pose: BlockPose) -> np.ndarray:
    c, s = np.cos(pose.yaw), np.sin(pose.yaw)
    return FOOTPRINTS[pose.shape] @ np.array([[c, s], [-s, c]]) + [pose.x, pose.y]


def _at_height(xy: np.ndarray, z: float) -> np.ndarray:
    return np.concatenate([xy, np.full((len(xy), 1), z)], axis=1)


def _circle(center_xy, radius, z, n=20) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack(
        [center_xy[0] + radius * np.cos(a), center_xy[1] + radius * np.sin(a), np.full(n, z)], 1
    )


def _capsule(cam: Camera, a, b, radius, n=16) -> np.ndarray:
    """Projected silhouette of a round link between 3-D points a and b (hull of two rims)."""
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rim = radius * (np.cos(ang)[:, None] * cam.right + np.sin(ang)[:, None] * cam.up)
    uv = cam.project(np.concatenate([np.asarray(a) + rim, np.asarray(b) + rim])).astype(np.float32)
    return cv2.convexHull(uv).reshape(-1, 2).astype(np.float64)


def _to_255(rgb, gain=1.0):
    return tuple(min(255.0, max(0.0, float(c) * gain * 255)) for c in rgb)


def _arm_links(effector_xy):
    """Waypoints of a stylised xArm from its base (behind the image top) to the effector flange."""
    ex, ey = effector_xy
    wrist = np.array([ex, ey, EFFECTOR_HEIGHT + 0.07])
    base = np.array([0.0, 0.0, 0.30])
    elbow = (wrist + base) / 2 + [0.02, 0.0, 0.16]
    return [
        (np.array([ex, ey, EFFECTOR_HEIGHT]), wrist, 0.035),
        (wrist, elbow, 0.04),
        (elbow, base, 0.045),
    ]


def render(scene: Scene, size=DEFAULT_SIZE) -> Rendered:
    """Draw `scene` at size (width, height) and report every block's ground truth."""
    app = scene.appearance
    cam = Camera(size, app)
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    labels = np.zeros((h, w), np.uint8)

    _draw_floor_and_board(img, cam, app)
    grey = app.board_grey
    shadow_colour = _to_255((grey, grey, grey), 1 - app.shadow)
    light = np.asarray(app.light_dir)
    for pose in scene.blocks:
        outline = _block_outline(pose) + light * BLOCK_HEIGHT
        _fill(img, [cam.project(_at_height(outline, 0.0))], shadow_colour)
    eff_shadow = _circle(np.asarray(scene.effector) + light * 0.05, EFFECTOR_RADIUS * 1.3, 0.0)
    _fill(img, [cam.project(eff_shadow)], shadow_colour)

    # Painter's order: far (small x) first; the effector rod stands among the blocks.
    items = [(p.x, i) for i, p in enumerate(scene.blocks)] + [(scene.effector[0], -1)]
    for _, i in sorted(items):
        if i < 0:
            _draw_effector(img, cam, scene.effector)
        else:
            _draw_block(img, labels, cam, scene.blocks[i], i + 1, app)
    counts_before = np.bincount(labels.ravel(), minlength=256)

    arm_polys = [_capsule(cam, a, b, r) for a, b, r in _arm_links(scene.effector)]
    for poly in arm_polys:
        _fill(img, [poly], (200, 200, 200))
        _fill(labels, [poly], 255, aa=False)
    for poly, (a, b, r) in zip(arm_polys, _arm_links(scene.effector)):
        _fill(img, [_capsule(cam, a + [0, 0, 0.01], b + [0, 0, 0.01], r * 0.6)], (236, 236, 236))
    counts_after = np.bincount(labels.ravel(), minlength=256)

    rgb = _post_process(img, app)
    truths = []
    for i, p in enumerate(scene.blocks):
        u, v = cam.project([[p.x, p.y, BLOCK_HEIGHT]])[0]
        visible = counts_after[i + 1] / max(counts_before[i + 1], 1)
        truths.append(
            BlockTruth(
                p.name, p.colour, p.shape, p.x, p.y, p.yaw, float(u), float(v), float(visible)
            )
        )
    eu, ev = cam.project([[scene.effector[0], scene.effector[1], 0.0]])[0]
    return Rendered(rgb, truths, tuple(scene.effector), (float(eu), float(ev)))


def occluded_blocks(scene: Scene, size=DEFAULT_SIZE) -> list:
    """Names of blocks whose top lies under (or within a block radius of) the arm's silhouette."""
    cam = Camera(size, scene.appearance)
    arm = [_capsule(cam, a, b, r).astype(np.float32) for a, b, r in _arm_links(scene.effector)]
    out = []
    for p in scene.blocks:
        centre = np.array([p.x, p.y, BLOCK_HEIGHT])
        u, v = cam.project([centre])[0]
        radius_px = cam.focal * BLOCK_RADIUS / ((centre - cam.position) @ cam.forward)
        if any(
            cv2.pointPolygonTest(poly, (float(u), float(v)), True) > -radius_px for poly in arm
        ):
            out.append(p.name)
    return out


def _draw_floor_and_board(img, cam: Camera, app: Appearance):
    img[:] = _to_255(app.floor_tones[0])
    # pybullet's ground plane is a two-tone checker; a cell edge runs along y = 0 under the board.
    far = [[-0.3, 0.0, 0.0], [0.74, 0.0, 0.0], [0.74, 1.0, 0.0], [-0.3, 1.0, 0.0]]
    _fill(img, [cam.project(far)], _to_255(app.floor_tones[1]))
    hx, hy = BOARD_SIZE[0] / 2, BOARD_SIZE[1] / 2
    corners = [
        [BOARD_CENTER_X - hx, -hy, 0],
        [BOARD_CENTER_X + hx, -hy, 0],
        [BOARD_CENTER_X + hx, hy, 0],
        [BOARD_CENTER_X - hx, hy, 0],
    ]
    g = app.board_grey
    _fill(img, [cam.project(corners)], _to_255((g, g, g)))


def _draw_block(img, labels, cam: Camera, pose: BlockPose, label: int, app: Appearance):
    base = np.asarray(COLOUR_RGB[pose.colour]) * app.colour_gain[COLOURS.index(pose.colour)]
    outline = _block_outline(pose)
    bottom = cam.project(_at_height(outline, 0.0))
    top = cam.project(_at_height(outline, BLOCK_HEIGHT))
    nxt = np.roll(np.arange(len(outline)), -1)
    # Sides facing the camera, shaded by how squarely they face the light.
    edge = outline[nxt] - outline
    normal = np.stack([edge[:, 1], -edge[:, 0]], 1)  # outward for counter-clockwise outlines
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    ccw = np.sum(outline[:, 0] * outline[nxt, 1] - outline[nxt, 0] * outline[:, 1]) > 0
    if not ccw:
        normal = -normal
    mid = (outline + outline[nxt]) / 2
    facing = np.sum(normal * (cam.position[:2] - mid), 1) > 0
    light = -np.asarray(app.light_dir) / (np.linalg.norm(app.light_dir) + 1e-9)
    for k in np.flatnonzero(facing):
        shade = 0.55 + 0.2 * float(normal[k] @ light)
        quad = np.array([bottom[k], bottom[nxt[k]], top[nxt[k]], top[k]])
        _fill(img, [quad], _to_255(base, shade))
    _fill(img, [top], _to_255(base, 0.97))
    # The label buffer only serves visibility fractions, so the silhouette's hull is close enough.
    hull = cv2.convexHull(np.concatenate([bottom, top]).astype(np.float32)).reshape(-1, 2)
    _fill(labels, [hull], label, aa=False)
    cv2.polylines(
        img,
        [np.round(top * (1 << _SUBPIXEL)).astype(np.int32)],
        True,
        _to_255(base, 0.8),
        1,
        cv2.LINE_AA,
        _SUBPIXEL,
    )


def _rod_silhouette(cam: Camera, effector_xy) -> np.ndarray:
    pts = np.concatenate(
        [
            _circle(effector_xy, EFFECTOR_RADIUS, 0.003),
            _circle(effector_xy, EFFECTOR_RADIUS, EFFECTOR_HEIGHT),
        ]
    )
    return cv2.convexHull(cam.project(pts).astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _draw_effector(img, cam: Camera, effector_xy):
    _fill(img, [_rod_silhouette(cam, effector_xy)], (118, 118, 118))
    # A lit stripe down the rod and its rounded tip, so it reads as a cylinder.
    ex, ey = effector_xy
    side = np.asarray([0.0, -EFFECTOR_RADIUS * 0.35])
    stripe = [[ex + side[0], ey + side[1], 0.006], [ex + side[0], ey + side[1], EFFECTOR_HEIGHT]]
    a, b = cam.project(stripe)
    depth = (np.array([ex, ey, 0.07]) - cam.position) @ cam.forward
    width = max(1, int(round(cam.focal * EFFECTOR_RADIUS * 0.6 / depth)))
    cv2.line(
        img,
        tuple(np.round(a * 16).astype(int)),
        tuple(np.round(b * 16).astype(int)),
        (150, 150, 150),
        width,
        cv2.LINE_AA,
        4,
    )
    _fill(img, [cam.project(_circle(effector_xy, EFFECTOR_RADIUS, 0.003))], (100, 100, 100))


def _post_process(img: np.ndarray, app: Appearance) -> np.ndarray:
    h, w = img.shape[:2]
    if app.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), app.blur * w / 640)
    # Contrast about the mean, then a smooth illumination field times a colour cast.
    f = img.astype(np.float32)
    f *= app.contrast
    f += float(np.mean(cv2.mean(img)[:3])) * (1 - app.contrast)
    gx, gy, vignette = app.illumination
    gh, gw = max(2, h // 16), max(2, w // 16)  # the field is smooth: build it small, upsample
    xs = np.linspace(-1, 1, gw, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, gh, dtype=np.float32)[:, None]
    field_ = (1 + gx * xs + gy * ys - abs(vignette) * (xs * xs + ys * ys) / 2) * app.brightness
    gain = field_[..., None] * np.asarray(app.cast, np.float32)
    f = cv2.multiply(f, cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR))
    if app.noise > 0:
        f += _noise_patch(h, w, app.noise_seed) * (app.noise * 255)
    return cv2.convertScaleAbs(f)  # rounds and saturates to uint8


_NOISE_SIDE = 1024
_noise_texture = None


def _noise_patch(h: int, w: int, seed: int) -> np.ndarray:
    """A seed-chosen window of one fixed gaussian texture: deterministic, cheaper than fresh
    noise."""
    global _noise_texture
    if _noise_texture is None:
        _noise_texture = np.random.default_rng(0).standard_normal(
            (_NOISE_SIDE, _NOISE_SIDE, 3), dtype=np.float32
        )
    if h > _NOISE_SIDE or w > _NOISE_SIDE:
        return np.random.default_rng(seed).standard_normal((h, w, 3), dtype=np.float32)
    r = np.random.default_rng(seed)
    y, x = r.integers(0, _NOISE_SIDE - h + 1), r.integers(0, _NOISE_SIDE - w + 1)
    return _noise_texture[y : y + h, x : x + w]


def render_grid(images, columns: int = 3, gap: int = 4) -> np.ndarray:
    """Tile same-sized RGB images into one contact sheet."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full(
        (rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8
    )
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = im
    return sheet


def main(argv=None) -> int:
    """Write a contact sheet of random scenes of the 2-D look-alike to a PNG."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m cobra_ros.langtable.world", description=main.__doc__
    )
    parser.add_argument("--grid", required=True, help="output PNG path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--width", type=int, default=320, help="tile width (height follows 16:9)")
    args = parser.parse_args(argv)
    size = (args.width, args.width * 9 // 16)
    tiles = [
        render(sample_scene(np.random.default_rng([args.seed, i])), size).rgb
        for i in range(args.count)
    ]
    sheet = cv2.cvtColor(render_grid(tiles, args.columns), cv2.COLOR_RGB2BGR)
    cv2.imwrite(args.grid, sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
