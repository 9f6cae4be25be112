"""Keep the prompt inside the model's context: drop the lowest-scored passages first.

A too-long context is never a 400 because of passages; only a conversation that is too
long on its own is (vLLM would refuse it anyway).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from retro_vllm.decoding.prompt import order_passages
from retro_vllm.retrieval.types import Passage, ScoredChunk
from retro_vllm.server.errors import RetroHTTPError

Render = Callable[[list[Passage]], Any]
Count = Callable[[Any], int]


def fit_passages(
    passages: list[Passage], render: Render, count: Count, budget: int
) -> tuple[Any, list[Passage], list[Passage]]:
    """Returns (rendered prompt, passages kept, passages dropped). Kept passages are
    renumbered so markers still match prompt positions."""
    kept = list(passages)
    dropped: list[Passage] = []
    while True:
        prompt = render(kept)
        if count(prompt) <= budget:
            return prompt, kept, dropped
        if not kept:
            raise RetroHTTPError(
                400,
                f"the conversation alone needs more than the {budget} prompt tokens this request allows "
                "(max_model_len minus max_tokens)",
                code="context_length_exceeded",
                param="messages",
            )
        weakest = min(kept, key=lambda p: p.score)
        dropped.append(weakest)
        kept = order_passages([ScoredChunk(p.chunk, p.score, p.stage, p.scores) for p in kept if p is not weakest])


def output_reserve(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return default


async def fit_to_context(state, body: dict[str, Any], passages: list[Passage], render: Render, count: Count):
    """`fit_passages` within this request's budget; unfitted when the server cannot count."""
    budget = state.prompt_budget(output_reserve(body, state.config.serving.reserve_tokens))
    if budget is None:
        return render(passages), passages, []
    return await asyncio.to_thread(fit_passages, passages, render, count, budget)
