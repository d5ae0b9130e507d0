"""Questions, answers and scene descriptions generated from ground truth, and a mention parser.

Directions follow the board frame of the dataset: "top" = small x (toward the robot base), "left" =
y < 0. Every yes/no relation has a margin band around its decision boundary where no question is
asked, so labels stay clean; yes and no are drawn in equal numbers per relation and scene.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from dataclasses import dataclass, replace
from itertools import permutations
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cobra_ros.langtable import wording
from cobra_ros.model.grounding import grounding_prompt
from cobra_ros.langtable.world import (
    ALL_BLOCKS,
    BLOCK_8,
    COLOURS,
    SPAWN_BUFFER,
    X_MAX,
    X_MIN,
    Y_MAX,
    Y_MIN,
    block_colour,
    block_shape,
    block_text,
    occluded_blocks,
    render,
    sample_effector,
    sample_scene,
)

DESCRIBE_PROMPT = "Describe the blocks on the board."

# Margins (metres). Blocks are ~4-5 cm across.
SIDE_MARGIN = 0.03  # left/right/above/below need this much offset either way
NEAR, NOT_NEAR = 0.10, 0.16
FAR, NOT_FAR = 0.25, 0.17
CLOSEST_MARGIN = 0.03
BETWEEN_YES_T, BETWEEN_YES_PERP = (0.2, 0.8), 0.03
BETWEEN_NO_T, BETWEEN_NO_PERP = (-0.15, 1.15), 0.08
REGION_MARGIN = 0.012

# 3x3 coarse regions over the area blocks are spawned in.
_X_LO, _X_HI = X_MIN + SPAWN_BUFFER, X_MAX - SPAWN_BUFFER
_Y_LO, _Y_HI = Y_MIN + SPAWN_BUFFER, Y_MAX - SPAWN_BUFFER
ROW_EDGES = (_X_LO + (_X_HI - _X_LO) / 3, _X_LO + 2 * (_X_HI - _X_LO) / 3)
COL_EDGES = (_Y_LO + (_Y_HI - _Y_LO) / 3, _Y_LO + 2 * (_Y_HI - _Y_LO) / 3)
_REGION_PHRASES = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}

TEMPLATES = {
    "left_of": (
        "Is the {a} left of the {b}?",
        "Is the {a} to the left of the {b}?",
        "Is the {a} on the left side of the {b}?",
    ),
    "right_of": (
        "Is the {a} right of the {b}?",
        "Is the {a} to the right of the {b}?",
        "Is the {a} on the right side of the {b}?",
    ),
    "above": (
        "Is the {a} above the {b}?",
        "Is the {a} further up than the {b}?",
        "Is the {a} closer to the top than the {b}?",
    ),
    "below": (
        "Is the {a} below the {b}?",
        "Is the {a} further down than the {b}?",
        "Is the {a} closer to the bottom than the {b}?",
    ),
    "near": (
        "Is the {a} near the {b}?",
        "Is the {a} close to the {b}?",
        "Is the {a} next to the {b}?",
    ),
    "far_from": ("Is the {a} far from the {b}?", "Is the {a} far away from the {b}?"),
    "closest_to": (
        "Is the {a} the closest block to the {b}?",
        "Is the {a} the block nearest to the {b}?",
    ),
    "between": (
        "Is the {a} between the {b} and the {c}?",
        "Is the {a} in between the {b} and the {c}?",
    ),
    "presence": ("Is there a {a}?", "Is there a {a} on the board?", "Do you see a {a}?"),
}
RELATIONS = tuple(TEMPLATES)


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    relation: (
        str  # a RELATIONS key, or describe / where / closest / extreme / count / colour / shape
    )
    label: bool | None  # yes/no questions only
    blocks: tuple = ()  # block names the question is about
    image: int = -1  # index into ExampleSet.images
    family: str = ""  # the wording family (wording.FAMILIES) of a kind="v2" yes/no question
    names: tuple = ()  # the words the question calls each of `blocks` by, when not its full name


# ---------------------------------------------------------------- regions and descriptions


def region(x: float, y: float) -> tuple:
    return int(np.searchsorted(ROW_EDGES, x)), int(np.searchsorted(COL_EDGES, y))


def region_phrase(x: float, y: float) -> str:
    return _REGION_PHRASES[region(x, y)]


def _region_is_clear(x: float, y: float) -> bool:
    return (
        min(abs(x - e) for e in ROW_EDGES) >= REGION_MARGIN
        and min(abs(y - e) for e in COL_EDGES) >= REGION_MARGIN
    )


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe_scene(blocks) -> str:
    """'There are 3 blocks: a red moon at the top left, a blue cube in the center and a green
    star on the right.' Blocks are listed in reading order (top row first, left to right)."""
    ordered = sorted(blocks, key=lambda b: (region(b.x, b.y)[0], b.y))
    parts = [
        f"{_article(block_text(b.name))} {block_text(b.name)} {region_phrase(b.x, b.y)}"
        for b in ordered
    ]
    if not parts:
        return "There are no blocks."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "block" if len(parts) == 1 else "blocks"
    verb = "is" if len(parts) == 1 else "are"
    return f"There {verb} {len(parts)} {noun}: {listed}."


