"""Checks on what clients send, before any of it reaches the model.

Questions are plain text: the tokenizer encodes chat-template markers inside them as literal
text (cobra_ros.model.tokenizer), so they need no escaping here; what is refused is empty text,
text over the length limit (never silently truncated) and control characters other than tab and
newlines.
"""
from __future__ import annotations

import unicodedata

ALLOWED_CONTROL = {"\t", "\n", "\r"}


class RequestError(ValueError):
    """A request the node refuses; the message is sent back to the client."""


def check_question(text: str, max_chars: int, what: str = "question") -> str:
    """The question with surrounding whitespace removed, or RequestError saying what is wrong."""
    if not text.strip():
        raise RequestError(f"{what} is empty" if not text else f"{what} is only whitespace")
    if len(text) > max_chars:
        raise RequestError(f"{what} is {len(text)} characters long; the limit is {max_chars} "
                           f"(parameter max_question_chars)")
    for position, char in enumerate(text):
        if char not in ALLOWED_CONTROL and unicodedata.category(char) in ("Cc", "Cs"):
            raise RequestError(f"{what} contains the control character U+{ord(char):04X} at "
                               f"position {position}; "
                               f"send plain text")
    return text.strip()


def token_budget(requested: int, default: int, limit: int) -> tuple[int, str]:
    """(max_new_tokens to use, a note for the client when the request was capped)."""
    if requested == 0:
        return min(default, limit), ""
    if requested > limit:
        return limit, (f"max_new_tokens {requested} capped to {limit} "
                       f"(parameter max_new_tokens_limit)")
    return requested, ""
