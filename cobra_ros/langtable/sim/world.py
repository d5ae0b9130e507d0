"""Language-Table in PyBullet, built from the reference facts with meshes generated here.

Ground plane and the white xArm6 come from `pybullet_data`; the board, the cylinder effector and
the 16 blocks are built from the documented sizes, colours and masses
(language_table/environments/{constants,blocks,language_table}.py and its assets' URDFs, read for
facts only). The board has no collision, so blocks rest on the ground plane as in the original.
Physics runs at pybullet's default 240 Hz; one `step` is 1/10 s (24 sub-steps).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils import bullet_client

from cobra_ros.langtable.episodes import block2block_instruction
from cobra_ros.langtable.sim.camera import CameraJitter, SimCamera
from cobra_ros.langtable.sim.shapes import prism
from cobra_ros.langtable.sim.truth import BlockTruth, block_truths, prism_geometry
from cobra_ros.langtable.world import (ALL_BLOCKS, BLOCK_4, BLOCK_8, BOARD_CENTER_X, BOARD_SIZE,
                                       COLOUR_RGB, EFFECTOR_HEIGHT, SPAWN_BUFFER, X_MAX, X_MIN,
                                       Y_MAX, Y_MIN, block_colour, block_shape)

CONTROL_HZ = 10.0
PHYSICS_HZ = 240.0
SUBSTEPS = int(PHYSICS_HZ / CONTROL_HZ)
MAX_ACTION = 0.1
BLOCK_DISTANCE = 0.0175  # BLOCK_DISTANCE_THRESHOLD
ARM_DISTANCE = 0.06  # ARM_DISTANCE_THRESHOLD
ARM_SETTLE_STEPS = 100
BLOCK_SETTLE_STEPS = 200
PARK_XY = (5.0, 5.0)  # where N_CHOOSE_K leaves the blocks it does not use
MIN_K, MAX_K = 4, 10
BLOCK_MODES = ("BLOCK_4", "BLOCK_8", "N_CHOOSE_K")

# Joint angles that put the effector at (0.3, -0.2, 0.145) pointing down (constants.py).
INITIAL_JOINTS = (-0.5875016909413221, 0.15985553866983415, -0.4992862770497537,
                  0.0017427885915130214, 0.33927183830553914, -3.7249551487437524)
DOWN = (0.0, 1.0, 0.0, 0.0)  # quaternion xyzw: rotation by pi about y, tool axis pointing down
ARM_LINK = 6  # the flange the effector is fixed to
ARM_FORCE = 5 * 240.0
# Block and effector dynamics of the original URDFs: light bodies with a unit inertia diagonal,
# which keeps blocks upright when pushed.
BLOCK_MASS, BLOCK_FRICTION, ROLLING_FRICTION = 0.01, 0.5, 0.0001
EFFECTOR_MASS, EFFECTOR_FRICTION = 0.1, 1.0
EFFECTOR_RADIUS, EFFECTOR_LENGTH, EFFECTOR_TIP_OFFSET = 0.0127, 0.135, 0.029
HEAD_RADIUS, HEAD_LENGTH = 0.005, 0.03
BOARD_RGBA = (0.2, 0.2, 0.2, 1.0)
EFFECTOR_RGBA, HEAD_RGBA = (0.5, 0.5, 0.5, 1.0), (0.2, 0.2, 0.2, 1.0)


def n_choose_k_subsets(training: bool = True) -> list:
    """The N_CHOOSE_K block sets: 4..10 of 16, shuffled with seed 0, first 90% for training."""
    combos = [c for k in range(MIN_K, MAX_K + 1) for c in itertools.combinations(ALL_BLOCKS, k)]
    np.random.RandomState(0).shuffle(combos)
    cut = int(len(combos) * 0.9)
    return combos[:cut] if training else combos[cut:]


@dataclass(frozen=True)
class Lighting:
    """TinyRenderer light: direction (world, towards the light), colour and the shading mix.

    None keeps pybullet's defaults, which is what the original renders with."""

    direction: tuple | None = None
    colour: tuple | None = None
    ambient: float | None = None
    diffuse: float | None = None
    specular: float | None = None

    def kwargs(self) -> dict:
        out = {}
        for key, name in (("direction", "lightDirection"), ("colour", "lightColor"),
                          ("ambient", "lightAmbientCoeff"), ("diffuse", "lightDiffuseCoeff"),
                          ("specular", "lightSpecularCoeff")):
            value = getattr(self, key)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else float(value)
        return out