# ---------------------------------------------------------------- relation labels


def _dist(a, b) -> float:
    return math.hypot(a.x - b.x, a.y - b.y)


def _side(delta: float, margin: float = SIDE_MARGIN):
    """True if delta < -margin, False if delta > margin, None (ambiguous) in between."""
    return True if delta < -margin else False if delta > margin else None


def relation_label(relation: str, a, b, c=None, others=()):
    """Label of `relation` for blocks a, b (and c for between); None when too close to call.

    Positions are board coordinates; blocks that also carry pixel coordinates (BlockTruth) must
    agree in the image for left/right/above/below. `others`: all blocks in the scene (closest_to).
    """
    if relation in ("left_of", "right_of", "above", "below"):
        world_key, pixel_key = ("y", "u") if relation in ("left_of", "right_of") else ("x", "v")
        sign = 1 if relation in ("left_of", "above") else -1
        label = _side(sign * (getattr(a, world_key) - getattr(b, world_key)))
        # Perspective can flip image order for far-apart depths near the board's sides: skip those.
        if label is not None and hasattr(a, pixel_key):
            if (sign * (getattr(a, pixel_key) - getattr(b, pixel_key)) < 0) != label:
                return None
        return label
    d = _dist(a, b)
    if relation == "near":
        return True if d < NEAR else False if d > NOT_NEAR else None
    if relation == "far_from":
        return True if d > FAR else False if d < NOT_FAR else None
    if relation == "closest_to":
        rivals = [_dist(o, b) for o in others if o.name not in (a.name, b.name)]
        if not rivals or d <= min(rivals) - CLOSEST_MARGIN:
            return True
        return False if d >= min(rivals) + CLOSEST_MARGIN else None
    if relation == "between":
        sx, sy = c.x - b.x, c.y - b.y
        ax, ay = a.x - b.x, a.y - b.y
        length = math.hypot(sx, sy)
        t = (ax * sx + ay * sy) / (length * length)
        perp = abs(sx * ay - sy * ax) / length
        if BETWEEN_YES_T[0] <= t <= BETWEEN_YES_T[1] and perp <= BETWEEN_YES_PERP:
            return True
        if t < BETWEEN_NO_T[0] or t > BETWEEN_NO_T[1] or perp >= BETWEEN_NO_PERP:
            return False
        return None
    raise ValueError(f"unknown relation {relation!r}")


def _candidates(relation: str, blocks, absent_names, context=None):
    """(names, label) for every unambiguous question of one relation type about `blocks`.

    context: every block in the scene (default `blocks`); "closest" is judged against all of them,
    hidden ones included, since they are on the board whether or not the camera sees them."""
    context = blocks if context is None else context
    if relation == "presence":
        return [((b.name,), True) for b in blocks] + [((n,), False) for n in absent_names]
    out = []
    if relation == "between":
        for a, b, c in permutations(blocks, 3):
            if b.name < c.name:
                label = relation_label(relation, a, b, c)
                if label is not None:
                    out.append(((a.name, b.name, c.name), label))
        return out
    for a, b in permutations(blocks, 2):
        label = relation_label(relation, a, b, others=context)
        if label is not None:
            out.append(((a.name, b.name), label))
    return out


def _pick(rng, items, k):
    return [items[i] for i in sorted(rng.choice(len(items), k, replace=False))] if k else []


