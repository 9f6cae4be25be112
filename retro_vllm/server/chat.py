"""POST /v1/chat/completions with retrieval and citations, top to bottom:

body -> controls -> model -> retrieve -> fit and assemble the prompt -> vLLM's own chat
handler -> citations.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from retro_vllm import compat
from retro_vllm.decoding.citations import extract_citations
from retro_vllm.decoding.prompt import assemble_messages, last_user_text
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.context import fit_passages, output_reserve
from retro_vllm.server.controls import parse_controls
from retro_vllm.server.errors import RetroHTTPError, error_response
from retro_vllm.server.request import (
    check_controls,
    drop_server_only_xargs,
    read_json_body,
    resolve_model,
    route_and_retrieve,
    retro_headers,
    retro_summary,
)
from retro_vllm.server.state import RetroState
from retro_vllm.server.streaming import annotate_stream


async def create_chat_completion(raw_request: Request) -> Any:
    state: RetroState = raw_request.app.state.retro
    try:
        body = await read_json_body(raw_request, state.config.serving.max_body_bytes)
        controls = parse_controls(body.pop("retro", None))
        check_controls(state, controls)
        drop_server_only_xargs(body)
        choice = resolve_model(body, raw_request.app.state)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RetroHTTPError(400, "'messages' must be a non-empty list of message objects", code="invalid_messages",
                                 param="messages")
        dropped: list[Passage] = []
        route, passages = await route_and_retrieve(state, body, last_user_text(messages), controls, choice)
        if controls.retrieval:
            body["messages"], passages, dropped = await _fit(state, body, messages, route.domain, passages)
        try:
            request = compat.ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_request", param=where) from None
    except RetroHTTPError as exc:
        return exc.to_response()
    return await _generate(request, raw_request, retro_summary(route, controls, passages, dropped=dropped), passages)


async def _fit(state: RetroState, body, messages, domain, passages):
    preamble = state.preamble(domain)

    def render(kept: list[Passage]):
        return assemble_messages(messages, preamble, kept)

    budget = state.prompt_budget(output_reserve(body, state.config.serving.reserve_tokens))
    if budget is None:
        return render(passages), passages, []
    return await asyncio.to_thread(fit_passages, passages, render, state.count_chat_tokens, budget)


@compat.with_cancellation
async def _generate(request, raw_request: Request, summary: dict[str, Any], passages: list[Passage]) -> Any:
    handler = compat.chat_handler(raw_request.app.state)
    if handler is None:
        return error_response(501, "the served model does not support chat completions", code="not_supported")
    headers = retro_headers(summary)
    result = await handler.create_chat_completion(request, raw_request)
    if isinstance(result, compat.ErrorResponse):
        return JSONResponse(result.model_dump(), status_code=result.error.code, headers=headers)
    if isinstance(result, compat.ChatCompletionResponse):
        payload = result.model_dump()
        for choice in payload["choices"]:
            message = choice["message"]
            # vLLM types `annotations` as one object; OpenAI clients expect a list.
            message["annotations"] = extract_citations(message.get("content") or "", passages)
        payload["retro"] = summary
        return JSONResponse(payload, headers=headers)
    stream = annotate_stream(result, summary, lambda _index: passages, chat=True)
    return StreamingResponse(
        compat.with_sse_keep_alive(stream, compat.keep_alive_interval(raw_request.app.state)),
        media_type="text/event-stream",
        headers=headers,
    )
