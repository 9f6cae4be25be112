"""What each token does to a `[n]` marker being written, as tables over the vocabulary.

Whether the model is inside a marker depends only on the text since the last non-digit
character: `[` followed by digits means "inside, number so far v"; anything else means
"outside". So the state before a step is a function of the last few tokens, and the
constraint needs no memory across steps (which is what lets one core serve both of vLLM's
processor interfaces). Tables are derived from the loaded tokenizer: BPE merges brackets with
punctuation (` [`, `][`, `].`), and nothing here assumes which merges exist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A citation marker in text; the server turns each into an annotation, attribution skips them.
MARKER = re.compile(r"\[(\d{1,4})\]")

OUTSIDE = 0
# Largest passage number a marker may name; larger requests are refused by validate_params.
MAX_MARKER = 64
NUM_STATES = MAX_MARKER + 2  # OUTSIDE, then "inside with number v" for v = 0..MAX_MARKER
# "This token can never be part of a valid marker here" (leading zero, number too large).
NEVER = np.iinfo(np.int16).max
# Digits a marker may hold: numbers up to MAX_MARKER need this many, and a marker cannot
# stay open longer, so the opener is always within the last WINDOW tokens.
WINDOW = len(str(MAX_MARKER)) + 1

_DIGITS = "0123456789"


def inside(number: int) -> int:
    return 1 + number


@dataclass(frozen=True)
class MarkerTables:
    """Tables for the tokens that touch markers (`columns`); every other token closes one.

    next_state[s, c]: state after token `columns[c]` is written in state s.
    need[s, c]: the smallest passage count for which writing it in state s is allowed
        (0 = always; NEVER = never).
    opens[s, c]: the first digit of a marker number this token writes right after a `[`
        in state s (1-9), 0 when it writes none: which passage a marker it starts names,
        for markers up to 9 (attribution).
    """

    columns: np.ndarray  # [C] token ids
    next_state: np.ndarray  # [NUM_STATES, C] int16
    need: np.ndarray  # [NUM_STATES, C] int16
    opens: np.ndarray  # [NUM_STATES, C] int8


def step(state: int, text: str) -> tuple[int, int]:
    """Run one token's text through the marker automaton: (next state, need)."""
    need = 0
    for ch in text:
        if ch == "[":
            state = inside(0)
        elif ch in _DIGITS and state != OUTSIDE:
            value = state - 1
            number = value * 10 + int(ch)
            if number == 0 or number > MAX_MARKER:
                return OUTSIDE, int(NEVER)
            need = max(need, number)
            state = inside(number)
        else:
            state = OUTSIDE
    return state, need


def first_digit(state: int, text: str) -> int:
    """The digit `text` writes first after a `[` when written in `state` (0: none)."""
    for ch in text:
        if ch in _DIGITS and state == inside(0):
            return int(ch)
        state, _ = step(state, ch)
    return 0


def build_tables(token_texts: Sequence[str | None]) -> MarkerTables:
    """token_texts[i] is token i decoded alone (None for ids the tokenizer lacks)."""
    columns = [i for i, text in enumerate(token_texts)
               if text and any(ch in text for ch in "[]" + _DIGITS)]
    next_state = np.full((NUM_STATES, len(columns)), OUTSIDE, dtype=np.int16)
    need = np.zeros((NUM_STATES, len(columns)), dtype=np.int16)
    opens = np.zeros((NUM_STATES, len(columns)), dtype=np.int8)
    for c, token_id in enumerate(columns):
        text = token_texts[token_id]
        for state in range(NUM_STATES):
            next_state[state, c], need[state, c] = step(state, text)
            opens[state, c] = first_digit(state, text)
    return MarkerTables(np.asarray(columns, dtype=np.int64), next_state, need, opens)


def tables_for_tokenizer(tokenizer) -> MarkerTables:
    """Decode only tokens whose raw form can hold a bracket or digit (byte-level BPE keeps
    ASCII as is), which keeps this to a few hundred decodes."""
    size = len(tokenizer)
    raw = tokenizer.convert_ids_to_tokens(list(range(size)))
    texts: list[str | None] = [None] * size
    for token_id, piece in enumerate(raw):
        # "<0x5B>": byte-fallback pieces of sentencepiece vocabularies
        if piece is not None and (piece.startswith("<0x") or any(ch in piece for ch in "[]" + _DIGITS)):
            texts[token_id] = tokenizer.decode([token_id])
    return build_tables(texts)
