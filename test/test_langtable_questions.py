import collections

import numpy as np
import pytest

from cobra_ros.langtable import questions as Q, world
from cobra_ros.langtable.world import BlockPose


def B(name, x, y):
    return BlockPose(name, x, y, 0.0)


def test_relation_labels_on_hand_built_scenes():
    moon, cube = B("red_moon", 0.30, -0.10), B("blue_cube", 0.30, 0.10)
    assert Q.relation_label("left_of", moon, cube) is True
    assert Q.relation_label("right_of", moon, cube) is False
    assert Q.relation_label("right_of", cube, moon) is True
    assert Q.relation_label("above", moon, cube) is None  # same row: too close to call
    top, bottom = B("green_star", 0.25, 0.0), B("yellow_star", 0.45, 0.01)
    assert Q.relation_label("above", top, bottom) is True  # small x is the top of the image
    assert Q.relation_label("below", top, bottom) is False
    assert Q.relation_label("left_of", top, bottom) is None  # 1 cm apart sideways is ambiguous
    near = B("green_cube", 0.30, -0.03)
    assert Q.relation_label("near", moon, near) is True
    assert Q.relation_label("near", moon, cube) is False
    assert Q.relation_label("far_from", moon, cube) is None  # 0.20 m: neither near nor far
    assert Q.relation_label("far_from", B("a_b", 0.25, -0.2), B("c_d", 0.45, 0.2)) is True
    scene = [moon, cube, near]
    assert Q.relation_label("closest_to", near, moon, others=scene) is True
    assert Q.relation_label("closest_to", cube, moon, others=scene) is False
    mid = B("yellow_pentagon", 0.30, 0.0)
    assert Q.relation_label("between", mid, moon, cube) is True
    assert Q.relation_label("between", B("red_pentagon", 0.45, 0.0), moon, cube) is False
    assert Q.relation_label("between", B("red_pentagon", 0.30, 0.15), moon, cube) is False


def test_perspective_conflicts_are_skipped():
    cam = world.Camera()

    def seen(name, x, y):
        u, v = cam.project([[x, y, world.BLOCK_HEIGHT]])[0]
        return world.BlockTruth(name, *name.split("_"), x, y, 0.0, u, v, 1.0)

    near_cam, far_cam = seen("red_moon", 0.52, 0.20), seen("blue_cube", 0.23, 0.235)
    assert (
        near_cam.y < far_cam.y - Q.SIDE_MARGIN and near_cam.u > far_cam.u
    )  # the board is a trapezoid
    assert Q.relation_label("left_of", near_cam, far_cam) is None
    assert (
        Q.relation_label("left_of", B("red_moon", 0.52, 0.20), B("blue_cube", 0.23, 0.235)) is True
    )


def test_description_is_canonical():
    blocks = [B("blue_cube", 0.375, 0.0), B("red_moon", 0.25, -0.2), B("green_star", 0.5, 0.2)]
    assert Q.describe_scene(blocks) == (
        "There are 3 blocks: a red moon at the top left, a blue cube in the "
        "center and a green star at the bottom right."
    )
    assert Q.describe_scene(blocks[:1]) == "There is 1 block: a blue cube in the center."
    assert Q.block_mentions(Q.describe_scene(blocks)) == {"blue_cube", "red_moon", "green_star"}


def test_yes_no_balanced_and_labels_recomputable():
    data = Q.make_examples(seed=1, n_scenes=60, image_size=32)
    counts = collections.Counter()
    for e in data.examples:
        if e.label is None:
            continue
        assert e.answer == ("Yes" if e.label else "No")
        counts[e.relation, e.label] += 1
        truth = {b.name: b for b in data.truths[e.image]}
        if e.relation == "presence":
            assert (e.blocks[0] in truth) == e.label
        else:
            blocks = [truth[n] for n in e.blocks]
            assert Q.relation_label(e.relation, *blocks, others=list(truth.values())) == e.label
    for relation in Q.RELATIONS:
        assert counts[relation, True] == counts[relation, False] > 10, relation


def test_open_questions_answers():
    blocks = [B("red_moon", 0.25, -0.2), B("blue_cube", 0.26, -0.1), B("green_star", 0.5, 0.2)]
    found = {}
    for seed in range(40):
        for e in Q.open_questions(blocks, np.random.default_rng(seed)):
            found[e.question] = e.answer
    assert found["How many blocks are there?"] == "3"
    assert found["Which block is closest to the red moon?"] == "the blue cube"
    assert found["Where is the green star?"] == "at the bottom right"
    assert found["What color is the star?"] == "green"
    assert found["What shape is the blue block?"] == "cube"
    assert found["Which block is furthest to the right?"] == "the green star"


def test_where_questions_ask_about_every_block_clear_of_a_region_edge():
    edge = Q.ROW_EDGES[0]
    blocks = [
        B("red_moon", 0.25, -0.2),
        B("green_star", 0.5, 0.2),
        B("blue_cube", edge + 0.005, 0.0),
    ]
    asked = {e.question: e.answer for e in Q.where_questions(blocks)}
    assert asked == {
        "Where is the red moon?": "at the top left",
        "Where is the green star?": "at the bottom right",
    }