def yes_no_questions(
    blocks,
    rng: np.random.Generator,
    per_relation: int = 1,
    absent=None,
    relations=RELATIONS,
    context=None,
) -> list:
    """Balanced yes/no questions: per relation, as many Yes as No (up to per_relation each)."""
    present = {b.name for b in blocks}
    if absent is None:
        absent = [n for n in ALL_BLOCKS if n not in present]
    examples = []
    for relation in relations:
        cands = _candidates(relation, blocks, absent, context)
        yes = [c for c in cands if c[1]]
        no = [c for c in cands if not c[1]]
        k = min(per_relation, len(yes), len(no))
        for names, label in _pick(rng, yes, k) + _pick(rng, no, k):
            templates = TEMPLATES[relation]
            text = templates[rng.integers(len(templates))].format(
                **{key: block_text(n) for key, n in zip("abc", names)}
            )
            examples.append(Example(text, "Yes" if label else "No", relation, label, names))
    return examples


# ---------------------------------------------------------------- open questions


def open_questions(blocks, rng: np.random.Generator) -> list:
    """Short-answer spatial questions whose answers are unambiguous under the margins."""
    out = [
        Example(
            "How many blocks are there?",
            str(len(blocks)),
            "count",
            None,
            tuple(b.name for b in blocks),
        )
    ]
    if not blocks:
        return out
    a = blocks[rng.integers(len(blocks))]
    out += where_questions([a])
    if len(blocks) >= 2:
        others = sorted((_dist(o, a), o.name) for o in blocks if o.name != a.name)
        if len(others) == 1 or others[1][0] - others[0][0] >= CLOSEST_MARGIN:
            out.append(
                Example(
                    f"Which block is closest to the {block_text(a.name)}?",
                    f"the {block_text(others[0][1])}",
                    "closest",
                    None,
                    (a.name, others[0][1]),
                )
            )
        side, key, sign = [
            ("furthest to the left", "y", 1),
            ("furthest to the right", "y", -1),
            ("closest to the top", "x", 1),
            ("closest to the bottom", "x", -1),
        ][rng.integers(4)]
        ranked = sorted(blocks, key=lambda b: sign * getattr(b, key))
        if sign * (getattr(ranked[1], key) - getattr(ranked[0], key)) >= SIDE_MARGIN:
            out.append(
                Example(
                    f"Which block is {side}?",
                    f"the {block_text(ranked[0].name)}",
                    "extreme",
                    None,
                    (ranked[0].name,),
                )
            )
    shapes = [block_shape(b.name) for b in blocks]
    colours = [block_colour(b.name) for b in blocks]
    unique_shapes = [b for b in blocks if shapes.count(block_shape(b.name)) == 1]
    unique_colours = [b for b in blocks if colours.count(block_colour(b.name)) == 1]
    if unique_shapes:
        b = unique_shapes[rng.integers(len(unique_shapes))]
        out.append(
            Example(
                f"What color is the {block_shape(b.name)}?",
                block_colour(b.name),
                "colour",
                None,
                (b.name,),
            )
        )
    if unique_colours:
        b = unique_colours[rng.integers(len(unique_colours))]
        out.append(
            Example(
                f"What shape is the {block_colour(b.name)} block?",
                block_shape(b.name),
                "shape",
                None,
                (b.name,),
            )
        )
    return out


def where_questions(blocks) -> list:
    """ "Where is the red moon?" for each block that is not too close to a region edge to call."""
    return [
        Example(
            f"Where is the {block_text(b.name)}?",
            region_phrase(b.x, b.y),
            "where",
            None,
            (b.name,),
        )
        for b in blocks
        if _region_is_clear(b.x, b.y)
    ]


def scene_examples(
    blocks,
    rng: np.random.Generator,
    per_relation: int = 1,
    min_visible: float = 0.5,
    block_set=BLOCK_8,
) -> list:
    """Description + balanced yes/no + open questions for one frame's ground truth.

    Blocks hidden (mostly) behind the arm are left out of everything. Presence negatives come from
    the scene's block set (blocks that do appear in other scenes, so only the image can tell), and
    from the other colour/shape pairs only when the whole set is on the board.
    """
    shown = [b for b in blocks if getattr(b, "visible", 1.0) >= min_visible]
    hidden = {b.name for b in blocks} - {b.name for b in shown}
    present = {b.name for b in blocks}
    absent = [n for n in block_set if n not in present] or [
        n for n in ALL_BLOCKS if n not in present
    ]
    questions = yes_no_questions(shown, rng, per_relation, absent, context=blocks)
    if (
        hidden
    ):  # with a block half hidden, counts and descriptions are unreliable: keep the safe questions
        return questions
    description = Example(
        DESCRIBE_PROMPT, describe_scene(shown), "describe", None, tuple(b.name for b in shown)
    )
    return [description] + questions + open_questions(shown, rng)


