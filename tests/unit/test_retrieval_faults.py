"""A store that raises or hangs: the request degrades or fails with 503, by config, within the
timeout (the engine is not needed: the front half runs on its own)."""

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from retro_vllm.config import RetroConfig
from retro_vllm.rag.controls import RetroControls
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.retrieve import retrieve, search_with_timeout
from retro_vllm.rag.route import ModelChoice, decide_route


async def route_and_retrieve(state, body, query, controls, choice, timings=None):
    """Steps 1 and 2 of a request, as the chat route runs them."""
    route, vector = await decide_route(state, body, query, controls, choice, timings)
    return await retrieve(state, query, route, controls, vector=vector, timings=timings)


class FaultyRetriever:
    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.released = threading.Event()

    def embed_query(self, query):
        return np.ones(4, np.float32) / 2

    def search(self, query, **kwargs):
        if self.behaviour == "raise":
            raise ConnectionError("store at 127.0.0.1:9 refused the connection")
        self.released.wait(5)  # a hung store; released by the test
        return []


def state(on_error: str, behaviour: str):
    config = RetroConfig.model_validate({
        "retrieval": {"on_error": on_error, "timeout_s": 0.3},
        "domains": [{"name": "net"}],
    })
    return SimpleNamespace(config=config, retriever=FaultyRetriever(behaviour), router=None, catalog=None)


@pytest.mark.parametrize("behaviour", ["raise", "sleep"])
def test_fail_mode_answers_503_within_the_timeout(behaviour):
    s = state("fail", behaviour)

    async def request():
        started = time.monotonic()
        try:
            await route_and_retrieve(s, {}, "what is dns?", RetroControls(domain="net"), ModelChoice())
        except RetroHTTPError as exc:
            return exc, time.monotonic() - started
        finally:
            s.retriever.released.set()  # let the hung thread end, or asyncio.run waits for it

    error, waited = asyncio.run(request())
    assert error.status == 503 and error.code == "retrieval_unavailable"
    assert ("refused" if behaviour == "raise" else "within 0.3 s") in error.message
    assert waited < 3  # bounded by the timeout, not by the hung store (5 s)


@pytest.mark.parametrize("behaviour", ["raise", "sleep"])
def test_degrade_mode_answers_without_passages(behaviour):
    s = state("degrade", behaviour)
    route, passages = asyncio.run(route_and_retrieve(s, {}, "what is dns?", RetroControls(domain="net"), ModelChoice()))
    s.retriever.released.set()
    assert passages == [] and route.retrieval == "degraded" and route.domain == "net"


def test_search_endpoint_helper_is_bounded_too():
    s = state("degrade", "sleep")  # /v1/retro/search has no answer to degrade to: always 503
    with pytest.raises(RetroHTTPError) as err:
        asyncio.run(search_with_timeout(s, "q", top_k=3))
    s.retriever.released.set()
    assert err.value.status == 503


def test_retrieval_off_is_reported_as_disabled():
    s = state("fail", "raise")
    route, passages = asyncio.run(route_and_retrieve(s, {}, "q", RetroControls(retrieval=False), ModelChoice()))
    assert route.retrieval == "disabled" and passages == []


def test_an_embedder_error_is_not_taken_for_a_store_fault():
    s = state("degrade", "raise")

    def broken(query):
        raise RuntimeError("embedder exploded")

    s.retriever.embed_query = broken
    with pytest.raises(RuntimeError, match="embedder exploded"):  # not a degraded answer, not a 503
        asyncio.run(route_and_retrieve(s, {}, "what is dns?", RetroControls(domain="net"), ModelChoice()))


def test_embedding_and_search_are_timed_apart_in_one_hop():
    from retro_vllm.rag.timing import Timings

    s = state("fail", "sleep")
    s.retriever.released.set()  # the store answers at once
    threads = []

    def embed(query):
        threads.append(threading.get_ident())
        time.sleep(0.05)
        return np.ones(4, np.float32) / 2

    def search(query, **kwargs):
        threads.append(threading.get_ident())
        return []

    s.retriever.embed_query, s.retriever.search = embed, search
    timings = Timings()
    asyncio.run(route_and_retrieve(s, {}, "what is dns?", RetroControls(domain="net"), ModelChoice(), timings))
    assert len(threads) == 2 and threads[0] == threads[1]  # one worker thread did both
    assert timings.ms["embed"] >= 50 and timings.ms["search"] >= 0  # the sleep is recorded as embedding


def test_the_search_route_leaves_embedding_to_the_retriever():
    s = state("fail", "sleep")
    s.retriever.released.set()

    def broken(query):
        raise RuntimeError("not needed by a keyword search")

    s.retriever.embed_query = broken  # a search that needs no vector never calls it
    assert asyncio.run(search_with_timeout(s, "q", top_k=3)) == []
