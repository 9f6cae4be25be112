"""Routes that answer without generating: GET /v1/models (with the `retro` alias),
GET /v1/retro/domains and POST /v1/retro/search."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.compat import serving as vllm_serving
from retro_vllm.rag.controls import FilterValue, RetroControls, check_controls
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.retrieve import search_with_timeout
from retro_vllm.rag.route import RETRO_MODEL_ALIAS
from retro_vllm.rag.state import RetroState
from retro_vllm.server.errors import error_response, response_for
from retro_vllm.server.request import read_json_body


async def list_models(raw_request: Request) -> JSONResponse:
    models = (await vllm_serving.models_handler(raw_request.app.state).show_available_models()).model_dump()
    base = models["data"][0] if models["data"] else {}
    alias = {
        **base,
        "id": RETRO_MODEL_ALIAS,
        "parent": base.get("id"),
        "owned_by": "retro-vllm",
    }
    cards = [alias, *models["data"]]
    known = {card["id"] for card in cards}
    adapters: AdapterCatalog | None = raw_request.app.state.retro.catalog
    if adapters is not None:
        for manifest in await asyncio.to_thread(adapters.registry.all_current):
            for name in (manifest.name, manifest.served_name):
                if name not in known:
                    known.add(name)
                    cards.append({**base, "id": name, "parent": base.get("id"), "owned_by": "retro-vllm",
                                  "root": manifest.served_name})
    models["data"] = cards
    return JSONResponse(models)


def adapter_management_closed(raw_request: Request) -> JSONResponse:
    return error_response(
        403,
        "adapters are served from the retro registry: register a version with `retro-vllm train` (or the registry "
        "API) and request it by name (`name` or `name@version`); it loads on first use",
        code="adapter_management_closed",
    )


async def list_domains(raw_request: Request) -> JSONResponse:
    state: RetroState = raw_request.app.state.retro
    counts = await asyncio.to_thread(state.retriever.passage_counts)
    adapters = {}
    if state.catalog is not None:
        for d in state.config.domains:
            manifest = await asyncio.to_thread(state.catalog.for_domain, d.adapter_name)
            adapters[d.name] = manifest.served_name if manifest else None
    data = [
        {"object": "retro.domain", "name": d.name, "description": d.description, "adapter": adapters.get(d.name),
         "passages": counts.get(d.name, 0)}
        for d in state.config.domains
    ]
    return JSONResponse({"object": "list", "index_version": state.retriever.version.name, "data": data})


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1)
    domain: StrictStr | None = None
    top_k: StrictInt | None = None
    filters: dict[StrictStr, FilterValue] | None = None


async def search(raw_request: Request) -> JSONResponse:
    state: RetroState = raw_request.app.state.retro
    try:
        body = await read_json_body(raw_request, state.config.serving.max_body_bytes)
        try:
            request = SearchRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_request", param=where) from None
        controls = RetroControls(domain=request.domain, top_k=request.top_k, filters=request.filters)
        check_controls(state.config, controls)
        top_k = request.top_k or state.config.retrieval.top_k
        hits = await search_with_timeout(
            state, request.query, top_k=top_k, domain=request.domain, filters=request.filters
        )
    except RetroHTTPError as exc:
        return response_for(exc)
    from retro_vllm.retrieval.types import Passage

    # No prompt here, so rank is the score order (1 = best).
    passages: list[dict[str, Any]] = [
        Passage(rank=n, chunk=h.chunk, score=h.score, stage=h.stage, scores=dict(h.scores)).to_contract()
        for n, h in enumerate(hits, 1)
    ]
    return JSONResponse({"object": "list", "query": request.query, "domain": request.domain, "passages": passages})
