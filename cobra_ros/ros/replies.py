"""Every message the cobra node sends: topic messages, service and action replies, diagnostics.

The node hands in plain values (frames, the engine's answers from jobs.py, counts); nothing here
touches the model, a publisher or a parameter.
"""
from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from cobra_ros.action import Describe
from geometry_msgs.msg import Point, PointStamped

from cobra_ros.msg import SceneDescription, WatchResult
from cobra_ros.ros import diagnostics
from cobra_ros.ros.annotate import annotate
from cobra_ros.ros.image_conversion import to_image_msg
from cobra_ros.ros.jobs import Asked, Found, Judged, Watched

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
WARN_FOR_S = 10.0  # a camera reports WARN this long after a rejected or failed frame


# -- topics ---------------------------------------------------------------------------------------
def partial_description(frame, prompt: str, text: str, num_tokens: int, model: str):
    """~/description/stream: the text so far, after a token."""
    return SceneDescription(header=frame.header, text=text, prompt=prompt, is_final=False,
                            num_tokens=num_tokens, model=model)


def description(asked: Asked, prompt: str, model: str) -> SceneDescription:
    """~/description and the Describe result; is_final is false when generation was cancelled."""
    answer = asked.answer
    return SceneDescription(
        header=asked.frame.header, text=answer.text, prompt=prompt,
        is_final=answer.finish_reason != "cancelled", num_tokens=answer.num_tokens,
        encode_ms=asked.encode_ms, prefill_ms=answer.prefill_ms, decode_ms=answer.decode_ms,
        tokens_per_second=answer.tokens_per_second, model=model)


def watch_result(watched: Watched, board_frame: str) -> WatchResult:
    """~/watch/result: one frame's standing questions; NaN boxes where an answer did not parse."""
    nan = [math.nan] * 4
    boxes = [v for found in watched.located for v in (found.box if found else nan)]
    points = [Point(x=p[0], y=p[1], z=p[2]) if p else Point(x=math.nan, y=math.nan, z=math.nan)
              for p in watched.points]
    return WatchResult(
        header=watched.frame.header, questions=list(watched.questions),
        probabilities=[float(p) for p in watched.probabilities],
        expressions=list(watched.expressions), boxes=boxes,
        scores=[found.score if found else 0.0 for found in watched.located],
        has_point=[p is not None for p in watched.points], points=points,
        board_frame=board_frame, errors=list(watched.errors), encode_ms=watched.encode_ms,
        questions_ms=watched.questions_ms, locate_ms=watched.locate_ms,
        total_ms=watched.total_ms)


def annotated(frame, text: str):
    """~/annotated: the frame with the text drawn on it, under the frame's own header."""
    return to_image_msg(annotate(frame.rgb, text), frame.header)


# -- services and the action ---------------------------------------------------------------------
def refused(response, reason: str):
    response.success, response.message = False, reason
    return response


def ask(response, asked: Asked, note: str, started: float):
    response.success, response.message, response.answer = True, note, asked.answer.text
    response.image_stamp = asked.frame.header.stamp
    response.latency_ms = (time.monotonic() - started) * 1000.0
    return response


def ask_yes_no(response, judged: Judged, started: float):
    p = judged.probability
    response.success, response.answer, response.probability = True, p >= 0.5, p
    response.image_stamp = judged.frame.header.stamp
    response.latency_ms = (time.monotonic() - started) * 1000.0
    return response


def locate(response, found: Found, board_frame: str, started: float):
    """The box, or (success false) why the model's answer is not one; the frame's header both
    ways."""
    located = found.located
    response.header, response.text = found.frame.header, found.text
    response.success, response.message = located is not None, found.problem
    response.latency_ms = (time.monotonic() - started) * 1000.0
    if located is None:
        return response
    response.box = [float(v) for v in located.box]
    response.box_pixels = [int(v) for v in located.box_pixels]
    response.score = float(located.score)
    response.has_point = found.point is not None
    if found.point is not None:
        x, y, z = found.point
        response.point = PointStamped(point=Point(x=x, y=y, z=z))
        response.point.header.frame_id = board_frame
        response.point.header.stamp = found.frame.header.stamp
    return response


def describe_feedback(text: str, num_tokens: int):
    return Describe.Feedback(partial_text=text, num_tokens=num_tokens)


def describe_result(message: str, description: SceneDescription | None = None,
                    success: bool = False):
    return Describe.Result(success=success, message=message,
                           description=description or SceneDescription())


def cancelled(description_msg: SceneDescription | None):
    if description_msg is None:
        return describe_result("cancelled before generation started")
    return describe_result(f"cancelled after {description_msg.num_tokens} tokens", description_msg)


# -- /diagnostics ---------------------------------------------------------------------------------
def _status(name: str, level: int, message: str, hardware_id: str, values: dict):
    def text(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])


def model_status(node_name: str, jobs, settings, state: str, model_error: str, model_note: str,
                 requests: dict) -> DiagnosticStatus:
    """ERROR when the model did not load, WARN when none is loaded or a change was refused.

    `jobs` is the node's ModelJobs, or None when no model is loaded."""
    device = jobs.device if jobs is not None else settings.device
    if jobs is None:
        level = ERROR if model_error else WARN
        message = model_error or f"no model loaded (lifecycle state {state})"
    elif model_note:
        level, message = WARN, model_note
    else:
        level, message = OK, f"serving {jobs.model} on {device} ({state})"
    values = {
        "lifecycle_state": state, "model": jobs.model if jobs is not None else "",
        "model_dir": jobs.model_dir if jobs is not None else "", "device": device,
        "dtype": settings.dtype, "queue_depth": jobs.queue_depth() if jobs is not None else 0,
        "queue_size": settings.queue_size,
        **({f"jobs_{k}": v for k, v in jobs.stats().items()} if jobs is not None else {}),
        **{f"requests_{k}": v for k, v in requests.items()},
        **(jobs.timings.means() if jobs is not None else {}), **diagnostics.memory(),
    }
    return _status(f"{node_name}: model", level, message, device, values)


def camera_status(node_name: str, camera, jobs) -> DiagnosticStatus:
    """WARN while frames are rejected (the mailbox) or fail to encode (the jobs), else OK."""
    frames = jobs.frames(camera) if jobs is not None else {}
    device = jobs.device if jobs is not None else ""
    counts = camera.counts()
    encoded, failed = frames.get("encoded", 0), frames.get("failed", 0)
    since = [(camera.seconds_since_problem(), camera.last_problem)]
    if frames.get("problem_time") is not None:
        since.append((time.monotonic() - frames["problem_time"], frames["last_problem"]))
    recent = [(s, why) for s, why in since if s is not None]
    latest_s, latest = min(recent) if recent else (None, "")
    if latest_s is not None and latest_s < WARN_FOR_S:
        level = WARN
        message = (f"{counts['rejected']} rejected, {failed} failed frames so far; latest "
                   f"{latest_s:.1f} s ago: {latest}")
    else:
        level, message = OK, "receiving frames" if counts["received"] else "no frames yet"
    values = {"topic": camera.topic, **counts, "encoded": encoded, "failed": failed,
              "last_problem": latest}
    frame = frames.get("frame")
    if frame is not None:
        stamp = frame.header.stamp
        values["frame_in_use_stamp"] = f"{stamp.sec}.{stamp.nanosec:09d}"
    return _status(f"{node_name}: camera {camera.name}", level, message, device, values)


def diagnostic_array(statuses: list, stamp) -> DiagnosticArray:
    array = DiagnosticArray(status=statuses)
    array.header.stamp = stamp
    return array
