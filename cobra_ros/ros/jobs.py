"""The model work the node hands to its worker thread: answers, yes/no and descriptions of a camera's latest frame.

Every method ends with the worker's (engine, job) arguments, so the node submits
`partial(jobs.answer, camera, question, budget)`. Generation stops early when `job.cancelled` turns true.
"""
from __future__ import annotations

import time
from typing import Callable

from cobra_ros.msg import SceneDescription
from cobra_ros.ros.annotate import annotate
from cobra_ros.ros.image_conversion import to_image_msg

Feedback = Callable[[str, int], None]  # (text so far, tokens so far)


class ModelJobs:
    def __init__(self, publish: Callable[[str, object], None], settings: Callable, timings):
        self._publish = publish  # (output role, message): "description", "stream" or "annotated"
        self._settings = settings  # () -> the node's current Settings
        self._timings = timings

    def answer(self, camera, question: str, budget: int, engine, job):
        frame, state = camera.latest(engine, job.generation)
        answer = engine.ask(state, question, budget, cancel=lambda: job.cancelled)
        self._timed(answer)
        self._annotate(frame, f"Q: {question}  A: {answer.text}")
        return frame, answer

    def yes_no(self, camera, question: str, engine, job):
        frame, state = camera.latest(engine, job.generation)
        started = time.perf_counter()
        probability = engine.yes_no(state, question)
        self._timings.add(prefill_ms=(time.perf_counter() - started) * 1000.0)
        self._annotate(frame, f"Q: {question}  P(yes) = {probability:.2f}")
        return frame, probability

    def describe(self, camera, prompt: str, budget: int, feedback: Feedback | None,
                 cancel_requested: Callable[[], bool], engine, job):
        """(frame, Answer, SceneDescription); a finished description is published, the stream if enabled."""
        frame, state = camera.latest(engine, job.generation)
        stream = self._settings().stream_tokens
        pieces = []

        def on_token(piece: str, num_tokens: int) -> None:
            pieces.append(piece)
            text = "".join(pieces)
            if feedback is not None:
                feedback(text, num_tokens)
            if stream:
                self._publish("stream", SceneDescription(header=frame.header, text=text, prompt=prompt,
                                                         is_final=False, num_tokens=num_tokens, model=engine.name))

        answer = engine.ask(state, prompt, budget, on_token=on_token,
                            cancel=lambda: job.cancelled or cancel_requested())
        msg = SceneDescription(header=frame.header, text=answer.text, prompt=prompt,
                               is_final=answer.finish_reason != "cancelled", num_tokens=answer.num_tokens,
                               encode_ms=state.encode_ms, prefill_ms=answer.prefill_ms, decode_ms=answer.decode_ms,
                               tokens_per_second=answer.tokens_per_second, model=engine.name)
        self._timed(answer)
        if msg.is_final:
            self._publish("description", msg)
            self._annotate(frame, answer.text)
        return frame, answer, msg

    def describe_periodically(self, camera, prompt: str, budget: int, engine, job):
        """describe() for ~/description: each frame once, and a frame that fails is not retried."""
        covered = camera.newest_seq
        try:
            frame, answer, msg = self.describe(camera, prompt, budget, None, lambda: False, engine, job)
            covered = max(covered, frame.seq)
        finally:
            camera.described_seq = max(camera.described_seq, covered)
        return frame, answer, msg

    def _timed(self, answer) -> None:
        self._timings.add(prefill_ms=answer.prefill_ms, decode_ms=answer.decode_ms,
                          tokens_per_second=answer.tokens_per_second)

    def _annotate(self, frame, text: str) -> None:
        if self._settings().publish_annotated:
            self._publish("annotated", to_image_msg(annotate(frame.rgb, text), frame.header))
