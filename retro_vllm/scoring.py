"""How an answer scores against its reference answer: shared by the adapters' validation gate
(adapters/validate.py) and the evaluations (evaluation/), so that both count the same words.
Imports no engine, server or HTTP client."""

from __future__ import annotations

from collections import Counter

from retro_vllm.decoding.attribution import words


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 (lowercase, no punctuation or articles)."""
    predicted, expected = words(prediction), words(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected or not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)