# ---------------------------------------------------------------- v2: issue 18's training data

# Colours and shapes no block has: presence questions about them are always answered "No".
MISSING_COLOURS = ("purple", "orange", "pink", "white", "black")
MISSING_SHAPES = ("triangle", "circle", "hexagon", "heart", "cylinder")
NONEXISTENT = "presence_missing"  # the relation of presence questions about such blocks


def box_answer(bbox, size) -> str:
    """The release's grounding answer: [x1, y1, x2, y2] over image width/height, 2 decimals."""
    w, h = size
    x1, y1, x2, y2 = bbox
    return "[" + ", ".join(f"{v:.2f}" for v in (x1 / w, y1 / h, x2 / w, y2 / h)) + "]"


def missing_block_text(rng: np.random.Generator) -> str:
    """A colour/shape pair no block of the 16 has: "purple moon", "red triangle", "orange
    block"."""
    r = rng.random()
    if r < 0.4:
        shape = _choice(rng, ("moon", "cube", "star", "pentagon", "block"))
        return f"{_choice(rng, MISSING_COLOURS)} {shape}"
    if r < 0.8:
        return f"{_choice(rng, COLOURS)} {_choice(rng, MISSING_SHAPES)}"
    return f"{_choice(rng, MISSING_COLOURS)} {_choice(rng, MISSING_SHAPES)}"


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def worded(example: Example, family: str, rng, standard: bool, names=()) -> Example:
    """`example` (a plain yes/no question) put in `family`'s words; a negation flips it. `names`:
    the words to call its blocks by (default their full names)."""
    names = tuple(names)
    said = list(names) or [_name_text(n) for n in example.blocks]
    text = wording.yes_no_text(example.relation, said, family, rng)
    if not standard:
        text = wording.typed(text, rng)
    label = example.label != wording.negates(family)
    return replace(example, question=text, answer="Yes" if label else "No", label=label,
                   family=family, names=names)


def reworded(example: Example, rng, families=wording.TRAIN_FAMILIES, on_table=(),
             rename: float = 0.0) -> Example:
    """The worded yes/no `example` again, in a family drawn afresh and typed afresh: training
    sees a new wording each time it draws the question, the answer following the new family.
    With probability `rename` its blocks are called by their dataset synonyms among the blocks
    `on_table` (`synonym_names`), where they have one."""
    plain = replace(example, label=example.label != wording.negates(example.family))
    names = synonym_names(example, on_table, rng) if rename and rng.random() < rename else ()
    return worded(plain, _choice(rng, families), rng, standard=False, names=names)


def block_synonyms(name: str, on_table) -> list:
    """What else Language-Table's instructions call block `name` when the blocks `on_table`
    (names) are on the board: "red block" if it is the only red one, "star" if it is the only
    star (the dataset's synonym rule, `../shared/reference/language_table.md`)."""
    colour, shape = block_colour(name), block_shape(name)
    out = []
    if [block_colour(n) for n in on_table].count(colour) == 1:
        out.append(f"{colour} block")
    if [block_shape(n) for n in on_table].count(shape) == 1:
        out.append(shape)
    return out


def synonym_names(example: Example, on_table, rng) -> tuple:
    """The words to call a relation question's blocks by, each block that has a dataset synonym
    among `on_table` called by one of them; () when none has (or for presence, where "is there a
    red block?" would ask something else)."""
    if example.relation.startswith("presence") or not on_table:
        return ()
    options = [block_synonyms(n, on_table) for n in example.blocks]
    if not any(options):
        return ()
    return tuple(_choice(rng, o) if o else _name_text(n) for n, o in zip(example.blocks, options))


def _name_text(name: str) -> str:
    return name if " " in name else block_text(name)


def presence_v2(shown, rng, pool, context) -> list:
    """Balanced presence: one visible block (Yes) and one familiar block of the pool that is not
    on the table (No) per scene; plus one block no set has (No, relation NONEXISTENT)."""
    on_table = {b.name for b in context}
    absent = [n for n in pool if n not in on_table]
    out = []
    if shown and absent:
        yes = shown[int(rng.integers(len(shown)))].name
        no = absent[int(rng.integers(len(absent)))]
        out += [Example("", "Yes", "presence", True, (yes,)),
                Example("", "No", "presence", False, (no,))]
    out.append(Example("", "No", NONEXISTENT, False, (missing_block_text(rng),)))
    return out


