"""The scripted pusher on the PyBullet world, fed the world's own block positions: its spec is
>= 80% block-to-block success within 200 steps (the upper bound the closed loop compares with)."""

import numpy as np

from cobra_ros.control.pusher import Pusher, succeeded
from cobra_ros.langtable.sim import LangTableSim

SEEDS = range(100, 120)
MAX_STEPS = 200


def run_episode(sim, seed, pusher):
    frame = sim.reset(seed=seed)
    names = [b.name for b in frame.in_set]
    a, b = np.random.default_rng(seed).choice(len(names), 2, replace=False)
    block, target = names[a], names[b]
    for step in range(MAX_STEPS):
        if succeeded(frame.block(block).xy, frame.block(target).xy):
            return True, step
        frame = sim.step(pusher.act(frame.effector_xy, frame.block(block).xy,
                                    frame.block(target).xy))
    return succeeded(frame.block(block).xy, frame.block(target).xy), MAX_STEPS


def test_the_pusher_on_truth_positions_succeeds_at_least_80_percent():
    pusher = Pusher()
    with LangTableSim(size=(64, 36)) as sim:  # physics does not depend on the frame size
        results = [run_episode(sim, seed, pusher) for seed in SEEDS]
    wins = sum(ok for ok, _ in results)
    assert wins >= 0.8 * len(results), results


def test_the_pusher_goes_round_a_block_it_is_in_front_of():
    """Effector between the block and the goal: it goes round the block, never closer than a
    block's half-width plus its own radius, and ends behind it on the push line."""
    pusher = Pusher()
    block, target = np.array([0.4, 0.0]), np.array([0.4, 0.2])
    effector = np.array([0.4, 0.05])
    for _ in range(10):  # the block stands still here: stop once the push begins
        delta = pusher.act(effector, block, target)
        assert np.all(np.abs(delta) <= 0.1)
        effector = effector + delta
        assert np.linalg.norm(effector - block) > 0.02 + 0.0127
        if effector[1] < -0.02 and abs(effector[0] - 0.4) < pusher.aligned:
            break
    else:
        raise AssertionError(f"not behind the block after 10 steps: {effector}")
    assert pusher.act(effector, block, target)[1] > 0


def test_behind_the_block_on_the_line_it_pushes_toward_the_goal():
    pusher = Pusher()
    block, target = np.array([0.4, 0.0]), np.array([0.4, 0.2])
    delta = pusher.act(block - [0.0, pusher.behind], block, target)
    assert delta[1] > 0 and abs(delta[0]) < 1e-9
