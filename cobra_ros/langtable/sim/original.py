"""The same API on Google's `language_table` package, for users who installed it from its repo.

Nothing of it is bundled: this imports the user's install, drives its env (reset, and the robot
step without the env's own 320x180 render) and reads its pybullet client for frames and ground
truth, exactly as for our world. TensorFlow is imported by its utils_pybullet.py only to save and
load states, so when TensorFlow is absent a placeholder module lets the import succeed and any use
of it fails with a clear message.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from functools import lru_cache

import numpy as np

from cobra_ros.langtable.episodes import block2block_instruction
from cobra_ros.langtable.sim.camera import SimCamera
from cobra_ros.langtable.sim.truth import BlockGeometry
from cobra_ros.langtable.sim.world import BLOCK_MODES, Lighting, SimBase, SimFrame
from cobra_ros.langtable.world import block_shape


class _NoTensorFlow(types.ModuleType):
    def __getattr__(self, name):
        raise ImportError("TensorFlow is not installed; language_table needs it only to save or "
                          f"load pybullet states (tensorflow.{name})")


def import_original():
    """(language_table.environments.language_table, .blocks) or ImportError saying what to do."""
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        sys.modules.setdefault("tensorflow", _NoTensorFlow("tensorflow"))
    try:
        env = importlib.import_module("language_table.environments.language_table")
        blocks = importlib.import_module("language_table.environments.blocks")
    except ImportError as exc:
        raise ImportError("original=True needs Google's language_table package (install it from "
                          "github.com/google-research/language-table with gym<=0.23): "
                          f"{exc}") from exc
    return env, blocks


@lru_cache(maxsize=None)
def _obj_geometry(path: str) -> BlockGeometry:
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "v":
                verts.append([float(v) for v in parts[1:4]])
            elif parts and parts[0] == "f":
                idx = [int(p.split("/")[0]) - 1 for p in parts[1:]]
                faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    verts = np.asarray(verts)
    # The original meshes stand along their local y axis.
    return BlockGeometry(verts, np.asarray(faces, np.int32).ravel(), up=(0.0, 1.0, 0.0),
                         height=float(np.ptp(verts[:, 1])))


class OriginalLangTableSim(SimBase):
    def __init__(self, block_mode: str = "BLOCK_4", seed: int | None = 0, size=(640, 360),
                 training: bool = True, camera=None, lighting: Lighting | None = None):
        self._lt, self._blocks = import_original()
        self.size = (int(size[0]), int(size[1]))
        self.camera = camera if isinstance(camera, SimCamera) else SimCamera(self.size, camera)
        self.lighting = lighting or Lighting()
        self.training = training
        self._envs = {}
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._open(block_mode)
        self.reset()

    def _open(self, block_mode: str):
        if block_mode not in BLOCK_MODES:
            raise ValueError(f"block_mode must be one of {BLOCK_MODES}, not {block_mode!r}")
        if block_mode not in self._envs:  # one env per mode: building one takes ~0.5 s
            mode = self._blocks.LanguageTableBlockVariants[block_mode]
            self._envs[block_mode] = self._lt.LanguageTable(
                block_mode=mode, training=self.training, seed=self._seed,
                render_text_in_image=False)
        self._env = self._envs[block_mode]
        self.block_mode = block_mode
        self._client = self._env.pybullet_client
        self.arm_id = self._env._robot.xarm
        self.effector_id = self._env._robot.end_effector
        self.board_id = self._env._workspace_uid
        self.block_ids = dict(self._env._block_to_pybullet_id)
        assets = os.path.join(os.path.dirname(self._lt.__file__), "assets", "blocks")
        self._meshes = {n: os.path.join(assets, block_shape(n) + ".obj") for n in self.block_ids}

    def _geometry(self, name: str) -> BlockGeometry:
        return _obj_geometry(self._meshes[name])

    def reset(self, seed: int | None = None, block_mode: str | None = None,
              instruction: str | None = None) -> SimFrame:
        if seed is not None:
            self._seed = seed
            self._rng = np.random.default_rng(seed)
        if block_mode is not None and block_mode != self.block_mode:
            self._open(block_mode)
        if seed is not None:
            self._env._rng = np.random.RandomState(seed)  # env.seed() also seeds a reward
        self._env.reset()
        self.blocks_on_table = tuple(self._env._blocks_on_table)
        self._target = np.array(self._env._target_effector_pose.translation[:2], np.float64)
        self.time_s, self.step_count = 0.0, 0
        if instruction is None:
            a, b = self._rng.choice(len(self.blocks_on_table), 2, replace=False)
            instruction = block2block_instruction(self._rng, self.blocks_on_table[a],
                                                  self.blocks_on_table[b])
        self.instruction = instruction
        return self.observe()

    def step(self, action) -> SimFrame:
        a = np.asarray(action, np.float64).reshape(2)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {action!r}")
        # The env's step would also render its own frame; ours is rendered by observe().
        self._env._step_robot_and_sim(np.clip(a, -0.1, 0.1))
        self._target = np.array(self._env._target_effector_pose.translation[:2], np.float64)
        self.time_s += 0.1
        self.step_count += 1
        return self.observe()

    def close(self):
        for env in self._envs.values():
            env.pybullet_client.disconnect()
        self._envs, self._client = {}, None
