"""tools/answer_probe.py reads the engine's own answering token; its probes find what is there."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from cobra_ros.langtable import questions

spec = importlib.util.spec_from_file_location(
    "answer_probe", Path(__file__).parents[1] / "tools" / "answer_probe.py"
)
answer_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answer_probe)


def test_reads_come_from_the_token_the_engine_answers_with(tiny_engine):
    model, tok = tiny_engine.model.eval(), tiny_engine.tokenizer
    data = questions.make_examples(2, 3, image_size=None, render_size=(64, 36))
    reads = answer_probe.answering_reads(model, tok, data, batch=5)  # several batches, each padded
    yes_no = [e for e in data.examples if e.label is not None]
    frames = tiny_engine.encode_batch(list(data.images))
    probs = tiny_engine.yes_no_batch(
        [frames[e.image] for e in yes_no], [e.question for e in yes_no]
    )
    assert [(rel, label) for _, rel, label, _ in reads] == [(e.relation, e.label) for e in yes_no]
    # the tool resizes each image once to uint8, as cobra-train does: only near-ties may differ
    clear = [i for i, p in enumerate(probs) if abs(p - 0.5) > 1e-3]
    assert len(clear) > 10 and all(reads[i][3] == (probs[i] > 0.5) for i in clear)
    assert all(len(r) == model.cfg.llm.n_layer + 1 for r, *_ in reads)
    # the LM head reads the final RMSNorm's output: unit RMS up to its weight
    head = torch.stack([r[-1] for r, *_ in reads]) / model.llm.backbone.norm_f.weight
    assert torch.allclose(head.square().mean(-1), torch.ones(len(reads)), atol=1e-2)  # eps


def test_probe_accuracy_finds_a_linear_answer_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 32, generator=gen)
    y = (x[:, 3] - x[:, 7] > 0).float()
    assert answer_probe.probe_accuracy(x, y) > 0.9
    assert (
        answer_probe.probe_accuracy(x, torch.randint(0, 2, (400,), generator=gen).float()) < 0.65
    )
