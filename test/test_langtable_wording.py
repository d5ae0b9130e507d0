"""Issue 18's training data: wording families, negation, synonyms, held-out families, balance."""
import re

import numpy as np
import pytest

from cobra_ros.langtable import questions as Q, wording as W
from cobra_ros.langtable.world import BlockTruth

# What each phrase means, written out independently of wording.RELATION_PHRASES: the block named
# first is <relation> of the one named second.
MEANING = {
    "further left than": "left_of", "on the left side of": "left_of", "to the left of": "left_of",
    "further right than": "right_of", "on the right side of": "right_of",
    "to the right of": "right_of", "closer to the top than": "above", "further up than": "above",
    "higher than": "above", "closer to the bottom than": "below", "further down than": "below",
    "lower than": "below", "a long way from": "far_from", "far away from": "far_from",
    "next to": "near", "nearby": "near", "close to": "near", "left of": "left_of",
    "right of": "right_of", "above": "above", "below": "below", "far from": "far_from",
    "near": "near", "on the left of": "left_of", "farther left than": "left_of",
    "on the right of": "right_of", "farther right than": "right_of", "farther up than": "above",
    "nearer the top than": "above", "farther down than": "below",
    "nearer the bottom than": "below", "beside": "near", "adjacent to": "near",
    "distant from": "far_from",
}
TWO_BLOCK = ("left_of", "right_of", "above", "below", "near", "far_from")


def T(name, x, y, u=None, v=None):
    # pixel order follows board order here (no perspective), so every side relation is decidable
    return BlockTruth(name, *name.split("_"), x, y, 0.0, y * 1000 if u is None else u,
                      x * 1000 if v is None else v, 1.0, (10.0, 10.0, 30.0, 30.0))


SCENE = [T("red_moon", 0.25, -0.2), T("blue_cube", 0.45, 0.15), T("green_star", 0.30, -0.05),
         T("yellow_pentagon", 0.50, -0.22)]


def many(families, standard=True, n=150):
    out = []
    for seed in range(n):
        out += Q.scene_examples_v2(SCENE, np.random.default_rng(seed), (320, 180), families,
                                   standard=standard)
    return out


def meaning_of(text):
    """(relation, negated) of a two-block question, read from its words."""
    low = " ".join(text.lower().split())
    for phrase in sorted(MEANING, key=len, reverse=True):
        if f" {phrase} " in f" {low} ":
            return MEANING[phrase], " not " in f" {low} "
    return None, None


def test_every_two_block_answer_follows_the_words_synonyms_and_negation_included():
    by_name = {b.name: b for b in SCENE}
    checked = {"plain": 0, "negation": 0}
    for e in many(W.TRAIN_FAMILIES, standard=False):
        if e.relation not in TWO_BLOCK:
            continue
        relation, negated = meaning_of(e.question)
        assert relation == e.relation, e.question
        truth = Q.relation_label(relation, *(by_name[n] for n in e.blocks))
        assert e.label == (truth != negated), e.question
        assert e.answer == ("Yes" if e.label else "No")
        checked["negation" if negated else "plain"] += 1
    assert checked["plain"] > 200 and checked["negation"] > 50


def test_negation_flips_the_answer_of_the_same_question():
    rng = np.random.default_rng(0)
    plain = Q.yes_no_questions(SCENE, rng, per_relation=2, absent=["blue_moon"])
    assert len({e.relation for e in plain}) >= 6
    for e in plain:
        yes, no = Q.worded(e, "plain", rng, True), Q.worded(e, "negation", rng, True)
        assert yes.label == e.label and no.label == (not e.label)
        assert no.answer == ("Yes" if no.label else "No")
        assert {"not", "no"} & set(no.question.rstrip("?").split()), no.question


def test_a_reworded_question_keeps_its_meaning_in_a_fresh_training_wording():
    by_name = {b.name: b for b in SCENE}
    rng = np.random.default_rng(0)
    drawn = [e for e in many(W.TRAIN_FAMILIES, standard=False, n=20)
             if e.relation in TWO_BLOCK or e.relation == "presence"]
    texts, families = set(), set()
    for e in drawn:
        if e.relation == "presence":
            truth = e.blocks[0] in by_name
        else:
            truth = Q.relation_label(e.relation, *(by_name[n] for n in e.blocks))
        for _ in range(5):
            r = Q.reworded(e, rng)
            assert (r.relation, r.blocks) == (e.relation, e.blocks)
            if e.relation != "presence":
                assert meaning_of(r.question) == (e.relation, W.negates(r.family)), r.question
            assert r.label == (truth != W.negates(r.family)), r.question
            assert r.answer == ("Yes" if r.label else "No")
            texts.add(r.question)
            families.add(r.family)
    assert families == set(W.TRAIN_FAMILIES)
    assert len(texts) > 2 * len({e.question for e in drawn})


def test_dataset_synonyms_name_a_block_only_where_the_board_makes_them_unique():
    board = ["red_moon", "red_pentagon", "blue_cube", "green_star", "yellow_star"]
    assert Q.block_synonyms("red_moon", board) == ["moon"]  # two red blocks; one moon
    assert Q.block_synonyms("blue_cube", board) == ["blue block", "cube"]
    assert Q.block_synonyms("green_star", board) == ["green block"]  # two stars
    assert Q.block_synonyms("red_pentagon", board) == ["pentagon"]


