"""~/locate and the standing questions (~/watch, ~/watch/result) of the cobra node, in its own
process, over real DDS on localhost.

Every answer is compared with the test process's own engine on the same frame. The tiny random
model was never taught to locate, so ~/locate must come back with whatever that engine makes of
the frame: a box, or success=false with the parser's reason; never a crash, always the frame's
header.
"""

import math
import os
import threading
import time

import numpy as np
import pytest
import yaml

from cobra_ros.langtable.sim.camera import SimCamera
from cobra_ros.model.grounding import GroundingError
from cobra_ros.msg import WatchResult
from cobra_ros.ros.image_conversion import to_image_msg
from cobra_ros.srv import Locate, Watch
from harness.ros import CobraClient, NodeProcess

NS = f"/cobra_locate_test_{os.getpid()}"
QUESTIONS = ["Is the red moon next to the blue cube?", "Is there a green star?",
             "Is the yellow pentagon left of the red moon?"]
EXPRESSIONS = ["the red moon"]
SAME = 1e-4


def frame(seed):
    return np.random.default_rng(seed).integers(0, 256, (90, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def node(ros_env, tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "cobra.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "model_path": str(tiny_model_dir), "describe_rate_hz": 0.0, "request_timeout_s": 60.0,
        "watch_questions": QUESTIONS[:1]}}}))
    process = NodeProcess(["--params-file", str(path), "-r", f"__ns:={NS}"])
    yield process
    assert process.stop() == 0, f"unclean shutdown:\n{process.log()[-3000:]}"


@pytest.fixture(scope="module")
def client(node):
    client = CobraClient(NS)
    client.locate_client = client.node.create_client(Locate, f"{client.base}/locate")
    client.watch_client = client.node.create_client(Watch, f"{client.base}/watch")
    client.results, client.results_lock = [], threading.Lock()

    def keep(msg):
        with client.results_lock:
            client.results.append(msg)

    client.node.create_subscription(WatchResult, f"{client.base}/watch/result", keep, 50)
    try:
        client.wait_ready(90.0)
        yield client
    finally:
        client.close()


def stamp(header):
    return header.stamp.sec, header.stamp.nanosec


def test_the_parameter_sets_the_watch_at_start(client):
    """watch_questions from the YAML: the first frame is answered without any request."""
    msg = to_image_msg(frame(1), CobraClient.header(101, 0))
    result = wait_result(client, msg)
    assert list(result.questions) == QUESTIONS[:1] and list(result.expressions) == []
    assert len(result.probabilities) == 1


def wait_result(client, msg, timeout=60.0):
    """Publish the frame until its WatchResult arrives (camera frames are best effort); each try
    under a stamp of its own (nanosec + 1), so that every result names one message."""
    tries = []

    def arrived():
        with client.results_lock:
            found = [r for r in client.results if stamp(r.header) in tries]
        if not found:
            msg.header.stamp.nanosec += 1
            tries.append(stamp(msg.header))
            client.publish(msg)
        return found

    found = client.wait_for(arrived, timeout, f"the WatchResult of frame {tries[:1]}", poll=0.2)
    return found[0]


def test_locate_answers_the_frame_with_a_box_or_the_parsers_reason(client, tiny_engine):
    rgb = frame(2)
    msg = to_image_msg(rgb, CobraClient.header(202, 7, "cam_optical"))
    client.show(msg)
    reply = client.call(client.locate_client, Locate.Request(expression="the red moon"))
    assert stamp(reply.header) == (202, 7) and reply.header.frame_id == "cam_optical"
    state = tiny_engine.encode(rgb)
    try:
        located = tiny_engine.locate(state, "the red moon")
    except GroundingError as err:
        assert not reply.success and reply.message == str(err)
        assert "the model answered" in reply.message and reply.text == err.text
    else:
        assert reply.success and reply.text == located.text
        np.testing.assert_allclose(reply.box, located.box, atol=1e-6)
        assert list(reply.box_pixels) == list(located.box_pixels)
        assert math.isclose(reply.score, located.score, abs_tol=SAME)
    assert not reply.has_point  # no CameraInfo was published


