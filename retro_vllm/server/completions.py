"""POST /v1/completions with retrieval and citations, top to bottom like chat:

body -> controls -> model -> route (once, on the first prompt: one adapter serves every
prompt) -> retrieve for each prompt -> fit and assemble each prompt -> vLLM's own completion
handler -> citations per choice.

A string prompt, or a list of strings, each gets its own retrieval: the prompt becomes
preamble + numbered passages + the client's text. Token-id prompts pass through untouched
(there is no text to search with); their `retro.retrieval` is "disabled".
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.assemble import fit_to_context
from retro_vllm.rag.cite import retro_summary
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.layout import completion_prompt
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


def text_prompts(prompt: Any) -> list[str] | None:
    """The prompts as strings, or None when they are token ids (or not text at all)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return None


async def create_completion(raw_request: Request) -> Any:
    state: RetroState = raw_request.app.state.retro
    try:
        body, controls, choice = await read_generation_request(raw_request, state)
        prompts = text_prompts(body.get("prompt"))
        if prompts is None or body.get("prompt_embeds") is not None:
            controls = controls.model_copy(update={"retrieval": False})
        timings = Timings()
        queries = [p.strip() for p in prompts or []]
        route, vector = await decide_route(state, body, queries[0] if queries else "", controls, choice, timings)
        soft = await state.soft_prompt(route)
        virtual = soft.num_virtual_tokens if soft is not None else 0
        preamble = state.preamble(route.domain)
        per_prompt: list[list[Passage]] = []
        all_dropped: list[Passage] = []
        rendered = []
        for n, (prompt, query) in enumerate(zip(prompts, queries) if controls.retrieval else ()):
            prompt_route, passages = await retrieve(state, query, route, controls,
                                                    vector=vector if n == 0 else None, timings=timings)
            if prompt_route.retrieval == "degraded":  # for any of the prompts
                route = prompt_route
            with timings.measure("prompt"):
                text, passages, dropped = await fit_to_context(
                    state, body, passages, lambda kept, p=prompt: completion_prompt(preamble, kept, p),
                    lambda text: _count_text_tokens(state, text, virtual),
                )
            rendered.append(text)
            per_prompt.append(passages)
            all_dropped += dropped
        if rendered:
            body["prompt"] = rendered[0] if isinstance(body["prompt"], str) else rendered
            attach(body, decoding_args(state, body, controls, route.domain, per_prompt))
        refuse_client_embeds(state, body, soft)
        request = validate_for_vllm(vllm_serving.CompletionRequest, body)
    except RetroHTTPError as exc:
        return response_for(exc)

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
