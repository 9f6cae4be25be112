"""Step 3, assemble: the prompt in its layout (`retro_vllm.rag.layout`), fitted to the model's
context, counted the way vLLM will count it.

Fitting: too long a prompt drops the lowest-scored passages first. A too-long context is never
a 400 because of passages; only a conversation that is too long on its own is (vLLM would
refuse it anyway).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from pydantic import ValidationError

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.layout import order_passages
from retro_vllm.retrieval.types import Passage, ScoredChunk

logger = logging.getLogger(__name__)


Render = Callable[[list[Passage]], Any]
Count = Callable[[Any], Awaitable[int]]


async def fit_passages(
    passages: list[Passage], render: Render, count: Count, budget: int
) -> tuple[Any, list[Passage], list[Passage]]:
    """Returns (rendered prompt, passages kept, passages dropped). Kept passages are
    renumbered so markers still match prompt positions."""
    kept = list(passages)
    dropped: list[Passage] = []
    while True:
        prompt = render(kept)
        if await count(prompt) <= budget:
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
    return await fit_passages(passages, render, count, budget)


class ChatTokens:
    """Counts a conversation's prompt tokens the way vLLM will see them, by vLLM's own chat
    rendering (the server's chat template and options, the request's template options, vLLM's
    tokenizer), and hands the token ids of the conversation finally sent on to vLLM, which then
    neither renders nor tokenizes it a second time. Without a renderer, or when vLLM's renderer
    refuses the request (it will refuse it again, with its own error), the count falls back to
    the server's tokenizer and nothing is handed over."""

    # Request fields that would make vLLM's rendering count something other than the whole
    # prompt: its truncation (the fit must see the untruncated length, and vLLM must truncate
    # itself) and a client's own prompt ids (which vLLM would count instead of the messages).
    UNCOUNTED = ("truncate_prompt_tokens", "truncation_side")

    def __init__(self, state, app_state, body: dict[str, Any], extra_tokens: int = 0):
        self.state, self.extra_tokens = state, extra_tokens
        self.body = {k: v for k, v in body.items() if k not in self.UNCOUNTED}
        field, key = vllm_serving.PROMPT_TOKEN_IDS_FIELD
        if isinstance(body.get(field), dict) and key in body[field]:
            self.body[field] = {k: v for k, v in body[field].items() if k != key}
        self.renderer = vllm_serving.chat_renderer(app_state)
        self._counted: tuple[Any, list[int]] | None = None  # (messages, their ids)

    async def __call__(self, messages: list[dict]) -> int:
        self._counted = None
        # Media would be fetched and processed twice, and vLLM renders such messages itself anyway.
        text_only = all(isinstance(m.get("content"), (str, type(None))) for m in messages)
        count = await self._count_by_vllm(messages) if self.renderer is not None and text_only else None
        if count is None:
            count = await asyncio.to_thread(self.state.count_chat_tokens, messages)
        return count + self.extra_tokens

    async def _count_by_vllm(self, messages: list[dict]) -> int | None:
        try:
            request = vllm_serving.ChatCompletionRequest.model_validate({**self.body, "messages": messages})
            result = await self.renderer.render_chat(request)
        except ValidationError:  # the request itself is invalid: vLLM's validation reports it later
            return None
        except vllm_serving.VLLMValidationError as exc:
            if exc.parameter == "input_tokens" and isinstance(exc.value, int):
                return exc.value  # longer than vLLM allows at all
            return None
        except Exception:  # noqa: BLE001 - counting must not fail a request vLLM may still serve
            logger.debug("retro: vLLM's chat renderer failed; counting with the server's tokenizer", exc_info=True)
            return None
        if isinstance(result, vllm_serving.ErrorResponse):
            return None
        _conversation, inputs = result
        ids = inputs[0].get("prompt_token_ids") if len(inputs) == 1 and isinstance(inputs[0], dict) else None
        if not isinstance(ids, list) or not ids:
            return None
        self._counted = (messages, ids)
        return len(ids)

    def hand_over(self, body: dict[str, Any]) -> None:
        """Puts the ids of `body["messages"]` in the request when they are what was counted."""
        if self._counted is None or self._counted[0] is not body.get("messages"):
            return
        if body.get("echo") or body.get("return_prompt_text") or body.get("truncate_prompt_tokens") is not None:
            return  # each needs vLLM to render (and truncate) the messages itself
        field, key = vllm_serving.PROMPT_TOKEN_IDS_FIELD
        current = body.get(field)
        if current is not None and (not isinstance(current, dict) or key in current):
            return  # not ours to mend (vLLM reports it) or to replace (a client's own ids)
        body[field] = {**(current or {}), key: list(self._counted[1])}
