"""The arguments the endpoint hands the logits processor, through `SamplingParams.extra_args`.

On the routes retro-vllm serves (chat and completions) clients cannot set them: the endpoint
drops `retro_*` keys from a client's `vllm_xargs`. vLLM routes the plugin does not wrap (e.g.
`/v1/responses`) pass `vllm_xargs` through as stock vLLM does; there the arguments only steer the
sender's own request. Either way they are validated here, in vLLM's admission path, so a
malformed one is a 400 and never reaches the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from retro_vllm.decoding.attribution import (
    MAX_VOCABULARY_CHARS as MAX_ATTRIBUTION_CHARS,
)
from retro_vllm.decoding.markers import MAX_MARKER

ARG_PASSAGES = "retro_passages"
ARG_BIAS = "retro_bias"
ARG_BIAS_TOKENS = "retro_bias_tokens"
# One string per supplied passage, in [n] order: its distinct words, space-separated.
ARG_ATTRIBUTION = "retro_attribution"
MAX_BIAS = 10.0
MAX_BIAS_TOKENS = 4096
# Attribution steers the first digit of a marker, so it covers markers [1]..[9].
MAX_ATTRIBUTED_PASSAGES = 9


@dataclass(frozen=True)
class RequestArgs:
    passages: int | None  # None: markers unconstrained
    bias: float
    bias_tokens: tuple[int, ...]
    attribution: tuple[frozenset[str], ...] = ()  # each passage's words; () = off


def parse_args(extra_args: dict[str, Any] | None) -> RequestArgs | None:
    """The processor's arguments of one request, or None when it carries none. ValueError
    (a 400 before the engine) on anything malformed."""
    if not extra_args:
        return None
    ours = {k: v for k, v in extra_args.items() if isinstance(k, str) and k.startswith("retro_")}
    if not ours:
        return None
    known = {ARG_PASSAGES, ARG_BIAS, ARG_BIAS_TOKENS, ARG_ATTRIBUTION}
    unknown = sorted(set(ours) - known)
    if unknown:
        raise ValueError(f"unknown retro logits processor argument(s): {', '.join(unknown)}")
    passages = ours.get(ARG_PASSAGES)
    if passages is not None and (type(passages) is not int or not 0 <= passages <= MAX_MARKER):
        raise ValueError(f"{ARG_PASSAGES} must be an integer between 0 and {MAX_MARKER}, got {passages!r}")
    bias = ours.get(ARG_BIAS, 0.0)
    if type(bias) not in (int, float) or not math.isfinite(bias) or not 0.0 <= bias <= MAX_BIAS:
        raise ValueError(f"{ARG_BIAS} must be a number between 0 and {MAX_BIAS}, got {bias!r}")
    tokens = ours.get(ARG_BIAS_TOKENS, [])
    if (not isinstance(tokens, list) or len(tokens) > MAX_BIAS_TOKENS
            or not all(type(t) is int and t >= 0 for t in tokens)):
        raise ValueError(f"{ARG_BIAS_TOKENS} must be a list of at most {MAX_BIAS_TOKENS} token ids")
    vocabularies = ours.get(ARG_ATTRIBUTION, [])
    if (not isinstance(vocabularies, list) or len(vocabularies) > MAX_ATTRIBUTED_PASSAGES
            or not all(isinstance(v, str) and len(v) <= MAX_ATTRIBUTION_CHARS for v in vocabularies)):
        raise ValueError(f"{ARG_ATTRIBUTION} must be a list of at most {MAX_ATTRIBUTED_PASSAGES} strings "
                         f"of at most {MAX_ATTRIBUTION_CHARS} characters")
    return RequestArgs(passages, float(bias), tuple(tokens), tuple(frozenset(v.split()) for v in vocabularies))
