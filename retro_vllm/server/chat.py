"""POST /v1/chat/completions with retrieval and citations, top to bottom:

body -> controls -> model -> retrieve -> fit and assemble the prompt -> vLLM's own chat
handler -> citations.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.decoding.prompt import assemble_messages, last_user_text
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.context import ChatTokens, fit_to_context
from retro_vllm.server.errors import RetroHTTPError, error_response
from retro_vllm.server.prompt_adapters import active, refuse_client_embeds
from retro_vllm.server.respond import respond, validate_for_vllm
from retro_vllm.server.request import (
    read_generation_request,
    route_and_retrieve,
    retro_summary,
)
from retro_vllm.server.state import RetroState
from retro_vllm.server.steering import attach, decoding_args
from retro_vllm.server.timing import Timings


async def create_chat_completion(raw_request: Request) -> Any:
    state: RetroState = raw_request.app.state.retro
    try:
        body, controls, choice = await read_generation_request(raw_request, state)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RetroHTTPError(400, "'messages' must be a non-empty list of message objects", code="invalid_messages",
                                 param="messages")
        dropped: list[Passage] = []
        timings = Timings()
        route, passages = await route_and_retrieve(state, body, last_user_text(messages), controls, choice, timings)
        soft = await state.soft_prompt(route)
        refuse_client_embeds(state, body, soft)
        virtual = soft.num_virtual_tokens if soft is not None else 0
        if controls.retrieval:
            preamble = state.preamble(route.domain)
            with timings.measure("prompt"):
                count = ChatTokens(state, raw_request.app.state, body, extra_tokens=virtual)
                body["messages"], passages, dropped = await fit_to_context(
                    state, body, passages, lambda kept: assemble_messages(messages, preamble, kept), count)
                count.hand_over(body)
                attach(body, decoding_args(state, body, controls, route.domain, [passages]))
        request = validate_for_vllm(vllm_serving.ChatCompletionRequest, body)
    except RetroHTTPError as exc:
        return exc.to_response()
    return await _generate(request, raw_request, retro_summary(route, controls, passages, dropped=dropped), passages,
                           timings, soft)


@vllm_serving.with_cancellation
async def _generate(request, raw_request: Request, summary: dict[str, Any], passages: list[Passage],
                    timings: Timings, soft=None) -> Any:
    handler = vllm_serving.chat_handler(raw_request.app.state)
    if handler is None:
        return error_response(501, "the served model does not support chat completions", code="not_supported")
    with active(soft):  # a prompt adapter's soft prompt goes in front of what vLLM renders
        result = await handler.create_chat_completion(request, raw_request)
    return respond(result, raw_request, summary, lambda _index: passages, chat=True, timings=timings,
                   model=summary["adapter"] if soft is not None else None)
