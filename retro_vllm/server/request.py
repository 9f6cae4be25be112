"""The front half shared by every generating route: body, controls, model, retrieval."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request

from retro_vllm.compat import serving as vllm_serving
from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.adapters.registry import VERSIONED, AdapterError, AdapterManifest
from retro_vllm.decoding.args import ARG_FAULT, MAX_BIAS, faults_enabled
from retro_vllm.decoding.prompt import order_passages
from retro_vllm.retrieval.types import Passage
from retro_vllm.server.controls import RetroControls, parse_controls
from retro_vllm.server.errors import RetroHTTPError
from retro_vllm.server.prompt_adapters import is_prompt_adapter
from retro_vllm.server.state import RetroState
from retro_vllm.server.timing import Timings

logger = logging.getLogger(__name__)

SERVER_ONLY_XARG_PREFIX = "retro_"
RETRO_MODEL_ALIAS = "retro"
_PATH_LIKE = re.compile(r"(^[~.])|[/\\]|\.\.|\x00")


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
    check_controls(state, controls)
    drop_server_only_xargs(body)
    return body, controls, resolve_model(body, raw_request.app.state)


def drop_server_only_xargs(body: dict[str, Any]) -> None:
    xargs = body.get("vllm_xargs")
    if isinstance(xargs, dict):
        dropped = [k for k in xargs if isinstance(k, str) and k.startswith(SERVER_ONLY_XARG_PREFIX)
                   and not (k == ARG_FAULT and faults_enabled())]
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
    if controls.bias is not None and not 0 <= controls.bias <= MAX_BIAS:
        raise RetroHTTPError(
            400, f"retro.bias must be between 0 and {MAX_BIAS:g}, got {controls.bias}", code="invalid_bias", param="retro.bias"
        )
    limit = state.config.retrieval.max_top_k
    if controls.top_k is not None and not 1 <= controls.top_k <= limit:
        raise RetroHTTPError(
            400, f"retro.top_k must be between 1 and {limit}, got {controls.top_k}", code="invalid_top_k", param="retro.top_k"
        )


@dataclass(frozen=True)
class ModelChoice:
    """What the request's `model` asked for."""

    use_router: bool = False  # `retro`: the router picks the domain and its adapter
    adapter: AdapterManifest | None = None  # a registry adapter named by the client


def resolve_model(body: dict[str, Any], app_state) -> ModelChoice:
    """`retro` -> the router decides; a registry adapter -> its versioned name; a path-like
    name -> 400; a refused adapter -> 400; an unknown name -> 404.

    Names are checked against what the server serves and are never turned into paths.
    """
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


# Test-only store faults (RETRO_VLLM_TEST_FAULTS=1), sent as vllm_xargs {"retro_fault": ...}:
# a store that raises, and one that hangs past the timeout.
STORE_FAULTS = ("store_error", "store_sleep")


async def route_and_retrieve(
    state: RetroState, body: dict[str, Any], query: str, controls: RetroControls, choice: ModelChoice,
    timings: Timings | None = None,
) -> tuple[Route, list[Passage]]:
    """Pick the domain and adapter, then search that domain. Precedence: an adapter named
    in `model`, then `retro.domain`, then the router (model `retro`); the base model's name
    never gets an adapter. The query is embedded
    once for routing and search. Sets `body["model"]` to the adapter's versioned name."""
    timings = timings or Timings()
    fault = _take_store_fault(body)
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
        return replace(route, retrieval="disabled"), []
    if not query:
        return route, []
    top_k = controls.top_k or state.config.retrieval.top_k
    try:
        # Unless routing embedded it already, the query is embedded on the search's worker
        # thread: one thread hop (a thread and an event-loop wake-up) instead of two.
        hits = await search_with_timeout(
            state, query, top_k=top_k, domain=route.domain, filters=controls.filters, vector=vector, fault=fault,
            timings=timings, embed_first=True,
        )
    except RetroHTTPError:
        if state.config.retrieval.on_error == "degrade":
            return replace(route, retrieval="degraded"), []
        raise
    return route, order_passages(hits)


