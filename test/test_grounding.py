"""The grounding answer read strictly, the table geometry against the simulator's own camera, and
engine.locate on a real (tiny) model."""

import math

import numpy as np
import pytest
import torch

from cobra_ros.langtable.sim.camera import SimCamera
from cobra_ros.model.engine import Located
from cobra_ros.model.grounding import (BLOCK_HALF_HEIGHT, GroundingError, TableCamera,
                                       box_pixels, grounding_prompt, parse_box, rpy_matrix)
from cobra_ros.ros.params import LANGTABLE_CAMERA_RPY, LANGTABLE_CAMERA_XYZ


@pytest.mark.parametrize("text, box", [
    ("[0.12, 0.34, 0.56, 0.78]", (0.12, 0.34, 0.56, 0.78)),  # the release's format, 2 decimals
    ("[0.00, 0.00, 1.00, 1.00]", (0.0, 0.0, 1.0, 1.0)),
    ("  [ 0.1 ,0.2,  0.3 , 0.4 ]\n", (0.1, 0.2, 0.3, 0.4)),
    ("[0, .5, 1, 0.75]", (0.0, 0.5, 1.0, 0.75)),
    ("[0.123456, 0.2, 0.3, 0.4]", (0.123456, 0.2, 0.3, 0.4)),
])
def test_well_formed_boxes_parse(text, box):
    assert parse_box(text) == pytest.approx(box, abs=1e-12)


@pytest.mark.parametrize("text, reason", [
    ("", "empty answer"),
    ("Yes", "no opening '['"),
    ("0.1, 0.2, 0.3, 0.4", "no opening '['"),
    ("[0.1, 0.2, 0.3, 0.4", "no closing ']'"),
    ("[0.1, 0.2, 0.3]", "3 numbers, expected 4"),
    ("[0.1, 0.2, 0.3, 0.4, 0.5]", "5 numbers, expected 4"),
    ("[0.1, 0.2, 0.3, 0.4] done", "text after the box: 'done'"),
    ("[0.1, 0.2, 0.3, 0.4][0.1, 0.2, 0.3, 0.4]", "text after the box"),
    ("[0.1, 0.2, red, 0.4]", "not a number: 'red'"),
    ("[0.1, 0.2, 1.3, 0.4]", "outside 0..1: x2=1.3"),
    ("[-0.1, 0.2, 0.3, 0.4]", "outside 0..1: x1=-0.1"),
    ("[0.5, 0.2, 0.3, 0.4]", "inverted: x1=0.5 >= x2=0.3"),
    ("[0.1, 0.4, 0.3, 0.4]", "inverted: y1=0.4 >= y2=0.4"),
    ("[nan, 0.2, 0.3, 0.4]", "not a number: 'nan'"),
])
def test_malformed_boxes_are_clear_errors_quoting_the_answer(text, reason):
    with pytest.raises(GroundingError) as caught:
        parse_box(text)
    assert reason in str(caught.value)
    assert repr(text) in str(caught.value) and caught.value.text == text


def test_the_release_prompt_and_pixels():
    assert grounding_prompt(" the red moon ") == (
        'Please provide the bounding box coordinate of the region this sentence describes: '
        '"the red moon"')
    with pytest.raises(ValueError, match="double quote"):
        grounding_prompt('the "red" moon')
    assert box_pixels((0.1, 0.25, 0.5, 1.0), 320, 180) == (32, 45, 160, 180)


def test_rpy_is_pybullets_euler_convention():
    import pybullet

    for angles in [(0.3, -1.2, 2.5), (np.pi / 5, np.pi, -np.pi / 2), (-2.0, 0.4, 0.0)]:
        quat = pybullet.getQuaternionFromEuler(angles)
        reference = np.array(pybullet.getMatrixFromQuaternion(quat)).reshape(3, 3)
        np.testing.assert_allclose(rpy_matrix(*angles), reference, atol=1e-6)


def sim_table_camera(sim: SimCamera) -> TableCamera:
    """The node's calibration from what langtable_sim publishes: CameraInfo K (pixel centres on
    integers: the principal point half a pixel up-left of the sim's) and the default pose."""
    K = sim.K.copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return TableCamera.from_pose(K, sim.width, sim.height, LANGTABLE_CAMERA_XYZ,
                                 LANGTABLE_CAMERA_RPY)


