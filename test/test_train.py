"""cobra-train: supervision targets, the LM initialisation it relies on, and a whole small run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cobra_ros import train
from cobra_ros.langtable import questions
from cobra_ros.langtable.world import BlockTruth
from cobra_ros.model.config import preset
from cobra_ros.model.mamba import MambaLM, init_weights, long_memory_init


def test_patch_targets_put_each_block_in_its_patch():
    # 112 px model input seen as a 320x180 render: a block at render pixel (300, 10) is in the top-right patch.
    truths = [[BlockTruth("red_moon", "red", "moon", 0.0, 0.0, 0.0, 300.0, 10.0, 1.0),
               BlockTruth("blue_cube", "blue", "cube", 0.0, 0.0, 0.0, 5.0, 170.0, 1.0),
               BlockTruth("green_star", "green", "star", 0.0, 0.0, 0.0, 160.0, 90.0, 0.2)]]  # hidden: no target
    present, offset = train.patch_targets(truths, grid=8, image_size=112)
    names = list(questions.ALL_BLOCKS)
    assert present[0, 0 * 8 + 7, names.index("red_moon")] == 1
    assert present[0, 7 * 8 + 0, names.index("blue_cube")] == 1
    assert present.sum() == 2
    assert 0 <= offset.min() and offset.max() <= 1


def _image_gradient_ratio(memory_init: bool) -> float:
    """|d answer logit / d image tokens| relative to |d answer logit / d question tokens| at initialisation."""
    torch.manual_seed(0)
    llm = MambaLM(preset("tiny").llm)
    init_weights(llm, torch.Generator().manual_seed(0))
    if memory_init:
        long_memory_init(llm, torch.Generator().manual_seed(1))
    image = torch.randn(4, 64, llm.cfg.d_model, requires_grad=True)
    question = torch.randn(4, 20, llm.cfg.d_model, requires_grad=True)
    logits, _ = llm(torch.cat([image, question], 1), last_only=True)
    logits[:, -1, :8].sum().backward()
    return float(image.grad.norm(dim=-1).mean() / question.grad.norm(dim=-1).mean())


def test_long_memory_init_lets_the_answer_reach_the_image():
    release, long_memory = _image_gradient_ratio(False), _image_gradient_ratio(True)
    assert long_memory > 30 * release, (release, long_memory)


def test_batches_label_only_answer_tokens_and_honour_the_curriculum(tiny_engine):
    data = questions.make_examples(3, 6, image_size=32)
    tok = tiny_engine.tokenizer
    batches = train.Batches(data, tok, seed=0, relations={"presence"})
    picked, groups = batches.sample(4, 3)
    for rows, ids, labels in groups:
        for row, seq, lab in zip(rows, ids, labels):
            answer = [int(t) for t in lab if t != train.IGNORE]
            assert tok.decode(answer[:-1]) in ("Yes", "No") and answer[-1] == tok.eos_id
            start = int((lab != train.IGNORE).nonzero()[0])
            question = tok.decode(seq[:start + 1].tolist())
            assert "Is there a" in question or "Do you see a" in question
            # the question belongs to the picked image: its presence label matches that scene's truth
            scene = data.truths[int(picked[row])]
            name = next(n for n in questions.ALL_BLOCKS if questions.block_text(n) in question)
            assert (answer[0] == tok.yes_id) == any(b.name == name and b.visible >= 0.5 for b in scene)


def test_a_small_run_writes_a_model_that_loads_and_learnt(tmp_path):
    import cobra_ros

    cfg = train.TrainConfig(preset="micro", scenes=60, steps=60, scenes_per_step=8, questions_per_scene=4,
                            tower_steps=5, tower_batch=8, eval_scenes=4, warmup=5, first_steps=10, threads=1,
                            lr=1e-2)
    summary = train.train(tmp_path / "m", cfg, log=lambda *_: None)
    history = json.loads((tmp_path / "m" / "training.json").read_text())["history"]
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < 0.5 * first, (first, last)  # at least the answer format is learnt
    assert (tmp_path / "m" / "loss.png").stat().st_size > 0
    engine = cobra_ros.load(tmp_path / "m")
    frame = engine.encode(np.zeros((64, 64, 3), np.uint8))
    assert engine.ask(frame, "Is there a red moon?", max_new_tokens=3).text.strip() in ("Yes", "No")
    assert 0.0 <= summary["held_out_yes_no"] <= 1.0

    # continuing from the saved model trains its projector and LM and leaves the frozen towers as they were
    more = train.TrainConfig(**{**vars(cfg), "init_from": str(tmp_path / "m"), "tower_steps": 0, "steps": 3})
    train.train(tmp_path / "m2", more, log=lambda *_: None)
    before, after = cobra_ros.load(tmp_path / "m").model, cobra_ros.load(tmp_path / "m2").model
    assert not torch.equal(before.llm.backbone.embedding.weight, after.llm.backbone.embedding.weight)
    assert not torch.equal(before.projector.projector[0].weight, after.projector.projector[0].weight)
    for a, b in zip(before.vision.state_dict().values(), after.vision.state_dict().values()):
        assert torch.equal(a, b)