def locate_examples(shown, rng, size, all_shown: bool) -> list:
    """The release's grounding turn about visible blocks: by name ("the red moon"), by a unique
    colour or shape ("the red block", "the star"), and, with every block seen, by relation ("the
    block left of the green star", "the block closest to ...", "the leftmost block")."""
    boxed = [b for b in shown if getattr(b, "bbox", None) and b.bbox[2] > b.bbox[0]]
    if not boxed:
        return []
    out = []

    def add(expression, block):
        out.append(Example(grounding_prompt(expression),
                           box_answer(block.bbox, size), "locate", None, (block.name,)))

    b = boxed[int(rng.integers(len(boxed)))]
    add(_choice(rng, (f"the {block_text(b.name)}", block_text(b.name))), b)
    colours = [block_colour(o.name) for o in shown]
    shapes = [block_shape(o.name) for o in shown]
    if colours.count(block_colour(b.name)) == 1 and rng.random() < 0.5:
        add(f"the {block_colour(b.name)} block", b)
    elif shapes.count(block_shape(b.name)) == 1 and rng.random() < 0.5:
        add(f"the {block_shape(b.name)}", b)
    if not all_shown or len(shown) < 2:
        return out
    anchor = shown[int(rng.integers(len(shown)))]
    relation = _choice(rng, ("left_of", "right_of", "above", "below", "closest_to"))
    phrase = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below",
              "closest_to": "closest to"}[relation]
    labels = [(relation_label(relation, o, anchor, others=shown), o) for o in shown
              if o.name != anchor.name]
    yes = [o for label, o in labels if label]
    if len(yes) == 1 and all(label is False for label, o in labels if o is not yes[0]):
        if yes[0] in boxed:
            add(f"the block {phrase} the {block_text(anchor.name)}", yes[0])
    side = _choice(rng, ("left", "right", "top", "bottom"))
    _, key, sign = wording.EXTREMES[side]
    ranked = sorted(shown, key=lambda o: sign * getattr(o, key))
    clear = sign * (getattr(ranked[1], key) - getattr(ranked[0], key)) >= SIDE_MARGIN
    if clear and ranked[0] in boxed:
        word = {"left": "leftmost", "right": "rightmost", "top": "topmost",
                "bottom": "bottommost"}[side]
        add(f"the {word} block", ranked[0])
    return out


def open_questions_v2(shown, rng, standard: bool) -> list:
    """Count, closest, extreme, where, colour and shape questions, in any trained wording (the
    standard one for the evaluation); every visible block clear of a region edge gets a where."""
    pick = wording.pick
    out = [Example(pick(rng, wording.COUNT_WORDINGS, standard), str(len(shown)), "count", None,
                   tuple(b.name for b in shown))]
    for e in where_questions(shown):
        out.append(replace(e, question=pick(rng, wording.WHERE_WORDINGS, standard).format(
            a=block_text(e.blocks[0]))))
    if len(shown) >= 2:
        a = shown[int(rng.integers(len(shown)))]
        others = sorted((_dist(o, a), o.name) for o in shown if o.name != a.name)
        if len(others) == 1 or others[1][0] - others[0][0] >= CLOSEST_MARGIN:
            text = pick(rng, wording.CLOSEST_WORDINGS, standard).format(a=block_text(a.name))
            out.append(Example(text, f"the {block_text(others[0][1])}", "closest", None,
                               (a.name, others[0][1])))
        side = _choice(rng, tuple(wording.EXTREMES))
        words, key, sign = wording.EXTREMES[side]
        ranked = sorted(shown, key=lambda b: sign * getattr(b, key))
        if sign * (getattr(ranked[1], key) - getattr(ranked[0], key)) >= SIDE_MARGIN:
            out.append(Example(f"Which block is {pick(rng, words, standard)}?",
                               f"the {block_text(ranked[0].name)}", "extreme", None,
                               (ranked[0].name,)))
    out += [e for e in open_questions(shown, rng) if e.relation in ("colour", "shape")]
    return out


