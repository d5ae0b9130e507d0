"""Synthetic block-to-block pushing episodes in the Language-Table schema.

A scripted "teleoperator" drives the effector target around the chosen block, then pushes it toward
the target block with simple disc-contact kinematics (the effector shoves blocks out of its way,
blocks shove each other). Steps follow RLDS conventions: step t holds the observation before its
action; the last step is_last, and is_terminal too when the episode ended in success.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from cobra_ros.langtable import rlds
from cobra_ros.langtable.world import (
    BLOCK_8,
    BLOCK_RADIUS,
    DEFAULT_SIZE,
    EFFECTOR_RADIUS,
    X_MAX,
    X_MIN,
    Y_MAX,
    Y_MIN,
    BlockPose,
    Scene,
    block_text,
    render,
    sample_scene,
)

VERBS = ("push", "move", "slide", "put")
PREPOSITIONS = ("to", "towards", "close to", "next to")
GOAL_REWARD = 100.0  # the env's reward factory is built with goal_reward=100
SUCCESS_DISTANCE = 0.05  # block2block success radius
MAX_ACTION = 0.1  # action space Box(-0.1, 0.1)
CONTACT = BLOCK_RADIUS + EFFECTOR_RADIUS


def block2block_instruction(rng: np.random.Generator, block: str, target: str) -> str:
    """'push the red moon to the blue cube' and its verb / preposition variants."""
    verb = VERBS[rng.integers(len(VERBS))]
    prep = PREPOSITIONS[rng.integers(len(PREPOSITIONS))]
    return f"{verb} the {block_text(block)} {prep} the {block_text(target)}"


@dataclass
class SyntheticStep:
    scene: Scene  # world state observed at this step
    effector_target: np.ndarray  # (2,) commanded effector position
    action: np.ndarray  # (2,) change of the commanded position taken after this observation
    reward: float
    is_first: bool
    is_last: bool
    is_terminal: bool


@dataclass
class SyntheticEpisode:
    instruction: str
    block: str
    target: str
    steps: list  # of SyntheticStep
    success: bool

    def render_steps(self, size=DEFAULT_SIZE) -> Iterator:
        """Rendered frame (image + ground truth) of every step."""
        for step in self.steps:
            yield render(step.scene, size)

    def to_rlds(self, episode_id: str, size=DEFAULT_SIZE) -> rlds.Episode:
        steps = []
        for step, frame in zip(self.steps, self.render_steps(size)):
            steps.append(
                rlds.Step(
                    rgb=frame.rgb,
                    effector_translation=np.asarray(step.scene.effector, np.float32),
                    effector_target_translation=step.effector_target.astype(np.float32),
                    action=step.action.astype(np.float32),
                    reward=step.reward,
                    is_first=step.is_first,
                    is_last=step.is_last,
                    is_terminal=step.is_terminal,
                    instruction=self.instruction,
                )
            )
        return rlds.Episode(episode_id, self.instruction, steps)


def _clip_to_workspace(p: np.ndarray) -> np.ndarray:
    return np.clip(p, [X_MIN, Y_MIN], [X_MAX, Y_MAX])


def _resolve_contacts(effector: np.ndarray, blocks: np.ndarray, yaws: np.ndarray, rng) -> None:
    """Push blocks (in place) out of the effector disc, then apart from each other."""
    for _ in range(3):
        d = blocks - effector
        dist = np.linalg.norm(d, axis=1)
        hit = dist < CONTACT
        if hit.any():
            blocks[hit] = effector + d[hit] / np.maximum(dist[hit, None], 1e-9) * CONTACT
            yaws[hit] += rng.normal(0, 0.05, hit.sum())
        for i in range(len(blocks)):
            for j in range(i + 1, len(blocks)):
                d = blocks[j] - blocks[i]
                dist = np.linalg.norm(d)
                if dist < 2 * BLOCK_RADIUS:
                    push = (2 * BLOCK_RADIUS - dist) / 2 * d / max(dist, 1e-9)
                    blocks[i] -= push
                    blocks[j] += push
        np.clip(
            blocks,
            [X_MIN + BLOCK_RADIUS, Y_MIN + BLOCK_RADIUS],
            [X_MAX - BLOCK_RADIUS, Y_MAX - BLOCK_RADIUS],
            out=blocks,
        )


def _waypoints(start: np.ndarray, block: np.ndarray, direction: np.ndarray) -> list:
    """Points leading the effector behind `block` (opposite `direction`), circling it if needed."""
    clearance = CONTACT + 0.015
    behind = block - direction * clearance
    seg = behind - start
    t = np.clip(np.dot(block - start, seg) / max(np.dot(seg, seg), 1e-12), 0, 1)
    if np.linalg.norm(start + t * seg - block) >= clearance:
        return [behind]
    a0 = np.arctan2(*(start - block)[::-1])
    a1 = np.arctan2(*(-direction)[::-1])
    turn = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
    angles = a0 + turn * np.linspace(0, 1, max(2, int(abs(turn) / (np.pi / 4)) + 1))[1:]
    return [block + clearance * np.array([np.cos(a), np.sin(a)]) for a in angles]


def _teleop_action(target, block, goal_block, speed) -> np.ndarray:
    """Closed-loop pusher: get behind the block on the line to its goal, then push along it."""
    goal = goal_block + (block - goal_block) / max(np.linalg.norm(block - goal_block), 1e-9) * (
        2 * BLOCK_RADIUS + 0.004
    )
    to_goal = goal - block
    remaining = np.linalg.norm(to_goal)
    direction = to_goal / max(remaining, 1e-9)
    offset = block - target
    behind = (
        np.dot(offset, direction) > 0.8 * np.linalg.norm(offset)
        and np.linalg.norm(offset) < CONTACT + 0.02
    )
    if behind:
        aim = goal - direction * (CONTACT - 0.004)
    else:
        aim = _waypoints(target, block, direction)[0]
    delta = aim - target
    return delta / max(1.0, np.linalg.norm(delta) / speed)


def make_push_episode(
    rng: np.random.Generator,
    n_blocks=(4, 8),
    block_set=BLOCK_8,
    speed: float = 0.03,
    max_steps: int = 60,
    randomize: float = 1.0,
) -> SyntheticEpisode:
    """One block-to-block episode: pick a block and a target block, circle behind, push, stop."""
    lo, hi = (n_blocks, n_blocks) if np.isscalar(n_blocks) else n_blocks
    scene = sample_scene(rng, (max(2, lo), max(2, hi)), block_set, randomize=randomize)
    names = [b.name for b in scene.blocks]
    i_block, i_target = rng.choice(len(names), 2, replace=False)
    instruction = block2block_instruction(rng, names[i_block], names[i_target])
    blocks = np.array([[b.x, b.y] for b in scene.blocks])
    yaws = np.array([b.yaw for b in scene.blocks])
    effector = np.array(scene.effector, dtype=np.float64)
    target = effector.copy()

    def snapshot(step_index):
        poses = tuple(
            BlockPose(n, float(x), float(y), float(a)) for n, (x, y), a in zip(names, blocks, yaws)
        )
        app = dataclasses.replace(
            scene.appearance, noise_seed=scene.appearance.noise_seed + step_index
        )
        return Scene(poses, (float(effector[0]), float(effector[1])), app)

    steps, success = [], False
    for t in range(max_steps):
        observed = snapshot(t), target.copy()
        action = _teleop_action(target, blocks[i_block], blocks[i_target], speed) + rng.normal(
            0, 0.002, 2
        )
        action = np.clip(action, -MAX_ACTION, MAX_ACTION)
        target = _clip_to_workspace(target + action)
        effector += (target - effector) * 0.85  # the arm lags its commanded position a little
        _resolve_contacts(effector, blocks, yaws, rng)
        success = np.linalg.norm(blocks[i_block] - blocks[i_target]) < SUCCESS_DISTANCE
        steps.append(
            SyntheticStep(
                observed[0],
                observed[1],
                action.astype(np.float32),
                GOAL_REWARD if success else 0.0,
                t == 0,
                False,
                False,
            )
        )
        if success:
            break
    steps.append(
        SyntheticStep(
            snapshot(len(steps)),
            target.copy(),
            np.zeros(2, np.float32),
            0.0,
            not steps,
            True,
            bool(success),
        )
    )
    return SyntheticEpisode(instruction, names[i_block], names[i_target], steps, bool(success))


def iter_push_episodes(seed: int, n_episodes: int, **kwargs) -> Iterator[SyntheticEpisode]:
    """Episode i depends only on (seed, i), so any prefix of the stream is stable."""
    for i in range(n_episodes):
        yield make_push_episode(np.random.default_rng([seed, i]), **kwargs)
