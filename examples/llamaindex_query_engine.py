"""LlamaIndex: retro-vllm's index as a retriever in a query engine, and an LLM that keeps citations.

Needs the LlamaIndex package, which lives in its own environment (see its README):
    bash scripts/setup.sh --dev   (creates .venv-llamaindex)
Run (with `retro-vllm serve` running):  .venv-llamaindex/bin/python examples/llamaindex_query_engine.py
"""

import os

from llama_index.core.llms import ChatMessage
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.llms.retro_vllm import RetroVLLM
from llama_index.retrievers.retro_vllm import RetroVLLMRetriever

url = os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1")

# 1. Server-side RAG: citations come back in additional_kwargs.
llm = RetroVLLM(api_base=url, temperature=0, max_tokens=64)
answer = llm.chat([ChatMessage(role="user", content="What does DNS do?")])
print(answer.message.content)
for citation in answer.additional_kwargs["citations"]:
    print(f"  [{citation['rank']}] {citation['title']} <{citation['url']}>")

# 2. LlamaIndex's own pipeline over the server's index (the server's retrieval off for the answer).
retriever = RetroVLLMRetriever(url, domain="networking", top_k=2)
engine = RetrieverQueryEngine.from_args(
    retriever, llm=RetroVLLM(api_base=url, model="SmolLM2-135M-Instruct", retrieval=False, temperature=0, max_tokens=48))
response = engine.query("What does DNS do?")
print(response)
print("sources:", [n.node.metadata["url"] for n in response.source_nodes])
