"""Reading a generating request off HTTP: the body within its size limit, the `retro` controls,
server-only `vllm_xargs` dropped, and `model` resolved (`retro_vllm.rag.route`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request

from retro_vllm.rag.controls import RetroControls, check_controls, parse_controls
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.route import ModelChoice, resolve_model
from retro_vllm.rag.state import RetroState

logger = logging.getLogger(__name__)

SERVER_ONLY_XARG_PREFIX = "retro_"


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


async def read_generation_request(raw_request: Request, state: RetroState) -> tuple[dict[str, Any], RetroControls, ModelChoice]:
    """The steps every generating route starts with: body, `retro` controls, server-only
    xargs dropped, `model` resolved. Raises RetroHTTPError."""
    body = await read_json_body(raw_request, state.config.serving.max_body_bytes)
    controls = parse_controls(body.pop("retro", None))
    check_controls(state.config, controls)
    drop_server_only_xargs(body)
    return body, controls, resolve_model(body, raw_request.app.state)


def drop_server_only_xargs(body: dict[str, Any]) -> None:
    xargs = body.get("vllm_xargs")
    if isinstance(xargs, dict):
        dropped = [k for k in xargs if isinstance(k, str) and k.startswith(SERVER_ONLY_XARG_PREFIX)]
        for key in dropped:
            del xargs[key]
        if dropped:
            logger.info("dropped client-sent server-only vllm_xargs: %s", dropped)