def test_locate_refuses_what_the_prompt_cannot_carry(client):
    for expression, reason in (("", "expression is empty"),
                               ('the "red" moon', "double quote"),
                               ("the red moon", "unknown camera")):
        camera = "nope" if reason == "unknown camera" else ""
        reply = client.call(client.locate_client,
                            Locate.Request(expression=expression, camera=camera))
        assert not reply.success and reason in reply.message


def test_locate_with_camera_info_gives_the_table_point_when_the_box_parses(client, tiny_engine):
    sim = SimCamera((160, 90))
    from cobra_ros.ros.sim_node import camera_info

    info = camera_info(sim, CobraClient.header(0))
    rgb = frame(3)
    msg = to_image_msg(rgb, CobraClient.header(303, 9))
    client.show(msg)

    def calibrated():
        client.publish(info, "camera_info")
        return client.call(client.locate_client, Locate.Request(expression="the red moon"))

    reply = calibrated()
    try:
        tiny_engine.locate(tiny_engine.encode(rgb), "the red moon")
    except GroundingError:
        assert not reply.success and not reply.has_point
        return
    reply = client.wait_for(lambda: (r := calibrated()).has_point and r, 20.0, "a table point")
    assert reply.point.header.frame_id == "world"


def test_watch_answers_every_encoded_frame_as_the_engine_does(client, tiny_engine):
    reply = client.call(client.watch_client,
                        Watch.Request(questions=QUESTIONS, expressions=EXPRESSIONS))
    assert reply.success, reply.message
    assert client.get_parameters("watch_questions")["watch_questions"] == QUESTIONS
    for i in range(3):
        rgb = frame(10 + i)
        msg = to_image_msg(rgb, CobraClient.header(400 + i, 0, "cam_optical"))
        result = wait_result(client, msg)
        assert result.header.frame_id == "cam_optical"
        assert list(result.questions) == QUESTIONS
        assert list(result.expressions) == EXPRESSIONS
        state = tiny_engine.encode(rgb)
        for question, p in zip(QUESTIONS, result.probabilities):
            assert math.isclose(p, tiny_engine.yes_no(state, question), abs_tol=SAME)
        assert len(result.boxes) == 4 * len(EXPRESSIONS) and len(result.errors) == 1
        try:
            located = tiny_engine.locate(state, EXPRESSIONS[0])
        except GroundingError as err:
            assert all(math.isnan(v) for v in result.boxes) and result.errors[0] == str(err)
        else:
            np.testing.assert_allclose(result.boxes, located.box, atol=1e-6)
        assert result.encode_ms > 0 and result.questions_ms > 0
        assert result.total_ms == pytest.approx(
            result.encode_ms + result.questions_ms + result.locate_ms, rel=1e-4)
    # one result per encoded frame: the watch was on since the node started
    counts = client.camera_counts("image", newer_than=time.monotonic())
    with client.results_lock:
        stamps = [stamp(r.header) for r in client.results]
    assert counts["encoded"] == len(stamps)
    mine = [s for s in stamps if 400 <= s[0] < 403]
    assert len(mine) == len(set(mine)) >= 3


def test_watch_refuses_bad_lists_and_keeps_the_old_ones(client):
    reply = client.call(client.watch_client,
                        Watch.Request(questions=["ok?"], expressions=['the "red" moon']))
    assert not reply.success and "double quote" in reply.message
    reply = client.call(client.watch_client, Watch.Request(questions=["ok?"], camera="nope"))
    assert not reply.success and "not one of image_topics" in reply.message
    assert client.get_parameters("watch_questions")["watch_questions"] == QUESTIONS


def test_an_empty_watch_stops_the_results(client):
    assert client.call(client.watch_client, Watch.Request()).success
    msg = to_image_msg(frame(20), CobraClient.header(500, 1))
    client.show(msg)  # encoded: the node answered about it
    with client.results_lock:
        assert not [r for r in client.results if stamp(r.header) == (500, 1)]
