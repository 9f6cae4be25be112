"""Against a running retro-vllm server (RETRO_VLLM_URL, e.g. http://127.0.0.1:8000/v1); the main
test suite starts one and runs this file in the LlamaIndex environment."""

from __future__ import annotations

import asyncio
import logging
import os

import httpx
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.llms.retro_vllm import RetroVLLM
from llama_index.llms.retro_vllm.base import retro_metadata
from llama_index.retrievers.retro_vllm import RetroVLLMRetriever

URL = os.environ.get("RETRO_VLLM_URL")
BASE_MODEL = os.environ.get("RETRO_VLLM_BASE_MODEL", "SmolLM2-135M-Instruct")
server = pytest.mark.skipif(not URL, reason="set RETRO_VLLM_URL to a running retro-vllm server")
QUESTIONS = ["How does a refracting telescope form an image?", "Why should raw chicken be cooked to 74 C?"]


def check(meta: dict, text: str) -> int:
    retro = meta["retro"]
    assert retro["route"] == "router" and meta["domain"] == retro["domain"] and meta["adapter"] == retro["adapter"]
    urls = {p["url"] for p in meta["passages"]}
    assert len(meta["citations"]) == len(meta["annotations"])
    for citation in meta["citations"]:
        assert citation["url"] in urls
        assert text[citation["start_index"]:citation["end_index"]] == f"[{citation['rank']}]"
    return len(meta["citations"])


@pytest.fixture(scope="module")
def llm():
    return RetroVLLM(api_base=URL, temperature=0, max_tokens=48, max_retries=0)


@server
def test_chat_complete_and_stream_keep_citations(llm):
    answer = llm.chat([ChatMessage(role="user", content=QUESTIONS[0])])
    cited = check(answer.additional_kwargs, answer.message.content)
    assert answer.message.additional_kwargs["citations"] == answer.additional_kwargs["citations"]
    last = None
    for last in llm.stream_chat([ChatMessage(role="user", content=QUESTIONS[1])]):
        pass
    cited += check(last.additional_kwargs, last.message.content)
    assert last.additional_kwargs["domain"] == "cooking"
    completion = llm.complete(QUESTIONS[0])
    check(completion.additional_kwargs, completion.text)
    assert cited >= 1  # the domain adapters cite


@server
def test_async_with_per_call_controls(llm):
    async def run():
        answer = await llm.achat([ChatMessage(role="user", content=QUESTIONS[0])], top_k=2)
        last = None
        async for last in await llm.astream_chat([ChatMessage(role="user", content=QUESTIONS[1])], top_k=2):
            pass
        return answer, last

    for response in asyncio.run(run()):
        check(response.additional_kwargs, response.message.content)
        assert len(response.additional_kwargs["passages"]) == 2


@server
def test_server_errors_raise_the_clients_own_error(llm):
    import openai

    with pytest.raises(openai.BadRequestError, match="unknown domain"):
        llm.chat([ChatMessage(role="user", content="hi")], domain="law")


@server
def test_retriever_in_a_query_engine():
    question = "What does DNS do?"
    expected = httpx.post(f"{URL.removesuffix('/v1')}/v1/retro/search", timeout=60,
                          json={"query": question, "domain": "networking", "top_k": 3}).json()["passages"]
    retriever = RetroVLLMRetriever(URL, domain="networking", top_k=3)
    nodes = retriever.retrieve(question)
    assert [n.node.node_id for n in nodes] == [p["id"] for p in expected]
    assert [n.node.metadata["url"] for n in nodes] == [p["url"] for p in expected]
    assert [n.score for n in nodes] == pytest.approx([p["score"] for p in expected])
    assert [n.node.node_id for n in asyncio.run(retriever.aretrieve(question))] == [p["id"] for p in expected]
    # The server's index in LlamaIndex's own pipeline; the server's retrieval off for the answer.
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=RetroVLLM(api_base=URL, model=BASE_MODEL, retrieval=False, temperature=0, max_tokens=32))
    response = engine.query(question)
    assert str(response).strip()
    assert [n.node.node_id for n in response.source_nodes] == [p["id"] for p in expected]


def test_plain_server_answer_degrades_with_a_warning(caplog):
    from llama_index.core.base.llms.types import ChatResponse

    llm = RetroVLLM(api_base="http://127.0.0.1:9/v1")
    plain = ChatResponse(message=ChatMessage(role="assistant", content="hello"),
                         raw={"choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}]})
    assert retro_metadata(plain.raw) is None
    with caplog.at_level(logging.WARNING):
        out = llm._enrich(plain)
    assert out.message.content == "hello" and "citations" not in out.additional_kwargs
    assert "no `retro` object" in caplog.text