def scene_examples_v2(blocks, rng: np.random.Generator, size, families=wording.TRAIN_FAMILIES,
                      per_relation: int = 1, min_visible: float = 0.5, pool=BLOCK_8,
                      standard: bool = False) -> list:
    """Issue 18's data for one frame of `size` (w, h): balanced yes/no questions of every
    relation in `families`' words (a negation flips the answer), presence of absent blocks of
    the pool and of blocks no set has, count, closest, extreme, where, colour and shape
    answers, a description and the locate answer.

    Each yes/no question's family is drawn at random, independently of its answer, so the
    words say nothing about it. Blocks the arm hides (visible < min_visible) get no question;
    with one hidden, counts, descriptions and relational expressions are left out."""
    shown = [b for b in blocks if getattr(b, "visible", 1.0) >= min_visible]
    all_shown = len(shown) == len(blocks)
    plain = yes_no_questions(shown, rng, per_relation, [], RELATIONS[:-1], context=blocks)
    plain += presence_v2(shown, rng, pool, blocks)
    out = [worded(e, _choice(rng, families), rng, standard) for e in plain]
    out += locate_examples(shown, rng, size, all_shown)
    if not all_shown:
        return out
    description = Example(DESCRIBE_PROMPT, describe_scene(shown), "describe", None,
                          tuple(b.name for b in shown))
    return [description] + out + open_questions_v2(shown, rng, standard)

def words_only_accuracy(fit: list, score: list) -> dict:
    """Per relation, the accuracy on `score`'s yes/no questions of a classifier that sees only
    the words: the majority answer of each question text (case, punctuation and spacing
    ignored) in `fit`, else its relation's majority there. ~0.5 means the words tell nothing."""

    def key(text):
        return " ".join(re.findall(r"[a-z']+", text.lower()))

    votes, by_relation = {}, {}
    for e in fit:
        if e.label is not None:
            votes.setdefault(key(e.question), []).append(e.label)
            by_relation.setdefault(e.relation, []).append(e.label)
    hits = {}
    for e in score:
        if e.label is None:
            continue
        seen = votes.get(key(e.question)) or by_relation.get(e.relation, [True])
        guess = np.mean(seen) >= 0.5 if np.mean(seen) != 0.5 else True
        hits.setdefault(e.relation, []).append(guess == e.label)
    return {rel: float(np.mean(v)) for rel, v in sorted(hits.items())}


# ---------------------------------------------------------------- mention parser

_SHAPE_WORDS = {
    "moon": "moon",
    "moons": "moon",
    "crescent": "moon",
    "crescents": "moon",
    "cube": "cube",
    "cubes": "cube",
    "square": "cube",
    "squares": "cube",
    "star": "star",
    "stars": "star",
    "pentagon": "pentagon",
    "pentagons": "pentagon",
}
_BLOCK_NOUNS = {
    "block",
    "blocks",
    "one",
    "ones",
    "piece",
    "pieces",
    "object",
    "objects",
    "shape",
    "shapes",
    "thing",
    "things",
    "toy",
}
# Shape words people use for the real blocks that match none of ours ("red circle", "yellow
# hexagon"):
# with a colour they refer through the colour alone; on their own they are not treated as mentions.
_OTHER_SHAPES = {
    "circle",
    "hexagon",
    "heart",
    "triangle",
    "cylinder",
    "ball",
    "sphere",
    "pole",
    "disc",
    "disk",
}
_EXTRA_COLOURS = {"purple", "orange", "pink", "white", "black", "brown", "grey", "gray"}
_FILLERS = {
    "small",
    "little",
    "big",
    "large",
    "tiny",
    "half",
    "shaped",
    "colored",
    "coloured",
    "light",
    "dark",
}
_NEGATIONS = {"no", "not", "without", "nor", "never"}


