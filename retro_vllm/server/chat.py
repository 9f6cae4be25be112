"""POST /v1/chat/completions with retrieval and citations, top to bottom:

body -> controls -> model -> route -> retrieve -> fit and assemble the prompt -> vLLM's own
chat handler -> citations. Each step is a function of `retro_vllm.rag`; this module only
translates HTTP to those steps and back.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.assemble import ChatTokens, fit_to_context
from retro_vllm.rag.cite import retro_summary
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.layout import assemble_messages, last_user_text
from retro_vllm.rag.prompt_adapters import active, refuse_client_embeds
from retro_vllm.rag.retrieve import retrieve
from retro_vllm.rag.route import decide_route
from retro_vllm.rag.state import RetroState
from retro_vllm.rag.steer import attach, decoding_args
from retro_vllm.rag.timing import Timings
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.errors import error_response, response_for
from retro_vllm.server.request import read_generation_request
from retro_vllm.server.respond import respond, validate_for_vllm


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
        query = last_user_text(messages)
        route, vector = await decide_route(state, body, query, controls, choice, timings)
        route, passages = await retrieve(state, query, route, controls, vector=vector, timings=timings)
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
        return response_for(exc)
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