@pytest.mark.parametrize("size", [(320, 180), (640, 360)])
def test_a_projected_table_point_locates_back_within_a_millimetre(size):
    sim = SimCamera(size)
    camera = sim_table_camera(sim)
    np.testing.assert_allclose(camera.rotation, sim.rotation, atol=1e-12)
    rng = np.random.default_rng(0)
    for x, y in rng.uniform([0.2, -0.25], [0.55, 0.25], (20, 2)):
        u, v = sim.project([x, y, BLOCK_HALF_HEIGHT])  # continuous image coordinates
        half = rng.uniform(3, 15, 2)  # any box centred there
        box = ((u - half[0]) / size[0], (v - half[1]) / size[1],
               (u + half[0]) / size[0], (v + half[1]) / size[1])
        point = camera.table_point(box)
        assert np.linalg.norm(point - [x, y, BLOCK_HALF_HEIGHT]) < 1e-3


def test_the_sim_nodes_camera_info_gives_the_same_calibration():
    from std_msgs.msg import Header

    from cobra_ros.ros.sim_node import camera_info

    sim = SimCamera((320, 180))
    info = camera_info(sim, Header())
    camera = TableCamera.from_pose(info.k, info.width, info.height, LANGTABLE_CAMERA_XYZ,
                                   LANGTABLE_CAMERA_RPY)
    np.testing.assert_allclose(camera.K, sim_table_camera(sim).K, atol=1e-9)


def test_a_box_above_the_horizon_has_no_table_point():
    camera = sim_table_camera(SimCamera((320, 180)))
    flipped = TableCamera(camera.K, camera.width, camera.height, -camera.rotation,
                          camera.position)
    with pytest.raises(ValueError, match="does not look at the table"):
        flipped.table_point((0.4, 0.4, 0.6, 0.6))


def test_locate_on_a_real_model_parses_or_says_why(tiny_engine, rgb):
    """The tiny random model was never taught to locate: whatever it says is either a parsed box
    or a GroundingError quoting it; the score is the greedy answer's token probability."""
    frame = tiny_engine.encode(rgb(3, 90, 160))
    prompt = grounding_prompt("the red moon")
    answer = tiny_engine.ask(frame, prompt, 40)
    try:
        located = tiny_engine.locate(frame, "the red moon")
    except GroundingError as err:
        assert err.text == answer.text
        with pytest.raises(GroundingError):
            parse_box(answer.text)
    else:
        assert isinstance(located, Located) and located.text == answer.text
        assert located.box == parse_box(answer.text)
        assert located.box_pixels == box_pixels(located.box, 160, 90)
    # the score, one token at a time on the kept state (the recurrent path) against the
    # teacher-forced pass
    ids = answer.token_ids
    assert ids, "the greedy answer is empty"
    lm = tiny_engine.model.llm
    prompt_ids = tiny_engine.tokenizer.prompt_ids(prompt)
    with torch.inference_mode():
        logits, state = lm(lm.embed(torch.tensor([prompt_ids])), frame.state, last_only=True)
        probs = []
        for token in ids:
            p = torch.softmax(logits[0, -1].float(), -1)
            assert int(p.argmax()) == token  # greedy
            probs.append(float(p[token]))
            logits, state = lm(lm.embed(torch.tensor([[token]])), state, last_only=True)
    score = tiny_engine.answer_probability(frame, prompt, ids)
    assert math.isclose(score, sum(probs) / len(probs), abs_tol=1e-4)


def test_locate_batch_answers_each_expression_as_alone(tiny_engine, rgb):
    frame = tiny_engine.encode(rgb(4, 90, 160))
    expressions = ["the red moon", "the block left of the green star", "the star"]
    batch = tiny_engine.locate_batch([frame] * 3, expressions)
    for expression, found in zip(expressions, batch):
        alone = tiny_engine.ask(frame, grounding_prompt(expression), 40).text
        assert found.text == alone
        if isinstance(found, Located):
            assert found.box == parse_box(alone)
        else:
            assert isinstance(found, GroundingError)
