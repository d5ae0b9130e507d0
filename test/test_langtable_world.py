import numpy as np
import pytest

from cobra_ros.langtable import rlds, world
from cobra_ros.langtable.episodes import iter_push_episodes, make_push_episode

REFERENCE = {c: np.array(v) for c, v in world.COLOUR_RGB.items()}


def _nearest_colour(pixel):
    chroma = pixel / max(pixel.sum(), 1)
    return min(REFERENCE, key=lambda c: np.abs(chroma - REFERENCE[c] / REFERENCE[c].sum()).sum())


def test_footprints_match_reference_extents():
    # cube 3.97x3.97, moon 5.25x2.57, star 4.44x4.08, pentagon 4.44x4.13 cm (mesh extents)
    want = {
        "cube": (3.97, 3.97),
        "moon": (5.25, 2.57),
        "star": (4.44, 4.08),
        "pentagon": (4.44, 4.13),
    }
    for shape, (a, b) in want.items():
        extent = np.ptp(world.FOOTPRINTS[shape], axis=0) * 100
        assert sorted(extent) == pytest.approx(sorted((a, b)), abs=0.25), shape


def test_camera_directions_follow_the_dataset():
    cam = world.Camera()
    top, bottom, left, right = cam.project(
        [[0.2, 0, 0], [0.55, 0, 0], [0.375, -0.2, 0], [0.375, 0.2, 0]]
    )
    assert top[1] < bottom[1]  # small x (toward the robot) is up in the image
    assert left[0] < right[0]  # y < 0 is left
    assert abs(left[1] - right[1]) < 1e-6
    # The board centre lands near the image centre, as with the env's camera pose.
    u, v = cam.project([[world.BOARD_CENTER_X, 0, 0]])[0]
    assert abs(u - 320) < 1 and abs(v - 180) < 30


def test_same_seed_same_image_and_subsets():
    a = world.render(world.sample_scene(np.random.default_rng(7)), (320, 180))
    b = world.render(world.sample_scene(np.random.default_rng(7)), (320, 180))
    c = world.render(world.sample_scene(np.random.default_rng(8)), (320, 180))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert a.blocks == b.blocks
    assert not np.array_equal(a.rgb, c.rgb)
    counts = set()
    for seed in range(30):
        scene = world.sample_scene(np.random.default_rng(seed), n_blocks=(4, 8))
        names = [p.name for p in scene.blocks]
        counts.add(len(names))
        assert set(names) <= set(world.BLOCK_8) and len(set(names)) == len(names)
        xy = np.array([[p.x, p.y] for p in scene.blocks])
        assert np.all(xy[:, 0] >= world.X_MIN + world.SPAWN_BUFFER)
        assert np.all(xy[:, 0] <= world.X_MAX - world.SPAWN_BUFFER)
        assert np.all(np.abs(xy[:, 1]) <= world.Y_MAX - world.SPAWN_BUFFER)
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert d.min() >= 0.06
    assert len(counts) >= 3  # scenes really vary in how many blocks they show


@pytest.mark.parametrize("seed", range(6))
def test_rendered_colour_at_ground_truth_pixel(seed):
    scene = world.sample_scene(np.random.default_rng(seed))
    frame = world.render(scene)
    h, w = frame.rgb.shape[:2]
    for block in frame.blocks:
        if block.visible < 0.99:
            continue
        u, v = int(round(block.u)), int(round(block.v))
        assert 0 <= u < w and 0 <= v < h
        patch = frame.rgb[v - 1 : v + 2, u - 1 : u + 2].reshape(-1, 3).astype(float).mean(0)
        assert _nearest_colour(patch) == block.colour, (block.name, patch)
        assert patch.max() > 110  # a lit block, not the dark board
    # Far from every block and the arm, the board is dark grey.
    corner = frame.rgb[300, 320].astype(int)
    if (
        all(np.hypot(b.u - 320, b.v - 300) > 40 for b in frame.blocks)
        and abs(frame.effector_uv[0] - 320) > 60
    ):
        assert corner.max() < 110 and np.ptp(corner) < 30


def test_push_episode_moves_the_block_and_exports(tmp_path):
    episode = make_push_episode(np.random.default_rng([0, 2]))
    again = make_push_episode(np.random.default_rng([0, 2]))
    assert episode.instruction == again.instruction and len(episode.steps) == len(again.steps)
    assert episode.success and episode.steps[-1].is_terminal and episode.steps[-1].is_last
    start = {p.name: (p.x, p.y) for p in episode.steps[0].scene.blocks}
    end = {p.name: (p.x, p.y) for p in episode.steps[-1].scene.blocks}
    d_start = np.hypot(*np.subtract(start[episode.block], start[episode.target]))
    d_end = np.hypot(*np.subtract(end[episode.block], end[episode.target]))
    assert d_end < 0.05 < d_start
    for step in episode.steps:
        assert np.all(np.abs(step.action) <= 0.1)
    words = episode.instruction.split()
    assert (
        words[0] in ("push", "move", "slide", "put")
        and world.block_text(episode.block) in episode.instruction
    )

    rlds.write_rlds(tmp_path, [episode.to_rlds("synthetic-0", size=(160, 90))])
    (read,) = rlds.iter_episodes(tmp_path)
    assert read.instruction == episode.instruction
    assert len(read.steps) == len(episode.steps) - 1  # the terminal step is dropped
    assert read.steps[0].rgb.shape == (90, 160, 3)
    assert rlds.read_features(tmp_path)["steps/observation/rgb"].shape == (90, 160, 3)


def test_episode_stream_is_prefix_stable():
    first = [e.instruction for e in iter_push_episodes(3, 2)]
    more = [e.instruction for e in iter_push_episodes(3, 4)]
    assert more[:2] == first
