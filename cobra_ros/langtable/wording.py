"""How a person types a question about the blocks: named wording families, synonyms, negation and
surface noise (case, punctuation, spacing).

A family is a way of putting a question ("polite": "Could you tell me if the red moon is left of
the blue cube?"). Training draws from TRAIN_FAMILIES; HELD_OUT_FAMILIES are never used for
training so that the evaluation can report how the model does on wordings it never saw.
Families whose name starts with "negation" put a "not" (or a "no") in the question: the answer
flips.
Relation phrases (RELATION_PHRASES) are shared by every family: "higher than" must mean "above"
whatever the sentence around it.
"""

from __future__ import annotations

import re

import numpy as np

# The phrase between the two block names, per relation ("Is the A <phrase> the B?"). between
# names a third block: "... between the B and the C".
RELATION_PHRASES = {
    "left_of": ("left of", "to the left of", "on the left side of", "further left than",
                "on the left of", "farther left than"),
    "right_of": ("right of", "to the right of", "on the right side of", "further right than",
                 "on the right of", "farther right than"),
    "above": ("above", "higher than", "further up than", "closer to the top than",
              "farther up than", "nearer the top than"),
    "below": ("below", "lower than", "further down than", "closer to the bottom than",
              "farther down than", "nearer the bottom than"),
    "near": ("near", "close to", "next to", "nearby", "beside", "adjacent to"),
    "far_from": ("far from", "far away from", "a long way from", "distant from"),
    "closest_to": ("the closest block to", "the block nearest to", "the nearest block to",
                   "the block closest to"),
    "between": ("between", "in between"),
}
# Short forms drop the articles: "red moon left of blue cube?"
SHORT_PHRASES = {
    "left_of": "left of",
    "right_of": "right of",
    "above": "above",
    "below": "below",
    "near": "near",
    "far_from": "far from",
    "closest_to": "closest to",
    "between": "between",
}

# Yes/no sentence frames per family. {s}: "the A <phrase> the B" (the subject and what is said of
# it), {a}/{r}/{b}: its parts. Presence frames use {a} only.
FAMILIES = {
    "plain": ("Is the {a} {r} {b}?",),
    "polite": (
        "Could you tell me if the {a} is {r} {b}?",
        "Please tell me: is the {a} {r} {b}?",
        "Is the {a} {r} {b}, please?",
        "Do you think the {a} is {r} {b}?",
        "Quick question: is the {a} {r} {b}?",
        "Hey, is the {a} {r} {b}?",
        "I want to know: is the {a} {r} {b}?",
    ),
    "located": (
        "Is the {a} {r} {b} in the image?",
        "Is the {a} {r} {b} on the table?",
        "Is the {a} {r} {b} right now?",
        "On the board, is the {a} {r} {b}?",
        "In this picture, is the {a} {r} {b}?",
    ),
    "short": ("{a} {r} {b}?", "{a} {r} {b}, yes or no?", "is {a} {r} {b}?"),
    "negation": (
        "Is the {a} not {r} {b}?",
        "Is the {a} not {r} {b} on the table?",
        "Could you tell me if the {a} is not {r} {b}?",
        "Is the {a} not {r} {b}, please?",
        "Do you think the {a} is not {r} {b}?",
        "Hey, is the {a} not {r} {b}?",
        "Is the {a} not {r} {b} right now?",
    ),
    # held out
    "whether": (
        "Can you check whether the {a} is {r} {b}?",
        "I'd like to know if the {a} is {r} {b}.",
    ),
    "say": ("Would you say the {a} is {r} {b}?", "Tell me, is the {a} {r} {b}?"),
    "negation_true": (
        "Is it true that the {a} is not {r} {b}?",
        "Would you say the {a} is not {r} {b}?",
    ),
}
PRESENCE_FAMILIES = {
    "plain": ("Is there a {a}?", "Is there a {a} on the board?", "Do you see a {a}?"),
    "polite": ("Could you tell me if there is a {a}?", "Is there a {a}, please?",
               "Do you think there is a {a}?", "Quick question: is there a {a}?",
               "Hey, do you see a {a}?"),
    "located": ("Is there a {a} in the image?", "Is there a {a} on the table?",
                "Is there a {a} in this picture?", "Is a {a} on the board right now?"),
    "short": ("{a}?", "any {a}?", "{a} on the table?", "see a {a}?"),
    "negation": ("Is there not a {a}?", "Is the {a} not on the table?",
                 "Is there no {a} on the board?", "Could you tell me if there is not a {a}?",
                 "Do you think there is no {a}?"),
    "whether": ("Can you check whether there is a {a}?", "I'd like to know if there is a {a}."),
    "say": ("Would you say there is a {a} on the table?", "Can you spot a {a}?"),
    "negation_true": ("Is it true that there is no {a}?", "Would you say there is no {a}?"),
}
TRAIN_FAMILIES = ("plain", "polite", "located", "short", "negation")
HELD_OUT_FAMILIES = ("whether", "say", "negation_true")
STANDARD = ("plain",)  # the evaluation's standard wording


