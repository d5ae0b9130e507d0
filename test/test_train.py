"""cobra-train: supervision targets, the LM initialisation it relies on, and a whole small run."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from cobra_ros import train
from cobra_ros.langtable import questions
from cobra_ros.langtable.world import X_MAX, X_MIN, Y_MAX, Y_MIN, BlockTruth
from cobra_ros.model.cobra import random_cobra
from cobra_ros.model.config import MambaConfig, preset
from cobra_ros.model.mamba import MambaLM, init_weights, long_memory_init


def test_patch_targets_put_each_block_in_its_patch():
    # 112 px model input seen as a 320x180 render: a block at render pixel (300, 10) is in the
    # top-right patch.
    truths = [[BlockTruth("red_moon", "red", "moon", 0.0, 0.0, 0.0, 300.0, 10.0, 1.0),
               BlockTruth("blue_cube", "blue", "cube", 0.0, 0.0, 0.0, 5.0, 170.0, 1.0),
               # hidden: no target
               BlockTruth("green_star", "green", "star", 0.0, 0.0, 0.0, 160.0, 90.0, 0.2)]]
    present, offset = train.patch_targets(truths, grid=8, image_size=112)
    names = list(questions.ALL_BLOCKS)
    assert present[0, 0 * 8 + 7, names.index("red_moon")] == 1
    assert present[0, 7 * 8 + 0, names.index("blue_cube")] == 1
    assert present.sum() == 2
    assert 0 <= offset.min() and offset.max() <= 1


def test_scene_table_lists_the_visible_blocks_on_a_unit_board():
    truths = [
        [
            BlockTruth("red_moon", "red", "moon", X_MIN, Y_MAX, 0.0, 0.0, 0.0, 1.0),
            BlockTruth(
                "blue_cube",
                "blue",
                "cube",
                (X_MIN + X_MAX) / 2,
                (Y_MIN + Y_MAX) / 2,
                0.0,
                0.0,
                0.0,
                1.0,
            ),
            # hidden
            BlockTruth("green_star", "green", "star", X_MAX, Y_MIN, 0.0, 0.0, 0.0, 0.2),
        ]
    ]
    present, where = train.scene_table(truths)
    names = list(questions.ALL_BLOCKS)
    assert (
        present.sum() == 2
        and present[0, names.index("red_moon")] == 1
        and present[0, names.index("blue_cube")] == 1
    )
    torch.testing.assert_close(where[0, names.index("red_moon")], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(where[0, names.index("blue_cube")], torch.tensor([0.5, 0.5]))


def test_standardised_projector_computes_the_same_as_on_standardised_features():
    model = random_cobra(preset("micro"))
    features = (
        torch.randn(6, 4, model.cfg.vision_dim) * torch.linspace(1, 80, model.cfg.vision_dim) + 7
    )
    reference = copy.deepcopy(model.projector)
    train.standardise_projector_input(model, features)
    flat = features.flatten(0, 1)
    torch.testing.assert_close(
        model.projector(features),
        reference((features - flat.mean(0)) / flat.std(0)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_scene_probe_reads_what_its_layer_reads_and_teaches_the_lm_the_context():
    torch.manual_seed(0)
    llm = MambaLM(MambaConfig(d_model=64, n_layer=3, vocab_size=16))
    init_weights(llm, torch.Generator().manual_seed(0))
    long_memory_init(llm, torch.Generator().manual_seed(1))
    probe = train.SceneProbe(64, layer=2, n_blocks=8)
    mixer_input = []
    llm.backbone.layers[2].mixer.register_forward_pre_hook(
        lambda m, args: mixer_input.append(args[0])
    )
    with probe.watching(llm) as seen:
        llm(llm.embed(torch.randint(0, 16, (2, 5))))
    assert torch.equal(seen[-1], mixer_input[-1])

    # Contexts of 24 tokens: filler (id 8) with 3 of 8 "block" tokens (ids 0-7) at random places.
    # Trained on the probe's loss alone, the LM learns to keep which blocks it has read in the
    # state after the context.
    gen = torch.Generator().manual_seed(0)

    def batch(n):
        ids = torch.full((n, 24), 8)
        present = torch.zeros(n, 8)
        for i in range(n):
            blocks, places = (
                torch.randperm(8, generator=gen)[:3],
                torch.randperm(24, generator=gen)[:3],
            )
            ids[i, places] = blocks
            present[i, blocks] = 1
        return ids, present, torch.zeros(n, 8, 2)

    params = list(llm.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    test_ids, test_present, test_where = batch(256)
    for _ in range(150):
        ids, present, where = batch(32)
        with probe.watching(llm) as seen:
            llm(llm.embed(ids))
        loss = probe.loss(seen[-1][:, -1], present, where)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad(), probe.watching(llm) as seen:
        llm(llm.embed(test_ids))
        logits = probe.head(seen[-1][:, -1])[:, :8]
    accuracy = ((logits > 0) == (test_present > 0)).float().mean()
    assert accuracy > 0.9, accuracy  # a constant guess ("absent") scores 5/8


def test_presence_accuracy_scores_patch_logits_against_the_scenes():
    data = questions.make_examples(4, 12, image_size=None)
    # truths in 320x180 render pixels
    present, _ = train.patch_targets(data.truths, grid=8, image_size=112)
    logits = present * 20 - 10  # a head that is right about every patch
    assert train.presence_accuracy(logits, data.truths) == 1.0
    # a head that always says "present" (or never) is balanced to 0.5 although "present" is right
    # ~76% of the time
    assert train.presence_accuracy(torch.full_like(logits, 10), data.truths) == 0.5
    assert train.presence_accuracy(torch.full_like(logits, -10), data.truths) == 0.5
    # the same head answering about other scenes: about chance
    assert 0.3 < train.presence_accuracy(logits.roll(1, 0), data.truths) < 0.75


def _image_gradient_ratio(memory_init: bool) -> float:
    """|d answer logit / d image tokens| over |d answer logit / d question tokens|, at init."""
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
    for rows, ids, labels, *_ in groups:
        for row, seq, lab in zip(rows, ids, labels):
            answer = [int(t) for t in lab if t != train.IGNORE]
            assert tok.decode(answer[:-1]) in ("Yes", "No") and answer[-1] == tok.eos_id
            start = int((lab != train.IGNORE).nonzero()[0])
            question = tok.decode(seq[:start + 1].tolist())
            assert "Is there a" in question or "Do you see a" in question
            # the question belongs to the picked image: its presence label matches that scene's
            # truth
            scene = data.truths[int(picked[row])]
            name = next(n for n in questions.ALL_BLOCKS if questions.block_text(n) in question)
            assert (answer[0] == tok.yes_id) == any(
                b.name == name and b.visible >= 0.5 for b in scene
            )


def test_weighted_relations_are_drawn_as_often_as_their_weights_say(tiny_engine, tmp_path):
    data = questions.make_examples(3, 6, image_size=32)
    tok = tiny_engine.tokenizer

    def share_of_counts(weights):
        batches = train.Batches(data, tok, seed=0, weights=weights)
        counts = total = 0
        for _ in range(100):
            _, groups = batches.sample(6, 2)
            for rows, ids, labels, *_ in groups:
                for seq, lab in zip(ids, labels):
                    start = int((lab != train.IGNORE).nonzero()[0])
                    counts += "how many" in tok.decode(seq[:start + 1].tolist()).lower()
                    total += 1
        return counts / total

    # one count question per scene among some thirty, two drawn per scene: uniform draws meet it
    # in a few percent of the questions, weight 10 several times as often
    uniform, weighted = share_of_counts(None), share_of_counts(train.relation_weights("count=10"))
    assert uniform < 0.08 and weighted > 4 * uniform, (uniform, weighted)
    assert train.relation_weights(" closest=4, extreme=2.5") == {"closest": 4.0, "extreme": 2.5}
    for bad in ("closest", "closest=0", "closest=-1", "=3", "closest=x"):
        with pytest.raises(ValueError, match="relation=weight"):
            train.relation_weights(bad)
    # a misspelt relation would weigh nothing: the run refuses it before building a model
    with pytest.raises(ValueError, match="closet"):
        train.train(tmp_path, train.TrainConfig(weigh_relations="closet=4"), log=lambda *a: None,
                    data=data, held_out=data)


def test_mentions_point_at_the_end_of_each_visible_block_a_question_names(tiny_engine):
    tok = tiny_engine.tokenizer
    data = questions.make_examples(5, 6, image_size=32)
    batches = train.Batches(
        data, tok, seed=0, relations={"left_of", "between", "presence", "where", "describe"}
    )
    picked, groups = batches.sample(6, 6)
    seen = 0
    for rows, ids, labels, ((seq, pos, slot), where), *_ in groups:
        assert not slot.any()
        for i, p, xy in zip(seq.tolist(), pos.tolist(), where):
            prompt_end = int((labels[i] != train.IGNORE).nonzero()[0])
            assert p < prompt_end
            named = tok.decode(ids[i, :p + 1].tolist())
            block = next(b for b in train.visible_blocks(data.truths[int(picked[rows[i]])])
                         if named.endswith(questions.block_text(b.name)))
            assert xy.tolist() == pytest.approx(
                [(block.x - X_MIN) / (X_MAX - X_MIN), (block.y - Y_MIN) / (Y_MAX - Y_MIN)]
            )
            seen += 1
        # one mention per visible named block: two for left_of, three for between, none for a
        # description
        for i in range(len(rows)):
            question = tok.decode(
                ids[i, : int((labels[i] != train.IGNORE).nonzero()[0]) + 1].tolist()
            )
            expected = (
                0
                if "Describe" in question
                else sum(
                    questions.block_text(b.name) in question
                    for b in train.visible_blocks(data.truths[int(picked[rows[i]])])
                )
            )
            assert int((seq == i).sum()) == expected, question
    assert seen > 10


def test_places_sit_at_the_answering_token_one_slot_per_named_block_in_order(tiny_engine):
    tok = tiny_engine.tokenizer
    data = questions.make_examples(5, 6, image_size=32)
    batches = train.Batches(
        data, tok, seed=0, relations={"between", "left_of", "closest", "colour", "describe"}
    )
    picked, groups = batches.sample(6, 6)
    per_slot, asked = [0] * train.MOST_NAMED, set()
    for rows, ids, labels, _, ((seq, pos, slot), where), ((ask_seq, ask_pos), kind) in groups:
        for i in range(len(rows)):
            answer_from = int((labels[i] != train.IGNORE).nonzero()[0])
            question = tok.decode(ids[i, :answer_from + 1].tolist())
            # every block the question names, in the order it names them; only the visible ones
            # have a place
            order = [
                n
                for _, n in sorted(
                    (question.find(questions.block_text(n)), n)
                    for n in questions.ALL_BLOCKS
                    if questions.block_text(n) in question
                )
            ]
            visible = {b.name: b for b in train.visible_blocks(data.truths[int(picked[rows[i]])])}
            want = {} if "Describe" in question else \
                {k: train.board_xy(visible[n]) for k, n in enumerate(order) if n in visible}
            mine = (seq == i).nonzero().flatten().tolist()
            # the token whose logits give the answer
            assert all(int(pos[k]) == answer_from for k in mine)
            got = {int(slot[k]): where[k].tolist() for k in mine}
            assert got.keys() == want.keys() and all(
                got[k] == pytest.approx(want[k]) for k in got
            ), question
            for k in got:
                per_slot[k] += 1
            # a yes/no question also says which relation it asks, at the same token
            mine = (ask_seq == i).nonzero().flatten().tolist()
            # only the yes/no questions ask one
            assert len(mine) == int("Is the" in question), question
            for k in mine:
                assert int(ask_pos[k]) == answer_from
                relation = questions.RELATIONS[int(kind[k])]
                names = dict(zip("abc", map(questions.block_text, order)))
                assert any(t.format(**names) in question for t in questions.TEMPLATES[relation]), (
                    relation,
                    question,
                )
                asked.add(relation)
    assert min(per_slot) >= 2, per_slot  # "between" fills the third slot
    assert asked == {"between", "left_of"}


@pytest.mark.parametrize("places", [False, True])
def test_line_probes_score_their_tokens_and_train_only_the_layers_below_them(tiny_engine, places):
    """The mention probe (one place per block name) and the places probe (every named block's place
    at the answering token, one slot each)."""
    model, tok = tiny_engine.model, tiny_engine.tokenizer
    data = questions.make_examples(5, 4, image_size=32)
    picked, groups = train.Batches(
        data, tok, seed=0, relations={"left_of", "where", "between"}
    ).sample(4, 4)
    probe = train.MentionProbe(model.cfg.llm.d_model, layer=1, **(
        {"slots": train.MOST_NAMED, "kinds": len(questions.RELATIONS)} if places else {}))
    features = train.tower_features(model, data.images[picked.numpy()])
    model.llm.zero_grad()
    losses = train.loss_on_answers(model, features, groups, tok.bos_id, **{
        "places_probe" if places else "mention_probe": probe})
    assert losses[3 if places else 4] == 0  # the other one is off
    losses[4 if places else 3].backward()
    layers = model.llm.backbone.layers
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in layers[0].mixer.parameters()
        if p.requires_grad
    )
    # the probe reads layer 1's input
    assert all(p.grad is None or not p.grad.any() for p in layers[1].mixer.parameters())
    # reference: the mean L1 error, over all targets of both groups, of the head on layer 1's
    # normed input there (plus, for the places probe, the mean cross-entropy of which relation each
    # yes/no question asks)
    errors, asked = [], []
    with torch.no_grad():
        tokens = model.prefix_embeds(model.projector(features), tok.bos_id)
        _, state = model.llm(tokens, last_only=True)
        for rows, ids, _, mentions, named_places, ((ask_seq, ask_pos), kind) in groups:
            (seq, pos, slot), where = named_places if places else mentions
            with train.watching(model.llm, 1) as seen:
                model.llm(
                    model.llm.embed(ids), train.MambaState(state.conv[:, rows], state.ssm[:, rows])
                )
            for s, p, k, xy in zip(seq, pos, slot, where):
                guess = torch.sigmoid(probe.head(seen[-1][s, p]))[2 * k:2 * k + 2]
                errors.append(float((guess - xy).abs().sum()))
            for s, p, k in zip(ask_seq, ask_pos, kind) if places else ():
                logits = probe.head(seen[-1][s, p])[2 * probe.slots:]
                asked.append(float(torch.logsumexp(logits, 0) - logits[k]))
    expected = np.mean(errors) + (np.mean(asked) if places else 0.0)
    assert (
        len(errors) > 8
        and len(asked) >= 5 * places
        and losses[4 if places else 3].item() == pytest.approx(expected, rel=1e-4)
    )
    model.llm.zero_grad(set_to_none=True)  # the engine is shared with other tests


def test_length_groups_pad_least_in_at_most_the_groups_allowed():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 100, rng.integers(1, 9)).tolist()
        most = int(rng.integers(1, 4))
        groups = train.length_groups(lengths, most)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert 1 <= len(groups) <= most and all(groups)
        padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        # against every way of cutting the sorted lengths into at most `most` groups
        s = sorted(lengths)
        best = min(
            sum((b - a) * s[b - 1] for a, b in zip((0, *cuts), (*cuts, len(s))))
            for k in range(min(most, len(s)))
            for cuts in itertools.combinations(range(1, len(s)), k)
        )
        assert padded == best


def test_answer_loss_weighs_every_token_or_every_answer_the_same(tiny_engine):
    model, tok = tiny_engine.model.eval(), tiny_engine.tokenizer
    data = questions.make_examples(4, 3, image_size=32)
    picked, groups = train.Batches(data, tok, seed=0, relations={"presence", "describe"}).sample(
        3, 3
    )
    # short (yes/no) and long (description) answers are never padded together
    assert {len(groups)} <= {2, 3, 4, 5, 6}
    for rows, ids, labels, *_ in groups:
        assert len({int((lab != train.IGNORE).sum()) > 8 for lab in labels}) == 1
    with torch.no_grad():
        features = train.tower_features(model, data.images[picked.numpy()])
        # reference: every question on its own, its image prefilled again
        sums, counts = [], []
        for rows, ids, labels, *_ in groups:
            for row, seq, lab in zip(rows, ids, labels):
                one = [(row[None] * 0, seq[None], lab[None], None, None, None)]
                mean, *_ = train.loss_on_answers(model, features[row:row + 1], one, tok.bos_id)
                counts.append(int((lab != train.IGNORE).sum()))
                sums.append(float(mean) * counts[-1])
        per_token, *_ = train.loss_on_answers(model, features, groups, tok.bos_id)
        per_answer, *_ = train.loss_on_answers(
            model, features, groups, tok.bos_id, weigh_answers=True
        )
    assert float(per_token) == pytest.approx(sum(sums) / sum(counts), rel=1e-4)
    assert float(per_answer) == pytest.approx(np.mean(np.array(sums) / np.array(counts)), rel=1e-4)
    # the two weightings differ on mixed lengths
    assert abs(float(per_answer) - float(per_token)) > 1e-3


def test_a_small_run_writes_a_model_that_loads_and_learnt(tmp_path):
    import cobra_ros

    cfg = train.TrainConfig(
        preset="micro",
        scenes=60,
        steps=60,
        scenes_per_step=8,
        questions_per_scene=4,
        tower_steps=5,
        tower_batch=8,
        eval_scenes=4,
        warmup=5,
        first_steps=10,
        threads=1,
        lr=1e-2,
        scene_loss=0.5,
        token_loss=0.5,
        mention_loss=0.5,
        places_loss=0.5,
        standardise=True,
    )
    summary = train.train(tmp_path / "m", cfg, log=lambda *_: None)
    history = json.loads((tmp_path / "m" / "training.json").read_text())["history"]
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < 0.5 * first, (first, last)  # at least the answer format is learnt
    assert len(history["scene_loss"]) == 60 and all(np.isfinite(history["scene_loss"]))
    # the image tokens learn to say which blocks are where
    assert np.mean(history["token_loss"][-10:]) < 0.8 * np.mean(history["token_loss"][:5]), (
        history["token_loss"]
    )
    assert len(history["mention_loss"]) == 60 and all(np.isfinite(history["mention_loss"]))
    assert len(history["places_loss"]) == 60 and all(np.isfinite(history["places_loss"]))
    assert set(summary["held_out_tower_presence"]) == {"dino", "siglip"}
    assert (tmp_path / "m" / "loss.png").stat().st_size > 0
    engine = cobra_ros.load(tmp_path / "m")
    frame = engine.encode(np.zeros((64, 64, 3), np.uint8))
    assert engine.ask(frame, "Is there a red moon?", max_new_tokens=3).text.strip() in (
        "Yes",
        "No",
    )
    assert 0.0 <= summary["held_out_yes_no"] <= 1.0

    # continuing from the saved model trains its projector and LM and leaves the frozen towers as
    # they were
    more = train.TrainConfig(
        **{**vars(cfg), "init_from": str(tmp_path / "m"), "tower_steps": 0, "steps": 3}
    )
    train.train(tmp_path / "m2", more, log=lambda *_: None)
    before, after = cobra_ros.load(tmp_path / "m").model, cobra_ros.load(tmp_path / "m2").model
    assert not torch.equal(
        before.llm.backbone.embedding.weight, after.llm.backbone.embedding.weight
    )
    assert not torch.equal(
        before.projector.projector[0].weight, after.projector.projector[0].weight
    )
    for a, b in zip(before.vision.state_dict().values(), after.vision.state_dict().values()):
        assert torch.equal(a, b)
    # ... unless all of its steps are probe steps, which train only the freshly started probe heads
    warm = train.TrainConfig(**{**vars(more), "probe_steps": 3})
    train.train(tmp_path / "m2p", warm, log=lambda *_: None)
    kept = cobra_ros.load(tmp_path / "m2p").model
    for a, b in zip(before.state_dict().values(), kept.state_dict().values()):
        assert torch.equal(a, b)
    # a continuation given tower_steps trains its towers on, once its first probe_steps have
    # fitted the fresh stage-1 heads alone
    for name, probe_steps, moved in (("m2h", 2, False), ("m2t", 1, True)):
        train.train(tmp_path / name, train.TrainConfig(
            **{**vars(more), "steps": 0, "tower_steps": 2, "probe_steps": probe_steps}),
            log=lambda *_: None)
        towers = cobra_ros.load(tmp_path / name).model.vision.state_dict().values()
        assert moved != all(torch.equal(a, b)
                            for a, b in zip(before.vision.state_dict().values(), towers))

    # a fresh projector and LM on the saved model's towers, here the LDPv2 projector pooling the
    # image to 1 token
    fresh = train.TrainConfig(
        **{
            **vars(cfg),
            "towers_from": str(tmp_path / "m"),
            "tower_steps": 0,
            "steps": 2,
            "projector": "fused-ldpnet",
            "ldp_grid": 1,
        }
    )
    train.train(tmp_path / "m3", fresh, log=lambda *_: None)
    pooled = cobra_ros.load(tmp_path / "m3")
    # BOS + one image token
    assert pooled.encode(np.zeros((64, 64, 3), np.uint8)).num_prefix_tokens == 2
    reused = pooled.model
    for a, b in zip(before.vision.state_dict().values(), reused.vision.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.allclose(
        before.llm.backbone.embedding.weight, reused.llm.backbone.embedding.weight
    )

    # continuing into fused-ldpnet-pos: the same image tokens at first, then a position embedding
    # that learnt
    extended = train.extend_projector(reused, "fused-ldpnet-pos").eval()
    images = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    )
    with torch.no_grad():
        assert torch.equal(reused.image_tokens(images), extended.image_tokens(images))
    with pytest.raises(ValueError, match="cannot continue"):
        # fused-gelu-mlp's layers are not LDPv2's
        train.extend_projector(before, "fused-ldpnet-pos")
    train.train(
        tmp_path / "m4",
        train.TrainConfig(
            **{
                **vars(cfg),
                "init_from": str(tmp_path / "m3"),
                "steps": 3,
                "tower_steps": 0,
                "projector": "fused-ldpnet-pos",
            }
        ),
        log=lambda *_: None,
    )
    position = cobra_ros.load(tmp_path / "m4").model.projector.position
    assert (
        position.shape == (reused.cfg.num_patches, reused.cfg.vision_dim)
        and position.abs().max() > 0
    )

    # continuing on a finer token grid: every weight carries over (none depends on the grid), and
    # the LM reads grid**2 image tokens
    positioned = cobra_ros.load(tmp_path / "m4").model.eval()
    finer = train.regrid_projector(positioned, 2)
    assert finer.cfg.ldp_grid == 2 and positioned.cfg.ldp_grid == 1
    for (k, a), (k2, b) in zip(positioned.state_dict().items(), finer.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with torch.no_grad():
        assert finer.image_tokens(images).shape[1] == 4
    with pytest.raises(ValueError, match="pools only a fused-ldpnet"):
        train.regrid_projector(before, 2)
    train.train(
        tmp_path / "m5",
        train.TrainConfig(**{**vars(cfg), "init_from": str(tmp_path / "m4"), "steps": 1,
                             "tower_steps": 0, "ldp_grid": 2}),
        log=lambda *_: None,
    )
    # BOS + 2 x 2 image tokens
    assert cobra_ros.load(tmp_path / "m5").encode(
        np.zeros((64, 64, 3), np.uint8)).num_prefix_tokens == 5

    # continuing deeper: the appended layers start as no-ops, so the deeper model first answers as
    # the one it continues; training then moves them
    shallow = cobra_ros.load(tmp_path / "m5").model.eval()
    n_layer = shallow.cfg.llm.n_layer
    deeper = train.deepen_llm(shallow, 2, seed=0).eval()
    assert deeper.cfg.llm.n_layer == n_layer + 2
    embeds = torch.randn(2, 9, shallow.cfg.llm.d_model)
    with torch.no_grad():
        assert torch.allclose(shallow.llm(embeds)[0], deeper.llm(embeds)[0], atol=1e-6)
        assert torch.equal(shallow.image_tokens(images), deeper.image_tokens(images))
    train.train(
        tmp_path / "m6",
        train.TrainConfig(**{**vars(cfg), "init_from": str(tmp_path / "m5"), "steps": 2,
                             "tower_steps": 0, "add_layers": 2}),
        log=lambda *_: None,
    )
    grown = cobra_ros.load(tmp_path / "m6").model
    assert grown.cfg.llm.n_layer == n_layer + 2
    assert all(layer.mixer.out_proj.weight.abs().max() > 0
               for layer in grown.llm.backbone.layers[n_layer:])


@pytest.mark.parametrize(
    "fields",
    [
        {"ldp_grid": 2},  # the preset's projector does not pool
        {"init_from": "m0", "towers_from": "m0"},
        {"add_layers": 2},  # nothing to deepen
    ],
)
def test_train_rejects_options_it_would_ignore(fields):
    with pytest.raises(ValueError, match="drop |add projector: fused-ldpnet|add init_from"):
        train.check_config(train.TrainConfig(**fields))
    train.check_config(train.TrainConfig(projector="fused-ldpnet", ldp_grid=2))