@dataclass
class SimFrame:
    rgb: np.ndarray  # HxWx3 uint8
    time_s: float  # simulated seconds since reset
    step: int
    effector_xy: np.ndarray  # measured flange position (forward kinematics), metres
    effector_target_xy: np.ndarray  # commanded position
    instruction: str
    blocks: list = field(default_factory=list)  # of BlockTruth, ALL_BLOCKS order
    block_mode: str = "BLOCK_4"
    camera: SimCamera | None = None
    segmentation: np.ndarray | None = None  # HxW int32 body ids, when asked for

    def block(self, name: str) -> BlockTruth:
        return next(b for b in self.blocks if b.name == name)

    @property
    def in_set(self) -> list:
        return [b for b in self.blocks if b.in_set]


class SimBase:
    """Rendering and ground truth shared by our world and the original's adapter.

    Subclasses set _client, arm_id, block_ids, blocks_on_table, camera, lighting, _target,
    time_s, step_count, instruction, block_mode and may override `_geometry`.
    """

    _geometry = staticmethod(prism_geometry)

    def effector_xy(self) -> np.ndarray:
        link = self._client.getLinkState(self.arm_id, ARM_LINK, computeForwardKinematics=1)
        return np.array(link[0][:2])

    def render(self, camera: SimCamera | None = None, lighting: Lighting | None = None,
               segmentation: bool = False):
        """RGB HxWx3 uint8 (and the HxW body-id mask when segmentation=True), TinyRenderer, no
        shadows."""
        cam = camera or self.camera
        light = (lighting or self.lighting).kwargs()
        flags = 0 if segmentation else pybullet.ER_NO_SEGMENTATION_MASK
        _, _, rgba, _, seg = self._client.getCameraImage(
            cam.width, cam.height, viewMatrix=cam.view_matrix(self._client),
            projectionMatrix=cam.projection_matrix(self._client), shadow=0, flags=flags,
            renderer=pybullet.ER_TINY_RENDERER, **light)
        rgb = np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4)[..., :3].copy()
        if not segmentation:
            return rgb
        return rgb, np.asarray(seg, np.int32).reshape(cam.height, cam.width)

    def observe(self, camera: SimCamera | None = None, lighting: Lighting | None = None,
                keep_segmentation: bool = False) -> SimFrame:
        """Render the current state and compute every block's ground truth for that camera."""
        cam = camera or self.camera
        rgb, seg = self.render(cam, lighting, segmentation=True)
        poses = {n: self._client.getBasePositionAndOrientation(i)
                 for n, i in self.block_ids.items()}
        blocks = block_truths(cam, seg, poses, self.block_ids, set(self.blocks_on_table),
                              self._geometry)
        return SimFrame(rgb=rgb, time_s=self.time_s, step=self.step_count,
                        effector_xy=self.effector_xy(), effector_target_xy=self._target.copy(),
                        instruction=self.instruction, blocks=blocks, block_mode=self.block_mode,
                        camera=cam, segmentation=seg if keep_segmentation else None)

    def jittered_camera(self, rng: np.random.Generator, size=None, **ranges) -> SimCamera:
        return SimCamera(size or self.size, CameraJitter.sample(rng, **ranges))

    def velocities(self) -> np.ndarray:
        """(n_in_set, 6) linear and angular velocity of the blocks on the table."""
        return np.array([np.concatenate(self._client.getBaseVelocity(self.block_ids[n]))
                         for n in self.blocks_on_table])

    @property
    def client(self):
        return self._client

    def close(self):
        if self._client is not None:
            self._client.disconnect()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LangTableSim(SimBase):
    """The Language-Table world: reset, step(action) at 10 Hz, render, ground truth per frame.

    size is (width, height) of rendered frames; the dataset camera at 640x360 unless `camera` (a
    CameraJitter or SimCamera) says otherwise. original=True runs the same API on Google's
    `language_table` package (see `original.py`).
    """

    def __new__(cls, *args, original: bool = False, **kwargs):
        if original and cls is LangTableSim:
            from cobra_ros.langtable.sim.original import OriginalLangTableSim
            return OriginalLangTableSim(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, block_mode: str = "BLOCK_4", seed: int | None = 0, size=(640, 360),
                 original: bool = False, training: bool = True, camera=None,
                 lighting: Lighting | None = None):
        self._check_mode(block_mode)
        self.block_mode = block_mode
        self.training = training
        self.size = (int(size[0]), int(size[1]))
        self.camera = camera if isinstance(camera, SimCamera) else SimCamera(self.size, camera)
        self.lighting = lighting or Lighting()
        self._rng = np.random.default_rng(seed)
        self._subsets = {}
        self._client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self.reset()

    # ------------------------------------------------------------------ building

    def _build(self):
        """Create the world from nothing. Every reset does this (about 30 ms): pybullet's
        restoreState leaves solver caches behind, and a layout must not depend on history."""
        c = self._client
        c.resetSimulation()
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.8)
        c.setTimeStep(1.0 / PHYSICS_HZ)
        c.loadURDF("plane.urdf", basePosition=[0, 0, -0.001])
        half = [BOARD_SIZE[0] / 2, BOARD_SIZE[1] / 2, 0.0005]
        board = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=BOARD_RGBA)
        self.board_id = c.createMultiBody(0, -1, board, [BOARD_CENTER_X, 0, -0.0005])
        self.arm_id = c.loadURDF("xarm/xarm6_robot_white.urdf", [0, 0, 0], useFixedBase=True)
        self._joints = [i for i in range(c.getNumJoints(self.arm_id))
                        if c.getJointInfo(self.arm_id, i)[2] == pybullet.JOINT_REVOLUTE]
        for j in self._joints:
            c.changeDynamics(self.arm_id, j, linearDamping=0, angularDamping=0)
        self._set_joints(INITIAL_JOINTS)
        self.effector_id = self._build_effector()
        self.block_ids = {name: self._build_block(name, i) for i, name in enumerate(ALL_BLOCKS)}
        self._names_by_id = {v: k for k, v in self.block_ids.items()}

    def _build_effector(self) -> int:
        c = self._client
        head_vis = c.createVisualShape(pybullet.GEOM_CYLINDER, radius=HEAD_RADIUS,
                                       length=HEAD_LENGTH, rgbaColor=HEAD_RGBA,
                                       visualFramePosition=[0, 0, HEAD_LENGTH / 2])
        head_col = c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=HEAD_RADIUS,
                                          height=HEAD_LENGTH,
                                          collisionFramePosition=[0, 0, HEAD_LENGTH / 2])
        tip_vis = c.createVisualShape(pybullet.GEOM_CYLINDER, radius=EFFECTOR_RADIUS,
                                      length=EFFECTOR_LENGTH, rgbaColor=EFFECTOR_RGBA)
        tip_col = c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=EFFECTOR_RADIUS,
                                         height=EFFECTOR_LENGTH)
        flange = c.getLinkState(self.arm_id, ARM_LINK, computeForwardKinematics=1)
        body = c.createMultiBody(
            EFFECTOR_MASS, head_col, head_vis, flange[0], flange[1],
            linkMasses=[EFFECTOR_MASS], linkCollisionShapeIndices=[tip_col],
            linkVisualShapeIndices=[tip_vis], linkPositions=[[0, 0, EFFECTOR_TIP_OFFSET]],
            linkOrientations=[[0, 0, 0, 1]], linkInertialFramePositions=[[0, 0, 0]],
            linkInertialFrameOrientations=[[0, 0, 0, 1]], linkParentIndices=[0],
            linkJointTypes=[pybullet.JOINT_FIXED], linkJointAxis=[[0, 0, 1]])
        for link in (-1, 0):
            c.changeDynamics(body, link, lateralFriction=EFFECTOR_FRICTION,
                             rollingFriction=ROLLING_FRICTION, localInertiaDiagonal=[1, 1, 1])
        cid = c.createConstraint(self.arm_id, ARM_LINK, body, -1, pybullet.JOINT_FIXED,
                                 [0, 0, 0], [0, 0, 0], [0, 0, 0])
        c.changeConstraint(cid, maxForce=1000)
        return body

    def _build_block(self, name: str, index: int) -> int:
        c = self._client
        verts, normals, idx = prism(block_shape(name))
        rgba = list(COLOUR_RGB[block_colour(name)]) + [1.0]
        vis = c.createVisualShape(pybullet.GEOM_MESH, vertices=verts.tolist(),
                                  indices=idx.tolist(), normals=normals.tolist(), rgbaColor=rgba)
        col = c.createCollisionShape(pybullet.GEOM_MESH, vertices=verts.tolist())
        body = c.createMultiBody(BLOCK_MASS, col, vis, self._park_position(index))
        c.changeDynamics(body, -1, lateralFriction=BLOCK_FRICTION,
                         rollingFriction=ROLLING_FRICTION, localInertiaDiagonal=[1, 1, 1])
        return body

    @staticmethod
    def _park_position(index: int) -> list:
        # Parked blocks stand apart so they never touch each other.
        return [PARK_XY[0] + 0.1 * index, PARK_XY[1], 0.0]

    # ------------------------------------------------------------------ control

    @staticmethod
    def _check_mode(block_mode: str):
        if block_mode not in BLOCK_MODES:
            raise ValueError(f"block_mode must be one of {BLOCK_MODES}, not {block_mode!r}")

    def _set_joints(self, q):
        for j, v in zip(self._joints, q):
            self._client.resetJointState(self.arm_id, j, float(v), 0.0)
        self._drive_joints(q)

    def _drive_joints(self, q):
        self._client.setJointMotorControlArray(
            self.arm_id, self._joints, pybullet.POSITION_CONTROL, targetPositions=list(q),
            forces=[ARM_FORCE] * len(self._joints))

    def _ik(self, xy) -> list:
        c = self._client
        rest = [0.0, 0.0] + [s[0] for s in c.getJointStates(self.arm_id, self._joints)][2:]
        n = len(self._joints)
        return list(c.calculateInverseKinematics(
            self.arm_id, ARM_LINK, [float(xy[0]), float(xy[1]), EFFECTOR_HEIGHT], DOWN,
            lowerLimits=[-17.0] * n, upperLimits=[17.0] * n, jointRanges=[17.0] * n,
            restPoses=rest, maxNumIterations=100, residualThreshold=1e-10))

    def _set_target(self, xy):
        self._target = np.asarray(xy, np.float64).copy()
        self._drive_joints(self._ik(self._target))

    def _physics(self, n: int):
        for _ in range(n):
            self._client.stepSimulation()

    # ------------------------------------------------------------------ episode API

    def block_set(self, block_mode: str | None = None) -> tuple:
        """Draw this reset's block set for the mode (a fixed set, or one N_CHOOSE_K subset)."""
        mode = block_mode or self.block_mode
        if mode == "BLOCK_4":
            return BLOCK_4
        if mode == "BLOCK_8":
            return BLOCK_8
        if self.training not in self._subsets:
            self._subsets[self.training] = n_choose_k_subsets(self.training)
        subsets = self._subsets[self.training]
        return tuple(subsets[int(self._rng.integers(len(subsets)))])

    def reset(self, seed: int | None = None, block_mode: str | None = None,
              instruction: str | None = None, blocks=None) -> SimFrame:
        """New layout: effector and blocks uniform in the workspace less the 0.08 m buffer, block
        centres > 0.0175 m apart and > 0.06 m from the effector, then 200 settling steps.

        blocks: names of the blocks to put on the table this time instead of the mode's set."""
        if block_mode is not None:
            self._check_mode(block_mode)
            self.block_mode = block_mode
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._build()
        if blocks is not None:
            unknown = set(blocks) - set(ALL_BLOCKS)
            least = 2 if instruction is None else 1  # the drawn instruction names two blocks
            if unknown or len(blocks) < least:
                raise ValueError(
                    f"blocks must name at least {least} of {ALL_BLOCKS}, got {blocks!r}")
        self.blocks_on_table = tuple(blocks) if blocks is not None else self.block_set()
        lo = np.array([X_MIN + SPAWN_BUFFER, Y_MIN + SPAWN_BUFFER])
        hi = np.array([X_MAX - SPAWN_BUFFER, Y_MAX - SPAWN_BUFFER])
        start = self._rng.uniform(lo, hi)
        self._set_joints(self._ik(start))  # jump there: the sweep would hit nothing but costs time
        self._snap_effector()
        self._set_target(start)
        self._physics(ARM_SETTLE_STEPS)
        self.layout = self._layout(lo, hi, start)  # as sampled, before physics separates them
        for name, xy, yaw in self.layout:
            self.place(name, xy, yaw)
        self._physics(BLOCK_SETTLE_STEPS)
        self.time_s, self.step_count = 0.0, 0
        self.instruction = instruction if instruction is not None else self._instruction()
        return self.observe()

    def place(self, name: str, xy, yaw: float = 0.0):
        """Put a block upright at xy (metres) with the given yaw, at rest; physics resolves any
        overlap on the next step."""
        c = self._client
        c.resetBasePositionAndOrientation(self.block_ids[name], [float(xy[0]), float(xy[1]), 0.0],
                                          c.getQuaternionFromEuler([0, 0, float(yaw)]))
        c.resetBaseVelocity(self.block_ids[name], [0, 0, 0], [0, 0, 0])

    def _snap_effector(self):
        flange = self._client.getLinkState(self.arm_id, ARM_LINK, computeForwardKinematics=1)
        self._client.resetBasePositionAndOrientation(self.effector_id, flange[0], flange[1])

    def _layout(self, lo, hi, effector_xy) -> list:
        for _ in range(100):
            placed = []
            for name in self.blocks_on_table:
                for _ in range(20):
                    xy = self._rng.uniform(lo, hi)
                    yaw = float(self._rng.uniform(0, 2 * np.pi))
                    if (all(np.linalg.norm(xy - p[1]) > BLOCK_DISTANCE for p in placed)
                            and np.linalg.norm(xy - effector_xy) > ARM_DISTANCE):
                        placed.append((name, xy, yaw))
                        break
                else:
                    break
            if len(placed) == len(self.blocks_on_table):
                return placed
        raise RuntimeError(f"could not place {len(self.blocks_on_table)} blocks")

    def _instruction(self) -> str:
        a, b = self._rng.choice(len(self.blocks_on_table), 2, replace=False)
        return block2block_instruction(self._rng, self.blocks_on_table[a], self.blocks_on_table[b])

    def step(self, action) -> SimFrame:
        """Move the effector target by action (dx, dy) metres, each clipped to +-0.1, the target
        clipped to the workspace; then 1/10 s of physics."""
        a = np.clip(np.asarray(action, np.float64).reshape(2), -MAX_ACTION, MAX_ACTION)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {action!r}")
        target = np.clip(self._target + a, [X_MIN, Y_MIN], [X_MAX, Y_MAX])
        self._set_target(target)
        self._physics(SUBSTEPS)
        self.time_s += 1.0 / CONTROL_HZ
        self.step_count += 1
        return self.observe()
