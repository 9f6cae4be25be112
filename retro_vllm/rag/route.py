"""Step 1, route: what the request's `model` names, then which domain and adapter answer.

Precedence: an adapter named in `model`, then `retro.domain`, then the router (model `retro`);
the base model's name never gets an adapter. Names are checked against what the server serves
and are never turned into paths.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.adapters.registry import VERSIONED, AdapterError, AdapterManifest
from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.prompt_adapters import is_prompt_adapter
from retro_vllm.rag.state import RetroState
from retro_vllm.rag.timing import Timings

logger = logging.getLogger(__name__)

RETRO_MODEL_ALIAS = "retro"
_PATH_LIKE = re.compile(r"(^[~.])|[/\\]|\.\.|\x00")


@dataclass(frozen=True)
class ModelChoice:
    """What the request's `model` asked for."""

    use_router: bool = False  # `retro`: the router picks the domain and its adapter
    adapter: AdapterManifest | None = None  # a registry adapter named by the client


def resolve_model(body: dict[str, Any], app_state) -> ModelChoice:
    """`retro` -> the router decides; a registry adapter -> its versioned name; a path-like
    name -> 400; a refused adapter -> 400; an unknown name -> 404."""
    name = body.get("model")
    base = vllm_serving.base_model_name(app_state)
    if name is None or name == base:
        return ModelChoice()
    if not isinstance(name, str):
        raise RetroHTTPError(400, "'model' must be a string", code="invalid_model", param="model")
    if name == RETRO_MODEL_ALIAS:
        body["model"] = base
        return ModelChoice(use_router=True)
    if _PATH_LIKE.search(name):
        raise RetroHTTPError(
            400, f"model name {name!r} looks like a path; adapters are addressed by name", code="invalid_model_name", param="model"
        )
    if name in vllm_serving.served_adapter_names(app_state):  # loaded by vLLM itself (--lora-modules)
        return ModelChoice()
    catalog: AdapterCatalog | None = app_state.retro.catalog
    if catalog is not None and VERSIONED.match(name):
        try:
            manifest, _ = catalog.lookup(name)
        except AdapterError as exc:
            if exc.kind == "rejected":
                raise RetroHTTPError(400, str(exc), code="adapter_rejected", param="model") from None
        else:
            if is_prompt_adapter(manifest) and app_state.retro.prompt_adapters is None:
                raise RetroHTTPError(
                    400, f"{manifest.served_name} is a prompt-tuning adapter; this server serves those only with "
                    "--enable-prompt-embeds (config: adapters.prompt_embeds: true)",
                    code="adapter_not_servable", param="model",
                )
            # vLLM gets the base model for a prompt adapter: its soft prompt goes in as embeddings.
            body["model"] = base if is_prompt_adapter(manifest) else manifest.served_name
            return ModelChoice(adapter=manifest)
    raise RetroHTTPError(
        404, f"the model {name!r} does not exist; GET /v1/models lists what this server serves",
        code="model_not_found", param="model",
    )


@dataclass(frozen=True)
class Route:
    domain: str | None
    route: str  # "router" | "model" | "domain" | "none", as in the contract
    score: float | None = None
    adapter: str | None = None
    retrieval: str = "ok"  # "ok" | "disabled" | "degraded", as in the contract
    manifest: AdapterManifest | None = field(default=None, compare=False, repr=False)


async def decide_route(
    state: RetroState, body: dict[str, Any], query: str, controls: RetroControls, choice: ModelChoice,
    timings: Timings | None = None,
) -> tuple[Route, Any]:
    """The route of a request (its `retrieval` already `disabled` when the client turned retrieval
    off), and the query's vector when the router embedded it (else None), so the query is
    embedded once for routing and search. Sets `body["model"]` to the adapter vLLM serves."""
    timings = timings or Timings()
    vector = None
    if choice.adapter is not None:
        route = Route(controls.domain or choice.adapter.domain, "model", adapter=choice.adapter.served_name,
                      manifest=choice.adapter)
    elif controls.domain is not None:
        route = Route(controls.domain, "domain")
        if choice.use_router:  # `retro` + a domain: that domain's adapter; the base model's name: none
            route = _with_domain_adapter(state, body, route)
    elif choice.use_router and state.router is not None and query:
        with timings.measure("embed"):
            vector = await asyncio.to_thread(state.retriever.embed_query, query)
        with timings.measure("route"):
            decision = state.router.route(vector)
        route = Route(decision.domain, "router" if decision.domain else "none", round(decision.score, 6))
        route = _with_domain_adapter(state, body, route)
    else:
        route = Route(None, "none")
    if not controls.retrieval:
        route = replace(route, retrieval="disabled")
    return route, vector


def _with_domain_adapter(state: RetroState, body: dict[str, Any], route: Route) -> Route:
    section = state.config.domain(route.domain) if route.domain else None
    if section is None or state.catalog is None:
        return route
    manifest = state.catalog.for_domain(section.adapter_name)
    if manifest is None:
        return route
    if is_prompt_adapter(manifest):
        if state.prompt_adapters is None:
            logger.warning("retro: not serving prompt-tuning adapter %s: the engine runs without "
                           "--enable-prompt-embeds (adapters.prompt_embeds)", manifest.served_name)
            return route
        # vLLM keeps the base model's name: the soft prompt goes in as embeddings, not a LoRA.
    else:
        body["model"] = manifest.served_name
    return Route(route.domain, route.route, route.score, manifest.served_name, manifest=manifest)