def _tokens(text: str) -> list:
    return re.findall(r"[a-z]+", text.lower().replace("-", " "))


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def block_mentions(text: str, context=None) -> set:
    """Block names ('red_moon') mentioned in `text`.

    Synonyms follow the dataset's: "<colour> <shape>" with shape words moon/crescent, cube/square,
    star, pentagon; "<colour> block" (or "<colour> circle", ...) names the one block of that
    colour in `context`, and a bare singular shape word the one block of that shape. `context` is
    the set of block names the text can refer to (the scene's blocks; default: all 16). A
    reference that can match no block in the context comes back as its own words
    ("purple_block", "star", "red_circle") so it counts as a hallucination; one that could match
    several is dropped as ambiguous. Negated mentions ("no green star") are skipped.
    """
    context = set(ALL_BLOCKS if context is None else context)
    words = _tokens(text)
    found, used = set(), set()

    def negated(i):
        j = i - 1
        while j >= 0 and words[j] in ("a", "an", "the", "any"):
            j -= 1
        return j >= 0 and words[j] in _NEGATIONS

    def resolve(colour, shape, literal):
        matches = [
            n
            for n in context
            if (colour is None or block_colour(n) == colour)
            and (shape is None or block_shape(n) == shape)
        ]
        return matches[0] if len(matches) == 1 else (literal if not matches else None)

    for i, colour in enumerate(words):
        if colour not in COLOURS and colour not in _EXTRA_COLOURS:
            continue
        j = i + 1
        while j < len(words) and words[j] in _FILLERS:
            j += 1
        noun = words[j] if j < len(words) else ""
        if noun in _SHAPE_WORDS:
            name = f"{colour}_{_SHAPE_WORDS[noun]}"
            if j + 1 < len(words) and (
                words[j + 1] in _BLOCK_NOUNS or words[j + 1] in _SHAPE_WORDS
            ):
                j += 1  # "square block", "crescent moon"
        elif noun in _BLOCK_NOUNS or _singular(noun) in _OTHER_SHAPES:
            literal = f"{colour}_{'block' if noun in _BLOCK_NOUNS else _singular(noun)}"
            name = resolve(colour, None, literal) if colour in COLOURS else literal
        else:
            continue
        used.update(range(i, j + 1))
        if name and not negated(i):
            found.add(name)
    for i, word in enumerate(words):
        if i in used or word not in _SHAPE_WORDS or word.endswith("s") or negated(i):
            continue  # plural bare shapes ("two stars") name no single block
        name = resolve(None, _SHAPE_WORDS[word], _SHAPE_WORDS[word])
        if name:
            found.add(name)
    return found


def mention_scores(text: str, present) -> tuple:
    """(precision, recall) of the blocks a description mentions against the blocks present."""
    present = set(present)
    said = block_mentions(text, present)
    hits = len(said & present)
    precision = hits / len(said) if said else 1.0
    recall = hits / len(present) if present else 1.0
    return precision, recall


def region_hits(text: str, blocks) -> tuple:
    """(right, said): of the visible blocks that `text` places with a region phrase ("a red moon
    at the top left"), how many it places in their true region. Blocks too close to a region edge
    to call are skipped."""
    phrases = "|".join(sorted(_REGION_PHRASES.values(), key=len, reverse=True))
    right = said = 0
    for b in blocks:
        match = re.search(rf"\b{block_text(b.name)} ({phrases})\b", text.lower())
        if match and getattr(b, "visible", 1.0) >= 0.5 and _region_is_clear(b.x, b.y):
            said += 1
            right += match.group(1) == region_phrase(b.x, b.y)
    return right, said


# ---------------------------------------------------------------- dataset builder


@dataclass
class ExampleSet:
    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    truths: list  # per image: list of BlockTruth with pixel coordinates in the stored image
    examples: list  # of Example, each pointing at its image


SCENE_SOURCES = ("sim", "2d")
KINDS = ("v1", "v2")  # v1: the bundled model's questions; v2: scene_examples_v2
_CACHE_VERSION = 2  # bump when a scene source changes what it renders


