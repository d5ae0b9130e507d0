"""The PyBullet Language-Table world: determinism, reset rules, actions, pushing, ground truth."""

import numpy as np
import pytest

pytest.importorskip("pybullet")

from cobra_ros.langtable.sim import CameraJitter, LangTableSim, SimCamera  # noqa: E402
from cobra_ros.langtable.sim import world as simworld  # noqa: E402
from cobra_ros.langtable.world import BLOCK_4, BLOCK_8, X_MAX, X_MIN, Y_MAX, Y_MIN  # noqa: E402

SIZE = (320, 180)
BUFFER = 0.08


@pytest.fixture(scope="module")
def sim():
    s = LangTableSim(seed=0, size=SIZE)
    yield s
    s.close()


def test_seeded_reset_is_deterministic_whatever_ran_before(sim):
    sim.reset(seed=11, block_mode="BLOCK_8")
    for _ in range(3):
        sim.step((0.05, -0.04))
    a = sim.reset(seed=3, block_mode="BLOCK_4")
    other = LangTableSim(seed=99, size=SIZE, block_mode="N_CHOOSE_K")
    b = other.reset(seed=3, block_mode="BLOCK_4")
    assert np.array_equal(a.rgb, b.rgb)
    assert [(x.name, x.xy, x.yaw) for x in a.blocks] == [(x.name, x.xy, x.yaw) for x in b.blocks]
    assert a.instruction == b.instruction
    a2, b2 = sim.step((0.03, 0.02)), other.step((0.03, 0.02))
    assert np.array_equal(a2.rgb, b2.rgb)
    c = other.reset(seed=4)
    assert not np.array_equal(a.rgb, c.rgb)
    other.close()


@pytest.mark.parametrize("mode,seeds", [("BLOCK_4", range(3)), ("BLOCK_8", range(3)),
                                        ("N_CHOOSE_K", range(3))])
def test_reset_rules_hold(sim, mode, seeds):
    lo = np.array([X_MIN + BUFFER, Y_MIN + BUFFER])
    hi = np.array([X_MAX - BUFFER, Y_MAX - BUFFER])
    train = set(simworld.n_choose_k_subsets(True))
    for seed in seeds:
        frame = sim.reset(seed=seed, block_mode=mode)
        names = sim.blocks_on_table
        if mode == "BLOCK_4":
            assert names == BLOCK_4
        elif mode == "BLOCK_8":
            assert names == BLOCK_8
        else:
            assert 4 <= len(names) <= 10 and tuple(names) in train
        assert {b.name for b in frame.blocks if b.in_set} == set(names)
        # the effector starts inside the buffered workspace, the arm has reached it
        assert np.all(frame.effector_target_xy >= lo) and np.all(frame.effector_target_xy <= hi)
        assert np.linalg.norm(frame.effector_xy - frame.effector_target_xy) < 0.005
        # sampled layout: buffered bounds, centres > 1.75 cm apart and > 6 cm from the effector
        xy = np.array([p[1] for p in sim.layout])
        assert [p[0] for p in sim.layout] == list(names)
        assert np.all(xy >= lo) and np.all(xy <= hi)
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert d.min() > simworld.BLOCK_DISTANCE
        assert np.linalg.norm(xy - frame.effector_target_xy, axis=1).min() > simworld.ARM_DISTANCE
        # settled: at rest, upright, on the ground; the others parked off the table
        assert np.abs(sim.velocities()).max() < 1e-2
        for b in frame.blocks:
            if b.in_set:
                assert b.upright and abs(b.z) < 0.005
            else:
                assert not b.on_board and b.xy[0] > 4 and b.visible_fraction == 0


def test_action_moves_target_as_the_original(sim):
    frame = sim.reset(seed=5)
    start = frame.effector_target_xy.copy()
    f1 = sim.step((0.03, -0.02))
    assert np.allclose(f1.effector_target_xy, start + [0.03, -0.02])
    f2 = sim.step((0.5, -7.0))  # each component clipped to +-0.1
    assert np.allclose(f2.effector_target_xy, np.clip(start + [0.13, -0.12], [X_MIN, Y_MIN],
                                                      [X_MAX, Y_MAX]))
    for _ in range(8):
        f3 = sim.step((0.1, 0.1))  # and the target to the workspace
    assert np.allclose(f3.effector_target_xy, [X_MAX, Y_MAX])
    assert f3.step == 10 and f3.time_s == pytest.approx(1.0)
    for _ in range(5):
        f4 = sim.step((0.0, 0.0))
    assert np.linalg.norm(f4.effector_xy - [X_MAX, Y_MAX]) < 0.01  # the arm follows
    with pytest.raises(ValueError):
        sim.step((np.nan, 0.0))


def _clear_board_with_effector_at(sim, target):
    frame = sim.observe()
    for _ in range(6):
        frame = sim.step(np.clip(np.subtract(target, frame.effector_target_xy), -0.1, 0.1))
    assert np.allclose(frame.effector_target_xy, target)
    for i, name in enumerate(BLOCK_4):
        sim.place(name, (0.2 + 0.1 * i, 0.27))  # along the far right edge, out of the way
    return frame.effector_target_xy


def test_a_block_in_the_effectors_way_moves_when_pushed(sim):
    sim.reset(seed=6)
    # a clear lane along +y in front of the effector, one block in it, one aside
    eff = _clear_board_with_effector_at(sim, (0.375, -0.2))
    sim.place("blue_cube", eff + [0.0, 0.07])
    sim.place("red_moon", eff + [0.12, 0.07])
    before = sim.observe()
    for _ in range(8):
        frame = sim.step((0.0, 0.025))
    moved = np.subtract(frame.block("blue_cube").xy, before.block("blue_cube").xy)
    assert moved[1] > 0.1 and abs(moved[0]) < 0.05
    still = np.subtract(frame.block("red_moon").xy, before.block("red_moon").xy)
    assert np.linalg.norm(still) < 0.005


