"""POST /v1/chat/completions with retrieval and citations, top to bottom:

body -> controls -> retrieve -> assemble prompt -> vLLM's own chat handler -> citations.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from retro_vllm import compat
from retro_vllm.decoding.citations import extract_citations
from retro_vllm.decoding.prompt import assemble_messages, last_user_text, order_passages
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.controls import RetroControls, parse_controls
from retro_vllm.server.errors import RetroHTTPError, error_response
from retro_vllm.server.state import RetroState

logger = logging.getLogger(__name__)

SERVER_ONLY_XARG_PREFIX = "retro_"
RETRO_MODEL_ALIAS = "retro"


async def read_json_body(raw_request: Request, max_bytes: int) -> dict[str, Any]:
    declared = raw_request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RetroHTTPError(413, f"request body is {declared} bytes; the limit is {max_bytes}", code="request_too_large")
    body = bytearray()
    async for part in raw_request.stream():
        body += part
        if len(body) > max_bytes:
            raise RetroHTTPError(413, f"request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RetroHTTPError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RetroHTTPError(400, "request body must be a JSON object", code="invalid_json")
    return data


def drop_server_only_xargs(body: dict[str, Any]) -> None:
    xargs = body.get("vllm_xargs")
    if isinstance(xargs, dict):
        dropped = [k for k in xargs if isinstance(k, str) and k.startswith(SERVER_ONLY_XARG_PREFIX)]
        for key in dropped:
            del xargs[key]
        if dropped:
            logger.info("dropped client-sent server-only vllm_xargs: %s", dropped)


def check_controls(state: RetroState, controls: RetroControls) -> None:
    if controls.domain is not None and state.config.domain(controls.domain) is None:
        known = ", ".join(state.config.domain_names) or "none configured"
        raise RetroHTTPError(
            400, f"unknown domain {controls.domain!r}; known domains: {known}", code="unknown_domain", param="retro.domain"
        )
    limit = state.config.retrieval.max_top_k
    if controls.top_k is not None and not 1 <= controls.top_k <= limit:
        raise RetroHTTPError(
            400, f"retro.top_k must be between 1 and {limit}, got {controls.top_k}", code="invalid_top_k", param="retro.top_k"
        )


async def retrieve(state: RetroState, query: str, controls: RetroControls) -> list[Passage]:
    if not query:
        return []
    top_k = controls.top_k or state.config.retrieval.top_k
    try:
        hits = await asyncio.to_thread(
            state.retriever.search, query, top_k=top_k, domain=controls.domain, filters=controls.filters
        )
    except Exception as exc:  # any store fault: the request fails cleanly, the server serves on
        logger.exception("retrieval failed")
        raise RetroHTTPError(503, f"vector store unavailable: {exc}", code="retrieval_unavailable") from None
    return order_passages(hits)


def retro_summary(controls: RetroControls, passages: list[Passage]) -> dict[str, Any]:
    return {
        "domain": controls.domain,
        "adapter": None,
        "route": "domain" if controls.domain else "none",
        "route_score": None,
        "retrieval": "ok" if controls.retrieval else "disabled",
        "passages": [p.to_contract() for p in passages],
    }


def retro_headers(summary: dict[str, Any]) -> dict[str, str]:
    return {
        "X-Retro-Domain": summary["domain"] or "none",
        "X-Retro-Adapter": summary["adapter"] or "none",
    }


async def create_chat_completion(raw_request: Request) -> Any:
    state: RetroState = raw_request.app.state.retro
    try:
        body = await read_json_body(raw_request, state.config.serving.max_body_bytes)
        controls = parse_controls(body.pop("retro", None))
        check_controls(state, controls)
        drop_server_only_xargs(body)
        if body.get("model") == RETRO_MODEL_ALIAS:
            body["model"] = compat.base_model_name(raw_request.app.state)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RetroHTTPError(400, "'messages' must be a non-empty list", code="invalid_messages", param="messages")
        passages: list[Passage] = []
        if controls.retrieval:
            passages = await retrieve(state, last_user_text(messages), controls)
            body["messages"] = assemble_messages(messages, state.preamble(controls.domain), passages)
        try:
            request = compat.ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_request", param=where) from None
    except RetroHTTPError as exc:
        return exc.to_response()

    summary = retro_summary(controls, passages)
    return await _generate(request, raw_request, summary, passages)


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
    stream = _annotate_stream(result, summary, passages)
    return StreamingResponse(
        compat.with_sse_keep_alive(stream, compat.keep_alive_interval(raw_request.app.state)),
        media_type="text/event-stream",
        headers=headers,
    )


async def _annotate_stream(
    events: AsyncIterator[str], summary: dict[str, Any], passages: list[Passage]
) -> AsyncIterator[str]:
    """Adds `retro` to the first chunk and, on each choice's finishing chunk, all of that
    choice's annotations (offsets into the whole streamed content) plus `retro` again."""
    texts: dict[int, str] = defaultdict(str)
    first = True
    async for event in events:
        if not event.startswith("data: ") or event.startswith("data: [DONE]"):
            yield event
            continue
        try:
            chunk = json.loads(event[len("data: ") :])
        except json.JSONDecodeError:
            yield event
            continue
        if not isinstance(chunk, dict) or "choices" not in chunk:
            yield event
            continue
        if first:
            chunk["retro"] = summary
            first = False
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            texts[choice.get("index", 0)] += delta.get("content") or ""
            if choice.get("finish_reason") is not None:
                delta["annotations"] = extract_citations(texts[choice.get("index", 0)], passages)
                choice["delta"] = delta
                chunk["retro"] = summary
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