def make_examples(
    seed: int,
    n_scenes: int,
    image_size=112,
    render_size=(320, 180),
    per_relation: int = 1,
    n_blocks=(4, 8),
    block_set=BLOCK_8,
    randomize: float = 1.0,
    min_visible: float = 0.5,
    source: str = "sim",
    cache_dir=None,
    progress: bool | None = None,
    kind: str = "v1",
    families=None,
    standard: bool = False,
) -> ExampleSet:
    """Render n_scenes random scenes and generate their examples; scene i depends on (seed, i).

    source: "sim" (the PyBullet world, `langtable.sim`) or "2d" (the look-alike drawing the bundled
    model was trained on). image_size: int for a square (the dataset frame squashed, as the model
    sees it), (w, h), or None to keep render_size. cache_dir: keep the result on disk, keyed by
    every argument. progress: tqdm bar (None: only on a terminal).
    kind: "v1" (scene_examples) or "v2" (scene_examples_v2, with `families` (default
    wording.TRAIN_FAMILIES) and `standard` wordings of the short answers); block_set "ALL" draws
    the blocks of each scene from the N_CHOOSE_K training subsets of all 16 (n_blocks then caps
    and floors the subset's size).
    """
    if source not in SCENE_SOURCES:
        raise ValueError(f"source must be one of {SCENE_SOURCES}, not {source!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    families = tuple(wording.TRAIN_FAMILIES if families is None else families)
    unknown = set(families) - set(wording.FAMILIES)
    if unknown:
        raise ValueError(f"unknown wording families {sorted(unknown)}")
    args = (
        seed,
        n_scenes,
        image_size,
        tuple(render_size),
        per_relation,
        n_blocks,
        tuple(block_set),
        randomize,
        min_visible,
        source,
        _CACHE_VERSION,
    ) + ((kind, families, standard) if kind != "v1" else ())
    path = None
    if cache_dir is not None:
        path = (
            Path(cache_dir) / f"examples-{hashlib.sha1(repr(args).encode()).hexdigest()[:16]}.pkl"
        )
        if path.exists():
            with open(path, "rb") as f:
                return pickle.load(f)
    if image_size is None:
        out_w, out_h = render_size
    else:
        out_w, out_h = (image_size, image_size) if np.isscalar(image_size) else image_size
    images = np.empty((n_scenes, out_h, out_w, 3), np.uint8)
    truths, examples = [], []
    scene_of = (
        _sim_scenes(render_size, randomize)
        if source == "sim"
        else _drawn_scenes(render_size, randomize)
    )
    bar = tqdm(
        range(n_scenes),
        desc=f"{source} scenes",
        unit="scene",
        disable=None if progress is None else not progress,
    )
    for i in bar:
        rng = np.random.default_rng([seed, i])
        frame = scene_of(rng, n_blocks, block_set)
        h, w = frame.rgb.shape[:2]
        sx, sy = out_w / w, out_h / h
        images[i] = (
            frame.rgb
            if (sx, sy) == (1, 1)
            else cv2.resize(frame.rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
        )
        truths.append([_rescaled(b, sx, sy) for b in frame.blocks])
        if kind == "v1":
            made = scene_examples(frame.blocks, rng, per_relation, min_visible, block_set)
        else:
            pool = ALL_BLOCKS if block_set == "ALL" else block_set
            made = scene_examples_v2(frame.blocks, rng, (w, h), families, per_relation,
                                     min_visible, pool, standard)
        examples += [replace(e, image=i) for e in made]
    data = ExampleSet(images, truths, examples)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return data


def _rescaled(b, sx: float, sy: float):
    bbox = None if b.bbox is None else (b.bbox[0] * sx, b.bbox[1] * sy, b.bbox[2] * sx,
                                        b.bbox[3] * sy)
    return replace(b, u=(b.u + 0.5) * sx - 0.5, v=(b.v + 0.5) * sy - 0.5, bbox=bbox)


def _draw_count(rng, n_blocks, block_set) -> list:
    lo, hi = (n_blocks, n_blocks) if np.isscalar(n_blocks) else n_blocks
    if block_set == "ALL":  # an N_CHOOSE_K training subset, cut to n_blocks
        from cobra_ros.langtable.sim.world import n_choose_k_subsets

        subsets = _SUBSETS.setdefault("train", n_choose_k_subsets(True))
        subset = subsets[int(rng.integers(len(subsets)))]
        count = min(len(subset), int(rng.integers(lo, hi + 1)))
        return [subset[i] for i in sorted(rng.choice(len(subset), count, replace=False))]
    count = int(rng.integers(lo, hi + 1))
    return [block_set[i] for i in sorted(rng.choice(len(block_set), count, replace=False))]


_SUBSETS = {}


def _sim_scenes(render_size, randomize):
    from cobra_ros.langtable.sim.scenes import SceneOptions, shared_sim, sim_scene

    opts = SceneOptions(randomize=randomize)
    sim = shared_sim(render_size)

    def scene_of(rng, n_blocks, block_set):
        return sim_scene(sim, rng, _draw_count(rng, n_blocks, block_set), render_size, opts)

    return scene_of


def _drawn_scenes(render_size, randomize):
    def scene_of(rng, n_blocks, block_set):
        scene = sample_scene(rng, n_blocks, block_set, randomize=randomize)
        for _ in range(10):  # move the arm off the blocks when it would hide one
            if not occluded_blocks(scene):
                break
            scene = scene.moved(effector=sample_effector(rng, scene.blocks))
        return render(scene, render_size)

    return scene_of
