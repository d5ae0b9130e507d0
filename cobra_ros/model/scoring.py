"""How a yes/no question is put to the model and scored, as the release's evaluation does it.

The release's evaluation fork (h-zhao1997/vlm-evaluation, vlm_eval/models/cobra.py) wraps each
benchmark question in its own instruction, reads the first answer token's softmax over the whole
vocabulary and renormalises it over the two answer words (POPE: "Yes"/"No", VSR: "True"/"False");
the prediction is the likelier word. "plain" asks the question as given, as the bundled model was
trained to answer.
"""

from __future__ import annotations

from dataclasses import dataclass

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class Scoring:
    name: str
    template: str  # "{}" is the question (POPE) or the statement (VSR)
    answers: tuple[str, str]  # (positive, negative): each must be a single token

    def prompt(self, question: str) -> str:
        return self.template.format(question)


SCORINGS = {
    "plain": Scoring("plain", "{}", ("Yes", "No")),
    "pope": Scoring("pope", "{}" + SHORT_ANSWER, ("Yes", "No")),
    "vsr": Scoring(
        "vsr",
        'Based on the image, is this statement "True" or "False"? {}'
        '\nRespond with "True" or "False" directly.',
        ("True", "False"),
    ),
}
SCORING_HELP = (
    "how a yes/no question is asked and scored: 'plain' as given (Yes/No); 'pope' the "
    "release's POPE prompt (the question plus a single-word instruction, Yes/No); 'vsr' the "
    "release's VSR prompt (the text is a statement, True/False)"
)


def get_scoring(name: str) -> Scoring:
    if name not in SCORINGS:
        raise ValueError(f"unknown scoring {name!r}; expected one of {sorted(SCORINGS)}")
    return SCORINGS[name]