def negates(family: str) -> bool:
    return family.startswith("negation")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def yes_no_text(relation: str, names_text, family: str, rng: np.random.Generator) -> str:
    """One question of `family` about blocks `names_text` ("red moon", ...)."""
    if relation.startswith("presence"):
        frame = _choice(rng, PRESENCE_FAMILIES[family])
        text = frame.format(a=names_text[0])
        return re.sub(r"\ba ([aeiou])", r"an \1", text)
    short = family == "short"
    a, b = names_text[0], names_text[1]
    phrase = SHORT_PHRASES[relation] if short else _choice(rng, RELATION_PHRASES[relation])
    the = "" if short else "the "
    obj = f"{the}{b}" + (f" and {the}{names_text[2]}" if relation == "between" else "")
    return _choice(rng, FAMILIES[family]).format(a=a, r=phrase, b=obj)


# Short-answer questions: several wordings each (all trained; the evaluation uses the first).
COUNT_WORDINGS = (
    "How many blocks are there?",
    "How many blocks are on the table?",
    "How many blocks do you see?",
    "Count the blocks.",
    "how many blocks?",
)
CLOSEST_WORDINGS = (
    "Which block is closest to the {a}?",
    "What is the nearest block to the {a}?",
    "Which block is next to the {a}?",
)
WHERE_WORDINGS = ("Where is the {a}?", "Where is the {a} on the board?", "where's the {a}?")
# (standard, other wordings) per extreme, with the key and sign that rank the blocks
EXTREMES = {
    "left": (("furthest to the left", "the leftmost", "furthest left"), "y", 1),
    "right": (("furthest to the right", "the rightmost", "furthest right"), "y", -1),
    "top": (("closest to the top", "highest up", "furthest up"), "x", 1),
    "bottom": (("closest to the bottom", "lowest down", "furthest down"), "x", -1),
}


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def pick(rng: np.random.Generator, options, standard: bool):
    """The standard (first) wording for the evaluation, any one for training."""
    return options[0] if standard else _choice(rng, options)


def typed(text: str, rng: np.random.Generator) -> str:
    """`text` as a person might type it: case, final punctuation and spacing vary; words do not."""
    r = rng.random()
    if r < 0.15:
        text = text.upper()
    elif r < 0.35:
        text = text.lower()
    end = rng.random()
    if text.endswith("?"):
        if end < 0.15:
            text = text[:-1]
        elif end < 0.25:
            text = text[:-1] + " ?"
        elif end < 0.35:
            text = text + "??"
    if rng.random() < 0.1:
        words = text.split(" ")
        i = int(rng.integers(len(words)))
        words[i] = words[i] + " "
        text = " ".join(words)
    if rng.random() < 0.1:
        text = " " + text if rng.random() < 0.5 else text + " "
    return text
