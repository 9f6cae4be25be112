"""Step 2, retrieve: search the routed domain within `retrieval.timeout_s`, degrading or failing
(503) by config when the store is down, and number the hits in the prompt's canonical order."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.layout import order_passages
from retro_vllm.rag.route import Route
from retro_vllm.rag.state import RetroState
from retro_vllm.rag.timing import Timings
from retro_vllm.retrieval.types import Passage

logger = logging.getLogger(__name__)


async def retrieve(
    state: RetroState, query: str, route: Route, controls: RetroControls, *, vector: Any = None,
    timings: Timings | None = None,
) -> tuple[Route, list[Passage]]:
    """The passages for `query` in the route's domain, and the route with its retrieval status
    (`disabled` when the client turned retrieval off, `degraded` when the store failed and the
    config says to answer without passages). `vector`: the query's, when routing embedded it."""
    if not controls.retrieval:
        return replace(route, retrieval="disabled"), []
    if not query:
        return route, []
    top_k = controls.top_k or state.config.retrieval.top_k
    try:
        # Unless routing embedded it already, the query is embedded on the search's worker
        # thread: one thread hop (a thread and an event-loop wake-up) instead of two.
        hits = await search_with_timeout(
            state, query, top_k=top_k, domain=route.domain, filters=controls.filters, vector=vector,
            timings=timings, embed_first=True,
        )
    except RetroHTTPError:
        if state.config.retrieval.on_error == "degrade":
            return replace(route, retrieval="degraded"), []
        raise
    return route, order_passages(hits)


class _EmbeddingFailed(Exception):
    """Carries an embedder error out of the search thread, so it is not taken for a store fault."""


async def search_with_timeout(state: RetroState, query: str, *, vector: Any = None, embed_first: bool = False,
                              timings: Timings | None = None, **kwargs) -> list:
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