class _EmbeddingFailed(Exception):
    """Carries an embedder error out of the search thread, so it is not taken for a store fault."""


async def search_with_timeout(state: RetroState, query: str, *, fault: str | None = None, vector: Any = None,
                              embed_first: bool = False, timings: Timings | None = None, **kwargs) -> list:
    """The retriever's search, bounded by `retrieval.timeout_s`; any store fault or a timeout
    becomes a 503 (the caller may degrade instead). The thread of a timed-out call finishes on
    its own; the request does not wait for it. `embed_first`: embed the query (when `vector` is
    None) on the same thread, before the search and within the timeout, timed as `embed`; an
    embedder error stays what it is. Otherwise the retriever embeds only if its search needs it."""
    timeout = state.config.retrieval.timeout_s
    # The thread keeps its embedding time to itself: a thread that outlives its timeout must not
    # write to the request's timings while the response reads them. `search` is the rest of the hop.
    embed_ms = [0.0]
    embeds = embed_first and vector is None

    def run():
        query_vector = vector
        if embeds:
            start = time.perf_counter()
            try:
                query_vector = state.retriever.embed_query(query)
            except Exception as exc:
                raise _EmbeddingFailed() from exc
            embed_ms[0] = (time.perf_counter() - start) * 1000
        if fault == "store_error":
            raise RuntimeError("injected store fault (RETRO_VLLM_TEST_FAULTS)")
        if fault == "store_sleep":
            time.sleep(timeout + 1)
        return state.retriever.search(query, vector=query_vector, **kwargs)

    timings = timings or Timings()
    start = time.perf_counter()

    def elapsed_ms() -> float:  # read on the event loop, so never racing the thread
        return (time.perf_counter() - start) * 1000

    try:
        hits = await asyncio.wait_for(asyncio.to_thread(run), timeout)
    except _EmbeddingFailed as exc:
        raise exc.__cause__ from None
    except asyncio.TimeoutError:
        timings.record("search", elapsed_ms())
        logger.error("retrieval timed out after %.1f s", timeout)
        what = "query embedding and search did not finish" if embeds else "vector store did not answer"
        raise RetroHTTPError(503, f"{what} within {timeout:g} s", code="retrieval_unavailable") from None
    except Exception as exc:  # any store fault: this request fails cleanly, the server serves on
        timings.record("search", elapsed_ms())
        logger.exception("retrieval failed")
        raise RetroHTTPError(503, f"vector store unavailable: {exc}", code="retrieval_unavailable") from None
    if embeds:
        timings.record("embed", embed_ms[0])
    timings.record("search", elapsed_ms() - embed_ms[0])
    return hits


def _take_store_fault(body: dict[str, Any]) -> str | None:
    xargs = body.get("vllm_xargs")
    if not faults_enabled() or not isinstance(xargs, dict) or xargs.get(ARG_FAULT) not in STORE_FAULTS:
        return None
    return xargs.pop(ARG_FAULT)


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


def retro_summary(
    route: Route, controls: RetroControls, passages: list[Passage], *, dropped: list[Passage] = ()
) -> dict[str, Any]:
    summary = {
        "domain": route.domain,
        "adapter": route.adapter,
        "route": route.route,
        "route_score": route.score,
        "retrieval": route.retrieval,
        "passages": [p.to_contract() for p in passages],
    }
    if dropped:
        summary["dropped"] = [{"id": p.chunk.id, "score": round(p.score, 6), "reason": "context_length"} for p in dropped]
    return summary


def retro_headers(summary: dict[str, Any]) -> dict[str, str]:
    return {
        "X-Retro-Domain": summary["domain"] or "none",
        "X-Retro-Adapter": summary["adapter"] or "none",
    }
