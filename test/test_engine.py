"""The state engine: forked frame states answer exactly like independent full runs."""

import numpy as np
import pytest
import torch

from cobra_ros.model.tokenizer import DESCRIBE_PROMPT


@torch.no_grad()
def full_run_greedy(engine, image, question, max_new_tokens):
    """Greedy decoding with no state reuse: the whole sequence is re-run through the parallel path
    each step."""
    model, tok = engine.model, engine.tokenizer
    pixels = torch.from_numpy(image[None])
    ids = list(tok.prompt_ids(question))
    out = []
    for _ in range(max_new_tokens):
        logits = model(pixels, torch.tensor([ids + out]), tok.bos_id)
        token = int(logits[0, -1].argmax())
        if token == tok.eos_id:
            break
        out.append(token)
    return out


def test_forked_questions_equal_independent_full_runs(tiny_engine, rgb):
    image = rgb(3)
    frame = tiny_engine.encode(image)
    snapshot = frame.state.clone()
    for question in ("What is on the board?", "Is the red moon left of the blue cube?"):
        answer = tiny_engine.ask(frame, question, max_new_tokens=12)
        assert answer.token_ids == full_run_greedy(tiny_engine, image, question, 12)
    assert torch.equal(snapshot.ssm, frame.state.ssm) and torch.equal(
        snapshot.conv, frame.state.conv
    )


def test_frame_state_is_small_and_independent_of_prompt_length(tiny_engine, rgb):
    frame = tiny_engine.encode(rgb(1))
    cfg = tiny_engine.model.cfg.llm
    assert frame.nbytes == cfg.n_layer * cfg.d_inner * (cfg.d_conv + cfg.d_state) * 4
    _, short_state = tiny_engine._prefill_batch([frame], ["Hi?"])
    _, long_state = tiny_engine._prefill_batch([frame], ["Is it there? " * 200])
    assert short_state.nbytes == long_state.nbytes == frame.nbytes


def test_yes_no_is_the_renormalised_next_token_probability(tiny_engine, rgb):
    image = rgb(4)
    frame = tiny_engine.encode(image)
    question = "Is there a green star?"
    tok = tiny_engine.tokenizer
    with torch.no_grad():
        logits = tiny_engine.model(
            torch.from_numpy(image[None]), torch.tensor([tok.prompt_ids(question)]), tok.bos_id
        )
    probs = torch.softmax(logits[0, -1], -1)
    expected = probs[tok.yes_id] / (probs[tok.yes_id] + probs[tok.no_id])
    assert tiny_engine.yes_no(frame, question) == pytest.approx(float(expected), abs=1e-5)


def test_batches_answer_like_single_calls(tiny_engine, rgb):
    frames = tiny_engine.encode_batch([rgb(5), rgb(6), rgb(7, h=50, w=70)])
    questions = ["What is here?", "Where is the blue cube?", "Describe the image specifically."]
    batched = tiny_engine.ask_batch(frames, questions, max_new_tokens=10)
    single = [tiny_engine.ask(f, q, max_new_tokens=10) for f, q in zip(frames, questions)]
    assert [a.token_ids for a in batched] == [a.token_ids for a in single]
    probs = tiny_engine.yes_no_batch(frames, questions)
    assert probs == pytest.approx(
        [tiny_engine.yes_no(f, q) for f, q in zip(frames, questions)], abs=1e-6
    )


def test_streaming_pieces_add_up_and_cancel_stops(tiny_engine, rgb):
    frame = tiny_engine.encode(rgb(8))
    pieces = []
    answer = tiny_engine.ask(
        frame, "What is here?", max_new_tokens=15, on_token=lambda p, n: pieces.append((p, n))
    )
    assert "".join(p for p, _ in pieces).strip() == answer.text
    assert [n for _, n in pieces] == sorted(n for _, n in pieces)
    calls = []
    cancelled = tiny_engine.ask(
        frame, "What is here?", max_new_tokens=15, cancel=lambda: calls.append(1) or len(calls) > 3
    )
    assert cancelled.finish_reason == "cancelled" and cancelled.num_tokens == 3


def test_describe_runs_the_default_prompt_end_to_end(tiny_engine, rgb):
    image = rgb(9)
    answer = tiny_engine.describe(image, max_new_tokens=6)
    expected = tiny_engine.ask(tiny_engine.encode(image), DESCRIBE_PROMPT, max_new_tokens=6)
    assert answer.token_ids == expected.token_ids and answer.encode_ms > 0


def test_images_are_validated_and_pil_is_accepted(tiny_engine, rgb):
    from PIL import Image

    image = rgb(10)
    a = tiny_engine.yes_no(tiny_engine.encode(Image.fromarray(image)), "Is there a red moon?")
    b = tiny_engine.yes_no(tiny_engine.encode(image), "Is there a red moon?")
    assert a == pytest.approx(b, abs=1e-6)
    for bad in (
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 5, 3), np.uint8),
    ):
        with pytest.raises(ValueError):
            tiny_engine.encode(bad)
    with pytest.raises(TypeError):
        tiny_engine.encode("not an image")


@pytest.mark.parametrize("scoring,words", [("pope", ("Yes", "No")), ("vsr", ("True", "False"))])
def test_scoring_modes_put_the_release_prompt_and_read_its_answer_words(
    tiny_engine, rgb, scoring, words
):
    from cobra_ros.model.scoring import SCORINGS

    image = rgb(11)
    frame = tiny_engine.encode(image)
    text = "The red moon is left of the blue cube."
    tok = tiny_engine.tokenizer
    ids = tok.prompt_ids(SCORINGS[scoring].prompt(text))
    assert f"\n{SCORINGS[scoring].prompt(text)}\n" in tok.decode(ids)
    with torch.no_grad():
        logits = tiny_engine.model(torch.from_numpy(image[None]), torch.tensor([ids]), tok.bos_id)
    probs = torch.softmax(logits[0, -1], -1)[[tok.plain(w)[0] for w in words]]
    got = tiny_engine.yes_no(frame, text, scoring=scoring)
    assert got == pytest.approx(float(probs[0] / probs.sum()), abs=1e-5)
    assert got != pytest.approx(tiny_engine.yes_no(frame, text), abs=1e-6)


def test_unknown_scoring_is_a_clear_error(tiny_engine, rgb):
    with pytest.raises(ValueError, match="unknown scoring 'mmlu'"):
        tiny_engine.yes_no(tiny_engine.encode(rgb(12)), "Is it?", scoring="mmlu")


def test_prompts_are_truncated_at_llm_max_length(tiny_model_dir, rgb):
    from dataclasses import replace

    import cobra_ros

    engine = cobra_ros.load(tiny_model_dir)
    engine.model.cfg = replace(engine.model.cfg, llm_max_length=24)
    image, question = rgb(13), "Is the red moon left of the blue cube? " * 6
    tok = engine.tokenizer
    full = tok.prompt_ids(question)
    assert len(full) > 24
    frame = engine.encode(image)
    with torch.no_grad():
        logits = engine.model(torch.from_numpy(image[None]), torch.tensor([full[:24]]), tok.bos_id)
    probs = torch.softmax(logits[0, -1], -1)[[tok.yes_id, tok.no_id]]
    assert engine.yes_no(frame, question) == pytest.approx(float(probs[0] / probs.sum()), abs=1e-5)
