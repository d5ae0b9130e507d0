"""Batched questions: one right-padded prefill gives what each question alone gives."""

from pathlib import Path

import torch

import cobra_ros

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "langtable-tiny"

QUESTIONS = [
    "Is the red moon left of the blue cube?",
    "Hi?",
    "Is there a yellow star?",
    "Is the green cube above the red pentagon in the picture that the camera saw just now?",
    "Red?",
    "Is the blue moon near the yellow heart?",
]


@torch.inference_mode()
def reference_p_yes(engine, frame, question) -> float:
    """Each question alone, unpadded, straight through the LM from the frame's state."""
    ids = torch.tensor([engine.tokenizer.prompt_ids(question)])
    logits, _ = engine.model.llm(engine.model.llm.embed(ids), frame.state, last_only=True)
    p = torch.softmax(logits[0, -1].float(), -1)
    return float(
        p[engine.tokenizer.yes_id] / (p[engine.tokenizer.yes_id] + p[engine.tokenizer.no_id])
    )


def test_yes_no_batch_on_one_frame_equals_each_question_alone(tiny_engine, rgb):
    frame = tiny_engine.encode(rgb(3))
    questions = QUESTIONS * 3  # 18: more than one padded batch of max_batch=8
    batched = tiny_engine.yes_no_batch([frame] * len(questions), questions, max_batch=8)
    alone = [reference_p_yes(tiny_engine, frame, q) for q in questions]
    assert max(abs(a - b) for a, b in zip(batched, alone)) < 1e-5
    assert max(alone) - min(alone) > 1e-4  # the questions differ, so a mixed-up row would show


def test_single_questions_through_the_static_prefill_equal_each_question_alone(tiny_engine, rgb):
    """The GPU's captured single-question prefill (padded to 32 or 64 tokens), run eagerly here."""
    frame = tiny_engine.encode(rgb(7))
    tiny_engine.prefill_graphs = True
    try:
        static = [tiny_engine.yes_no(frame, q) for q in QUESTIONS]
    finally:
        tiny_engine.prefill_graphs = False
    alone = [reference_p_yes(tiny_engine, frame, q) for q in QUESTIONS]
    assert max(abs(a - b) for a, b in zip(static, alone)) < 1e-5
    assert {key for key in tiny_engine._prefills.free} == {(1, 32), (1, 64)}  # both buckets ran


def test_yes_no_batch_keeps_each_question_on_its_own_frame(tiny_engine, rgb):
    frames = [tiny_engine.encode(rgb(s)) for s in (4, 5)]
    pairs = [(frames[i % 2], q) for i, q in enumerate(QUESTIONS)]
    batched = tiny_engine.yes_no_batch([f for f, _ in pairs], [q for _, q in pairs])
    alone = [reference_p_yes(tiny_engine, f, q) for f, q in pairs]
    assert max(abs(a - b) for a, b in zip(batched, alone)) < 1e-5


def test_ask_batch_of_different_lengths_answers_as_each_alone(rgb):
    # the bundled trained model: its answers depend on the question, so a mixed-up row would show
    engine = cobra_ros.load(BUNDLED)
    frame = engine.encode(rgb(6, 112, 112))
    questions = [
        "Describe the image specifically.",
        "Is the red moon left of the blue cube?",
        "What is the color of the block at the top left?",
        "How many blocks are there?",
    ]
    batched = engine.ask_batch([frame] * 4, questions, max_new_tokens=12, stop_at_eos=False)
    for question, answer in zip(questions, batched):
        assert (
            answer.token_ids
            == engine.ask(frame, question, max_new_tokens=12, stop_at_eos=False).token_ids
        )
    assert len({tuple(a.token_ids) for a in batched}) > 1
