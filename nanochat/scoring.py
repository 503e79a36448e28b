"""Scoring a completion: the checks the categorical and generative tasks share.

A categorical task compares the letter the model picked (evaluation/chat.py picks it from the letters'
logits) with the reference; a generative task compares the number after `#### ` in the completion with
the one in the reference answer (GSM8K's convention, also used by the arithmetic and spelling tasks).
"""
from __future__ import annotations

import re

from nanochat.chat_format import assistant_text


def letter_is_correct(conversation: dict, letter: str) -> bool:
    """Categorical scoring: the letter the model picked equals the reference answer (the last message)."""
    return letter.strip() == conversation["messages"][-1]["content"]


_ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_answer(text: str) -> str | None:
    """The number after the first `#### ` marker (GSM8K's convention), commas and a final '.' removed."""
    match = _ANSWER_RE.search(text)
    if not match:
        return None
    return match.group(1).strip().replace(",", "").rstrip(".")


def answer_is_correct(conversation: dict, completion: str) -> bool:
    """Generative scoring for `#### N` tasks: the completion's number equals the reference's."""
    reference = extract_answer(assistant_text(conversation["messages"][-1]["content"]))
    predicted = extract_answer(completion)
    return predicted is not None and predicted == reference
