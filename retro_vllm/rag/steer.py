"""The logits processor's arguments for one request: set here, by the server, and nowhere else."""

from __future__ import annotations

from typing import Any

from retro_vllm.decoding.args import (
    ARG_ATTRIBUTION,
    ARG_BIAS,
    ARG_BIAS_TOKENS,
    ARG_PASSAGES,
    MAX_ATTRIBUTED_PASSAGES,
    MAX_BIAS_TOKENS,
)
from retro_vllm.decoding.attribution import vocabulary
from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.state import RetroState
from retro_vllm.retrieval.types import Passage

# Requests whose output follows a grammar or a tool schema: brackets and digits mean something
# else there, so the citation constraint stays out of the way.
_STRUCTURED_KEYS = ("tools", "response_format", "structured_outputs", "guided_json", "guided_regex",
                    "guided_choice", "guided_grammar")


def decoding_args(state: RetroState, body: dict[str, Any], controls: RetroControls, domain: str | None,
                  passage_sets: list[list[Passage]]) -> dict[str, Any]:
    """passage_sets: the passages of each prompt of the request (one for chat). One set of
    arguments covers the whole request, so with several prompts the constraint allows the
    largest passage count among them."""
    if not controls.retrieval:
        return {}
    args: dict[str, Any] = {}
    most = max((len(ps) for ps in passage_sets), default=0)
    # With no passage there is nothing to cite, and `[1]` may be prose or code: leave it alone.
    structured = any(body.get(k) for k in _STRUCTURED_KEYS)
    if most and state.config.decoding.constrain_citations and not structured:
        args[ARG_PASSAGES] = most
    # Attribution needs one numbering of passages for the whole request (several prompts of a
    # completions request each number their own).
    if (state.config.decoding.attribute_citations and not structured and len(passage_sets) == 1
            and 0 < most <= MAX_ATTRIBUTED_PASSAGES):
        ranked = sorted(passage_sets[0], key=lambda p: p.rank)
        args[ARG_ATTRIBUTION] = [vocabulary(p.chunk.text) for p in ranked]
    bias = controls.bias if controls.bias is not None else state.bias(domain)
    if bias > 0:
        tokens = passage_tokens(state, [p for ps in passage_sets for p in ps])
        if tokens:
            args[ARG_BIAS] = float(bias)
            args[ARG_BIAS_TOKENS] = tokens
    return args


def passage_tokens(state: RetroState, passages: list[Passage]) -> list[int]:
    if state.tokenizer is None or not passages:
        return []
    special = set(state.tokenizer.all_special_ids)
    encoded = state.tokenizer([p.chunk.text for p in passages], add_special_tokens=False)["input_ids"]
    # First occurrences in passage order (passages come best-first after fitting), capped.
    unique = dict.fromkeys(t for ids in encoded for t in ids if t not in special)
    return list(unique)[:MAX_BIAS_TOKENS]


def attach(body: dict[str, Any], args: dict[str, Any]) -> None:
    if not args:
        return
    xargs = body.get("vllm_xargs")
    body["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}), **args}
