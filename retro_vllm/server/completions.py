"""POST /v1/completions with retrieval and citations.

A string prompt, or a list of strings, each gets its own retrieval: the prompt becomes
preamble + numbered passages + the client's text. Token-id prompts pass through untouched
(there is no text to search with); their `retro.retrieval` is "disabled".
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from retro_vllm import compat
from retro_vllm.decoding.citations import extract_citations
from retro_vllm.decoding.prompt import system_text
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.context import fit_passages, output_reserve
from retro_vllm.server.controls import parse_controls
from retro_vllm.server.errors import RetroHTTPError, error_response
from retro_vllm.server.request import (
    check_controls,
    drop_server_only_xargs,
    read_json_body,
    ModelChoice,
    Route,
    resolve_model,
    route_and_retrieve,
    retro_headers,
    retro_summary,
)
from retro_vllm.server.state import RetroState
from retro_vllm.server.streaming import annotate_stream


def text_prompts(prompt: Any) -> list[str] | None:
    """The prompts as strings, or None when they are token ids (or not text at all)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return None


def completion_prompt(preamble: str, passages: list[Passage], prompt: str) -> str:
    return f"{system_text(preamble, passages)}\n\n{prompt}"


async def create_completion(raw_request: Request) -> Any:
    state: RetroState = raw_request.app.state.retro
    try:
        body = await read_json_body(raw_request, state.config.serving.max_body_bytes)
        controls = parse_controls(body.pop("retro", None))
        check_controls(state, controls)
        drop_server_only_xargs(body)
        choice = resolve_model(body, raw_request.app.state)
        prompts = text_prompts(body.get("prompt"))
        if prompts is None or body.get("prompt_embeds") is not None:
            controls = controls.model_copy(update={"retrieval": False})
        per_prompt: list[list[Passage]] = []
        all_dropped: list[Passage] = []
        route = Route(controls.domain, "domain" if controls.domain else "none")
        if controls.retrieval:
            rendered = []
            for n, prompt in enumerate(prompts):
                # One route per request (one adapter serves every prompt): the first prompt's.
                prompt_route, passages = await route_and_retrieve(
                    state, body, prompt.strip(),
                    controls.model_copy(update={"domain": route.domain if n else controls.domain}),
                    choice if n == 0 else ModelChoice(),
                )
                if n == 0:
                    route = prompt_route
                text, passages, dropped = await _fit(state, body, prompt, route.domain, passages)
                rendered.append(text)
                per_prompt.append(passages)
                all_dropped += dropped
            body["prompt"] = rendered[0] if isinstance(body["prompt"], str) else rendered
        try:
            request = compat.CompletionRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_request", param=where) from None
    except RetroHTTPError as exc:
        return exc.to_response()

    summary = retro_summary(route, controls, per_prompt[0] if per_prompt else [], dropped=all_dropped)
    if len(per_prompt) > 1:
        summary["prompts"] = [{"index": i, "passages": [p.to_contract() for p in ps]} for i, ps in enumerate(per_prompt)]
    n = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1

    def passages_for_choice(index: int) -> list[Passage]:
        # vLLM numbers choices prompt-major: prompt i's j-th sample is choice i * n + j.
        return per_prompt[index // n] if per_prompt and index // n < len(per_prompt) else []

    return await _generate(request, raw_request, summary, passages_for_choice)


async def _fit(state: RetroState, body, prompt: str, domain, passages):
    preamble = state.preamble(domain)

    def render(kept: list[Passage]) -> str:
        return completion_prompt(preamble, kept, prompt)

    budget = state.prompt_budget(output_reserve(body, state.config.serving.reserve_tokens))
    if budget is None:
        return render(passages), passages, []
    return await asyncio.to_thread(fit_passages, passages, render, state.count_text_tokens, budget)


@compat.with_cancellation
async def _generate(request, raw_request: Request, summary: dict[str, Any], passages_for_choice) -> Any:
    handler = compat.completion_handler(raw_request.app.state)
    if handler is None:
        return error_response(501, "the served model does not support completions", code="not_supported")
    headers = retro_headers(summary)
    result = await handler.create_completion(request, raw_request)
    if isinstance(result, compat.ErrorResponse):
        return JSONResponse(result.model_dump(), status_code=result.error.code, headers=headers)
    if isinstance(result, compat.CompletionResponse):
        payload = result.model_dump()
        for choice in payload["choices"]:
            choice["annotations"] = extract_citations(choice.get("text") or "", passages_for_choice(choice["index"]))
        payload["retro"] = summary
        return JSONResponse(payload, headers=headers)
    stream = annotate_stream(result, summary, passages_for_choice, chat=False)
    return StreamingResponse(
        compat.with_sse_keep_alive(stream, compat.keep_alive_interval(raw_request.app.state)),
        media_type="text/event-stream",
        headers=headers,
    )