def test_a_renamed_question_calls_its_blocks_by_their_synonyms_and_keeps_its_answer():
    by_name = {b.name: b for b in SCENE}
    on_table = list(by_name)  # one of each colour and shape: every block has both synonyms
    rng = np.random.default_rng(1)
    drawn = [e for e in many(W.TRAIN_FAMILIES, standard=False, n=20) if e.relation in TWO_BLOCK]
    renamed = 0
    for e in drawn:
        truth = Q.relation_label(e.relation, *(by_name[n] for n in e.blocks))
        r = Q.reworded(e, rng, on_table=on_table, rename=1.0)
        assert r.label == (truth != W.negates(r.family)), r.question
        assert meaning_of(r.question) == (e.relation, W.negates(r.family)), r.question
        low = " ".join(r.question.lower().split())
        for name, said in zip(r.blocks, r.names):
            assert said in Q.block_synonyms(name, on_table) and said in low, (said, r.question)
            assert name.replace("_", " ") not in low, r.question
        renamed += 1
    assert renamed > 50
    # presence keeps the full name: "is there a red block?" asks about any red block
    presence = next(e for e in many(("plain",), n=1) if e.relation == "presence")
    assert Q.reworded(presence, rng, on_table=on_table, rename=1.0).names == ()


def test_presence_covers_absent_blocks_of_the_set_and_blocks_that_do_not_exist():
    examples = many(("plain",), n=60)
    on_table = {b.name for b in SCENE}
    missing = [e for e in examples if e.relation == Q.NONEXISTENT]
    assert missing and all(e.answer == "No" for e in missing)
    words = {w for e in missing for w in e.question.lower().split()}
    assert words & {"purple", "orange", "pink"} and words & {"triangle", "circle", "hexagon"}
    presence = [e for e in examples if e.relation == "presence"]
    assert all((e.blocks[0] in on_table) == e.label for e in presence)
    assert sum(e.label for e in presence) == sum(not e.label for e in presence)


def test_held_out_families_never_reach_training_examples():
    data = Q.make_examples(3, 40, image_size=32, kind="v2", n_blocks=(1, 8), source="2d")
    frames = [f for fam in W.HELD_OUT_FAMILIES
              for f in W.FAMILIES[fam] + W.PRESENCE_FAMILIES[fam]]
    openings = {" ".join(f.lower().split()[:3]) for f in frames}
    assert not set(W.TRAIN_FAMILIES) & set(W.HELD_OUT_FAMILIES)
    for e in data.examples:
        assert e.family not in W.HELD_OUT_FAMILIES
        text = " ".join(re.findall(r"[a-z',]+", e.question.lower()))
        assert not any(text.startswith(o.replace("{a}", "")) for o in openings), e.question
    held = many(W.HELD_OUT_FAMILIES, n=20)
    assert {e.family for e in held if e.label is not None} == set(W.HELD_OUT_FAMILIES)


def test_no_yes_no_answer_can_be_told_from_the_words_alone():
    fit = Q.make_examples(0, 300, image_size=32, kind="v2", n_blocks=(1, 8), source="2d")
    score = Q.make_examples(1, 300, image_size=32, kind="v2", n_blocks=(1, 8), source="2d")
    control = Q.words_only_accuracy(fit.examples, score.examples)
    assert set(Q.RELATIONS) <= set(control)
    for relation in Q.RELATIONS:
        assert 0.40 <= control[relation] <= 0.60, (relation, control[relation])
    # the words-only classifier is not blind: it learns what the words do tell
    assert control[Q.NONEXISTENT] > 0.8


def test_locate_answers_are_the_release_box_of_the_block_named():
    examples = [e for e in many(("plain",), n=40) if e.relation == "locate"]
    prompt = ('Please provide the bounding box coordinate of the region this sentence '
                         'describes: "')
    assert examples and all(e.question.startswith(prompt) for e in examples)
    expressions = {e.question[len(prompt):-1]: e for e in examples}
    assert "the red moon" in expressions or "red moon" in expressions
    assert any(x.startswith("the block ") for x in expressions)
    for e in examples:
        assert e.answer == "[0.03, 0.06, 0.09, 0.17]"  # (10, 10, 30, 30) over 320x180
    # "the block left of the blue cube" is only asked when exactly one block is left of it
    by_name = {b.name: b for b in SCENE}
    for text, e in expressions.items():
        m = re.match(r"the block (left of|right of|above|below) the (\w+ \w+)$", text)
        if m:
            anchor = by_name[m.group(2).replace(" ", "_")]
            relation = MEANING[m.group(1)]
            yes = [b.name for b in SCENE if b is not anchor
                   and Q.relation_label(relation, b, anchor)]
            assert yes == list(e.blocks)


@pytest.mark.parametrize("text", ["Is the red moon left of the blue cube?", "red moon?"])
def test_typing_changes_case_spacing_and_punctuation_but_not_words(text):
    rng = np.random.default_rng(0)
    typed = {W.typed(text, rng) for _ in range(200)}
    assert len(typed) > 5
    assert {" ".join(re.findall(r"[a-z]+", t.lower())) for t in typed} == {
        " ".join(re.findall(r"[a-z]+", text.lower()))}


def test_box_answers_round_trip_through_the_evaluation_parser():
    from cobra_ros.evaluate import iou, parse_box

    answer = Q.box_answer((32, 18, 160, 90), (320, 180))
    assert answer == "[0.10, 0.10, 0.50, 0.50]"
    assert parse_box(answer) == [0.1, 0.1, 0.5, 0.5]
    assert parse_box("[0.5, 0.1, 0.2, 0.5]") is None and parse_box("the red moon") is None
    assert parse_box("[0.1, 0.1, 1.5, 0.5]") is None
    assert iou([0, 0, 0.5, 0.5], [0.25, 0, 0.75, 0.5]) == pytest.approx(1 / 3)
