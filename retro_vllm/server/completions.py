"""POST /v1/completions with retrieval and citations.

A string prompt, or a list of strings, each gets its own retrieval: the prompt becomes
preamble + numbered passages + the client's text. Token-id prompts pass through untouched
(there is no text to search with); their `retro.retrieval` is "disabled".
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.decoding.prompt import system_text
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.context import fit_to_context
from retro_vllm.server.errors import RetroHTTPError, error_response
from retro_vllm.server.prompt_adapters import active, refuse_client_embeds
from retro_vllm.server.respond import respond, validate_for_vllm
from retro_vllm.server.request import (
    ModelChoice,
    Route,
    read_generation_request,
    route_and_retrieve,
    retro_summary,
)
from retro_vllm.server.state import RetroState
from retro_vllm.server.steering import attach, decoding_args
from retro_vllm.server.timing import Timings


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
        body, controls, choice = await read_generation_request(raw_request, state)
        prompts = text_prompts(body.get("prompt"))
        if prompts is None or body.get("prompt_embeds") is not None:
            controls = controls.model_copy(update={"retrieval": False})
        per_prompt: list[list[Passage]] = []
        all_dropped: list[Passage] = []
        route = Route(controls.domain, "domain" if controls.domain else "none",
                      retrieval="ok" if controls.retrieval else "disabled")
        if choice.adapter is not None:  # named in `model`: it answers whether or not retrieval runs
            route = Route(controls.domain or choice.adapter.domain, "model", adapter=choice.adapter.served_name,
                          retrieval=route.retrieval, manifest=choice.adapter)
        soft = await state.soft_prompt(route)
        timings = Timings()
        if controls.retrieval:
            rendered = []
            for n, prompt in enumerate(prompts):
                # One route per request (one adapter serves every prompt): the first prompt's.
                prompt_route, passages = await route_and_retrieve(
                    state, body, prompt.strip(),
                    controls.model_copy(update={"domain": route.domain if n else controls.domain}),
                    choice if n == 0 else ModelChoice(), timings,
                )
                if n == 0:
                    route = prompt_route
                    soft = await state.soft_prompt(route)
                virtual = soft.num_virtual_tokens if soft is not None else 0
                preamble = state.preamble(route.domain)
                with timings.measure("prompt"):
                    text, passages, dropped = await fit_to_context(
                        state, body, passages, lambda kept, p=prompt: completion_prompt(preamble, kept, p),
                        lambda text: _count_text_tokens(state, text, virtual),
                    )
                rendered.append(text)
                per_prompt.append(passages)
                all_dropped += dropped
            body["prompt"] = rendered[0] if isinstance(body["prompt"], str) else rendered
            attach(body, decoding_args(state, body, controls, route.domain, per_prompt))
        refuse_client_embeds(state, body, soft)
        request = validate_for_vllm(vllm_serving.CompletionRequest, body)
    except RetroHTTPError as exc:
        return exc.to_response()

    summary = retro_summary(route, controls, per_prompt[0] if per_prompt else [], dropped=all_dropped)
    if len(per_prompt) > 1:
        summary["prompts"] = [{"index": i, "passages": [p.to_contract() for p in ps]} for i, ps in enumerate(per_prompt)]
    n = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1

    def passages_for_choice(index: int) -> list[Passage]:
        # vLLM numbers choices prompt-major: prompt i's j-th sample is choice i * n + j.
        return per_prompt[index // n] if per_prompt and index // n < len(per_prompt) else []

    return await _generate(request, raw_request, summary, passages_for_choice, timings, soft)


async def _count_text_tokens(state: RetroState, text: str, extra: int) -> int:
    return await asyncio.to_thread(state.count_text_tokens, text) + extra


@vllm_serving.with_cancellation
async def _generate(request, raw_request: Request, summary: dict[str, Any], passages_for_choice,
                    timings: Timings, soft=None) -> Any:
    handler = vllm_serving.completion_handler(raw_request.app.state)
    if handler is None:
        return error_response(501, "the served model does not support completions", code="not_supported")
    with active(soft):  # a prompt adapter's soft prompt goes in front of every prompt vLLM renders
        result = await handler.create_completion(request, raw_request)
    return respond(result, raw_request, summary, passages_for_choice, chat=False, timings=timings,
                   model=summary["adapter"] if soft is not None else None)
