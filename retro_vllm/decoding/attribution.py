"""Citation attribution: which supplied passage a claim draws its words from.

A marker `[n]` closes a claim. With attribution on, the logits processor lets the model write
only the number(s) of the passage(s) sharing the most words with the claim (the text generated
since the previous marker), so the marker points where the words came from. Words are
lowercase alphanumeric runs without articles, the same words answer-overlap figures count.
"""

from __future__ import annotations

import re

from retro_vllm.decoding.markers import MARKER

_WORD = re.compile(r"[a-z0-9]+")
_ARTICLES = frozenset({"a", "an", "the"})
# A passage's distinct words travel to the engine with the request; more than this is a
# document, not a passage, and the tail adds little to the overlap.
MAX_VOCABULARY_WORDS = 2048
MAX_VOCABULARY_CHARS = 65536


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(MARKER.sub(" ", text.lower())) if w not in _ARTICLES]


def vocabulary(text: str) -> str:
    """A passage's distinct words, space-separated (how they travel in `vllm_xargs`), within
    the limits the processor accepts."""
    kept, size = [], 0
    for word in dict.fromkeys(words(text)):
        size += len(word) + 1
        if len(kept) == MAX_VOCABULARY_WORDS or size > MAX_VOCABULARY_CHARS + 1:
            break
        kept.append(word)
    return " ".join(kept)


def claim_text(generated: str) -> str:
    """The claim a marker being opened at the end of `generated` closes: the text since the
    previous marker."""
    head = generated[: generated.rfind("[")] if generated.rstrip().endswith("[") else generated
    return head[head.rfind("]") + 1:]


def best_passages(claim: str, vocabularies: tuple[frozenset[str], ...]) -> frozenset[int]:
    """1-based numbers of the passages sharing the most of the claim's words (ties: all of
    them); empty when the claim shares no word with any passage."""
    claim_words = words(claim)
    if not claim_words or not vocabularies:
        return frozenset()
    shared = [sum(w in vocab for w in claim_words) for vocab in vocabularies]
    best = max(shared)
    return frozenset(n for n, count in enumerate(shared, 1) if count == best) if best else frozenset()