def _check_truth_against_mask(frame, sim):
    seg = frame.segmentation
    checked = 0
    for b in frame.blocks:
        mask = seg == sim.block_ids[b.name]
        assert b.pixels == mask.sum()
        if not mask.any():
            assert b.bbox == (0, 0, 0, 0) and b.visible_fraction == 0
            continue
        vs, us = np.nonzero(mask)
        assert b.bbox == (us.min(), vs.min(), us.max() + 1, vs.max() + 1)
        if b.visible_fraction > 0.9 and b.upright:
            u, v = int(np.floor(b.pixel[0])), int(np.floor(b.pixel[1]))
            assert mask[v, u], b
            checked += 1
    return checked


def test_ground_truth_pixels_agree_with_the_segmentation_mask(sim):
    checked = 0
    for seed in range(3):
        sim.reset(seed=seed, block_mode="BLOCK_8")
        checked += _check_truth_against_mask(sim.observe(keep_segmentation=True), sim)
        cam = SimCamera((240, 180), CameraJitter.sample(np.random.default_rng(seed)))
        checked += _check_truth_against_mask(sim.observe(cam, keep_segmentation=True), sim)
    assert checked >= 24


def test_visible_fraction_sees_the_arm_hide_a_block(sim):
    sim.reset(seed=7)
    eff = _clear_board_with_effector_at(sim, (0.45, 0.1))
    # put the star where the arm (not the effector) covers the table in the image
    seg = sim.observe(keep_segmentation=True).segmentation
    vs, us = np.nonzero(seg == sim.arm_id)
    spots = [sim.camera.pixel_to_table(u + 0.5, v + 0.5, 0.02) for u, v in zip(us, vs)]
    spots = [p for p in spots if 0.2 < p[0] < 0.5 and np.linalg.norm(p - eff) > 0.08]
    assert spots
    sim.place("green_star", np.median(spots, axis=0))
    sim.place("blue_cube", (0.5, -0.2))
    frame = sim.observe(keep_segmentation=True)
    star, cube = frame.block("green_star"), frame.block("blue_cube")
    assert cube.visible_fraction > 0.9
    assert star.visible_fraction < 0.5
    u, v = (int(c) for c in star.pixel)
    assert frame.segmentation[v, u] == sim.arm_id


@pytest.mark.parametrize("size,jitter", [((640, 360), None), ((320, 240), CameraJitter(
    (0.04, -0.03, 0.02), (0.05, -0.08, 0.03), 1.1))])
def test_pixel_to_table_inverts_project(size, jitter):
    cam = SimCamera(size, jitter)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(0.15, 0.6, 50), rng.uniform(-0.3, 0.3, 50), np.zeros(50)]
    uv = cam.project(pts)
    back = np.array([cam.pixel_to_table(u, v) for u, v in uv])
    assert np.allclose(back, pts[:, :2], atol=1e-9)
    assert np.allclose(cam.K[0, 0], 0.803 * 16 / 9 * size[1] * (jitter.zoom if jitter else 1))
    assert np.isnan(cam.project([[2.0, 0.0, 0.5]])).all()  # behind the camera


def test_scenes_carry_the_worlds_ground_truth_through_a_randomised_camera(sim):
    from cobra_ros.langtable.sim import scenes

    sim.reset(seed=8, block_mode="BLOCK_8")
    jitter = CameraJitter.sample(np.random.default_rng(1))
    frame = sim.observe(SimCamera((240, 180), jitter), keep_segmentation=True)
    rendered = scenes.frame_to_rendered(frame)
    assert [t.name for t in rendered.blocks] == [b.name for b in frame.blocks if b.in_set]
    for t in rendered.blocks:  # the top-face centre seen from above lies on the block
        if t.visible > 0.9:
            assert frame.segmentation[int(t.v), int(t.u)] == sim.block_ids[t.name]
    # randomize=0 is the dataset camera and look; 4:3 frames keep the height
    plain = scenes.sim_scene(sim, np.random.default_rng(2), BLOCK_4, SIZE,
                             scenes.SceneOptions(randomize=0))
    again = sim.observe()
    assert np.array_equal(plain.rgb, again.rgb)
    wide = scenes.sim_scene(sim, np.random.default_rng(2), BLOCK_4, SIZE,
                            scenes.SceneOptions(four_three=1.0))
    assert wide.rgb.shape == (180, 240, 3)
    assert {t.name for t in wide.blocks} == set(BLOCK_4)


def _original_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("language_table") is not None


@pytest.mark.skipif(_original_installed(), reason="Google's language_table is installed")
def test_original_without_the_package_says_what_to_install():
    with pytest.raises(ImportError, match="language_table"):
        LangTableSim(original=True, size=SIZE)


@pytest.mark.skipif(not _original_installed(), reason="needs Google's language_table package")
def test_original_runs_the_same_api_and_ground_truth():
    orig = LangTableSim(original=True, seed=0, size=SIZE)
    frame = orig.reset(seed=2, block_mode="BLOCK_8")
    assert {b.name for b in frame.in_set} == set(BLOCK_8)
    start = frame.effector_target_xy.copy()
    frame = orig.step((0.5, 0.0))
    assert np.allclose(frame.effector_target_xy, np.clip(start + [0.1, 0.0], [X_MIN, Y_MIN],
                                                         [X_MAX, Y_MAX]), atol=1e-6)
    assert _check_truth_against_mask(orig.observe(keep_segmentation=True), orig) >= 4
    orig.close()
