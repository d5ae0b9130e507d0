"""A scripted pushing controller for block-to-block tasks (no learned policy, no ROS).

Given where the effector is, where the block to move is and where the block to reach is (board
frame, metres, from whatever the caller trusts: the cobra node's answers, or the simulator's
ground truth for an upper bound), `Pusher.act` returns the next effector delta: go round the
block to the side away from the goal, then push it along the line to the goal, steering the push
back onto that line. It keeps no state: each step is decided from the positions it is given, so
a position that jumps (a new answer) is followed at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUCCESS_DISTANCE = 0.05  # Language-Table's block-to-block success radius (rewards/block2block.py)


@dataclass(frozen=True)
class Pusher:
    stop_short: float = 0.02  # aim the block this far from the goal block's centre
    behind: float = 0.045  # effector distance behind the block's centre before a push
    clearance: float = 0.07  # how wide the effector goes round the block
    approach_step: float = 0.04  # metres per step while going round
    push_step: float = 0.02  # metres per step while pushing (slow: the block stays in front)
    aligned: float = 0.015  # off the push line by less than this: push
    max_action: float = 0.1  # the world's action bound per axis

    def goal(self, block, target) -> np.ndarray:
        """Where the block should end: on the line from the target to the block, stop_short
        from the target's centre."""
        block, target = np.asarray(block, float), np.asarray(target, float)
        away = block - target
        norm = np.linalg.norm(away)
        away = away / norm if norm > 1e-9 else np.array([-1.0, 0.0])
        return target + away * self.stop_short

    def act(self, effector, block, target) -> np.ndarray:
        """The effector delta (dx, dy) for this step."""
        effector, block = np.asarray(effector, float), np.asarray(block, float)
        goal = self.goal(block, target)
        to_goal = goal - block
        distance = np.linalg.norm(to_goal)
        if distance < 1e-3:
            return np.zeros(2)
        push = to_goal / distance
        side = np.array([-push[1], push[0]])
        start = block - push * self.behind  # where a push begins
        rel = effector - block
        along, across = rel @ push, rel @ side
        if along < -0.5 * self.behind and abs(across) < self.aligned:
            # behind the block and on the line: push through it toward the goal, correcting
            # sideways so that the contact stays on the line
            step = push * min(self.push_step, distance + 0.01) - side * across * 0.5
            return self._clip(step)
        sign = 1.0 if across >= 0 else -1.0
        if along > -0.02 and abs(across) < 0.8 * self.clearance:
            # in front of or beside the block: straight out to the side first, clear of it
            waypoint = block + push * along + side * sign * self.clearance
        elif along > -0.02:
            # clear of it at the side: back past it, still at the side
            waypoint = block + side * sign * self.clearance - push * self.behind
        else:
            waypoint = start
        return self._clip(self._toward(effector, waypoint, self.approach_step))

    @staticmethod
    def _toward(here, there, step) -> np.ndarray:
        delta = there - here
        norm = np.linalg.norm(delta)
        return delta if norm <= step else delta / norm * step

    def _clip(self, delta) -> np.ndarray:
        return np.clip(delta, -self.max_action, self.max_action)


def succeeded(block_xy, target_xy) -> bool:
    """Block-to-block success as the dataset judges it: centres within 0.05 m."""
    return float(np.linalg.norm(np.asarray(block_xy) - np.asarray(target_xy))) < SUCCESS_DISTANCE