def test_training_can_ask_where_about_every_block():
    from cobra_ros.train import visible_blocks, with_where_all

    data = Q.make_examples(3, 6, image_size=None)
    one_each = collections.Counter(e.image for e in data.examples if e.relation == "where")
    with_where_all(data)
    every = collections.Counter(e.image for e in data.examples if e.relation == "where")
    assert sum(every.values()) > sum(one_each.values())
    for e in data.examples:
        if e.relation == "where":
            block = next(b for b in visible_blocks(data.truths[e.image]) if b.name == e.blocks[0])
            assert e.answer == Q.region_phrase(block.x, block.y)
    assert all(every[i] <= len(visible_blocks(t)) for i, t in enumerate(data.truths))


def test_make_examples_deterministic_and_prefix_stable():
    a = Q.make_examples(seed=5, n_scenes=6, image_size=48)
    b = Q.make_examples(seed=5, n_scenes=6, image_size=48)
    c = Q.make_examples(seed=5, n_scenes=3, image_size=48)
    assert a.images.shape == (6, 48, 48, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert a.examples == b.examples
    np.testing.assert_array_equal(a.images[:3], c.images)
    assert [e for e in a.examples if e.image < 3] == c.examples
    for truth in a.truths:  # pixel ground truth rescaled into the stored image
        assert all(0 <= t.u < 48 and 0 <= t.v < 48 for t in truth)
    # a description for every scene whose blocks the camera all sees (the arm hides some)
    all_seen = sum(all(t.visible >= 0.5 for t in truth) for truth in a.truths)
    assert all_seen >= 2 and sum(e.relation == "describe" for e in a.examples) == all_seen


@pytest.mark.parametrize(
    "text,context,expected",
    [
        ("a red crescent next to the blue square block", None, {"red_moon", "blue_cube"}),
        (
            "the red block is near the star",
            {"red_moon", "green_star", "blue_cube"},
            {"red_moon", "green_star"},
        ),
        ("the red block", {"red_moon", "red_pentagon"}, set()),  # ambiguous: dropped
        (
            "a purple cube and a yellow hexagon",
            {"yellow_star", "blue_cube"},
            {"purple_cube", "yellow_star"},
        ),
        (
            "a red circle",
            {"green_star"},
            {"red_circle"},
        ),  # refers to nothing on the board: a hallucination
        (
            "the pentagon is left of the moon",
            {"red_moon", "yellow_pentagon"},
            {"red_moon", "yellow_pentagon"},
        ),
        ("a star", {"red_moon"}, {"star"}),
        ("two stars and a green-colored half moon", None, {"green_moon"}),
        ("there is no green star, only a blue moon", None, {"blue_moon"}),
        ("Blue Cubes everywhere", None, {"blue_cube"}),
    ],
)
def test_block_mentions(text, context, expected):
    assert Q.block_mentions(text, context) == expected


def test_mention_scores():
    present = {"red_moon", "blue_cube"}
    assert Q.mention_scores("A red moon and a blue cube.", present) == (1.0, 1.0)
    assert Q.mention_scores("A red moon and a green star.", present) == (0.5, 0.5)
    assert Q.mention_scores("Nothing here.", present) == (1.0, 0.0)


def test_region_hits_score_where_a_description_places_each_block():
    blocks = [B("blue_cube", 0.375, 0.0), B("red_moon", 0.25, -0.2), B("green_star", 0.5, 0.2)]
    assert Q.region_hits(Q.describe_scene(blocks), blocks) == (3, 3)
    swapped = (
        "There are 3 blocks: a red moon at the bottom right, a blue cube in the center and "
        "a green star on the left."
    )
    assert Q.region_hits(swapped, blocks) == (1, 3)
    assert Q.region_hits("A red moon at the top left and a blue cube.", blocks) == (
        1,
        1,
    )  # unplaced: not scored
    on_edge = [
        B("red_moon", Q.ROW_EDGES[0], -0.2)
    ]  # on the top/middle row boundary: either is fair
    assert Q.region_hits("A red moon at the top left.", on_edge) == (0, 0)


def test_make_examples_caches_to_disk_and_keeps_the_2d_source(tmp_path):
    fresh = Q.make_examples(seed=3, n_scenes=2, image_size=32, source="2d", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("examples-*.pkl"))) == 1
    cached = Q.make_examples(seed=3, n_scenes=2, image_size=32, source="2d", cache_dir=tmp_path)
    np.testing.assert_array_equal(fresh.images, cached.images)
    assert fresh.examples == cached.examples
    sim = Q.make_examples(seed=3, n_scenes=2, image_size=32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("examples-*.pkl"))) == 2  # the source is part of the key
    assert not np.array_equal(sim.images, fresh.images)
    with pytest.raises(ValueError, match="source"):
        Q.make_examples(seed=3, n_scenes=1, source="pixels")
