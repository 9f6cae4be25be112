"""The back half shared by chat and completions: validate for vLLM, and shape vLLM's
result (JSON or SSE) with citations, `retro` and the X-Retro-* headers."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.cite import annotate_payload, annotate_stream
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.timing import Timings
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.metrics import record


def retro_headers(summary: dict[str, Any]) -> dict[str, str]:
    return {
        "X-Retro-Domain": summary["domain"] or "none",
        "X-Retro-Adapter": summary["adapter"] or "none",
    }


def validate_for_vllm(request_type, body: dict[str, Any]):
    """vLLM's own request model; its validation errors become our 400."""
    try:
        return request_type.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_request", param=where) from None


def respond(
    result: Any,
    raw_request: Request,
    summary: dict[str, Any],
    passages_for_choice: Callable[[int], list[Passage]],
    *,
    chat: bool,
    timings: Timings | None = None,
    model: str | None = None,
) -> Any:
    """`model`: the name to report when vLLM's differs (a prompt adapter runs on the base model)."""
    timings = timings or Timings()
    headers = retro_headers(summary)
    if isinstance(result, vllm_serving.ErrorResponse):
        return JSONResponse(result.model_dump(), status_code=result.error.code, headers=headers)
    if isinstance(result, (vllm_serving.ChatCompletionResponse, vllm_serving.CompletionResponse)):
        payload = result.model_dump()
        with timings.measure("cite"):
            annotate_payload(payload, passages_for_choice, chat)
        payload["retro"] = summary
        if model is not None:
            payload["model"] = model
        record(summary, payload.get("usage"))
        return JSONResponse(payload, headers={**headers, **timings.header()})
    stream = annotate_stream(result, summary, passages_for_choice, chat=chat, model=model, observe=record)
    return StreamingResponse(
        vllm_serving.with_sse_keep_alive(stream, vllm_serving.keep_alive_interval(raw_request.app.state)),
        media_type="text/event-stream",
        headers={**headers, **timings.header()},
    )
