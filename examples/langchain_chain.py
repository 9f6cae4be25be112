"""LangChain: a chat model that keeps retro-vllm's citations, and the server's index as a
retriever in your own chain.

Needs: pip install -e plugins/langchain-retro-vllm
Run (with `retro-vllm serve` running):  python examples/langchain_chain.py
"""

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_retro_vllm import ChatRetroVLLM, RetroVLLMRetriever

url = os.environ.get("RETRO_VLLM_URL", "http://127.0.0.1:8000/v1")

# 1. Server-side RAG: send the question, get citations back in response_metadata.
chat = ChatRetroVLLM(base_url=url, temperature=0, max_tokens=64)
answer = chat.invoke("What does DNS do?")
print(answer.content)
for citation in answer.response_metadata["citations"]:
    print(f"  [{citation['rank']}] {citation['title']} <{citation['url']}>")

# 2. The server's index in a chain of your own (retrieval off on the server for this call).
retriever = RetroVLLMRetriever(base_url=url, domain="networking", top_k=2)
prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}\nAnswer in one sentence.")
docs = retriever.invoke("What does DNS do?")
chain = prompt | ChatRetroVLLM(base_url=url, model="SmolLM2-135M-Instruct", temperature=0, max_tokens=48,
                               retrieval=False) | StrOutputParser()
print(chain.invoke({"context": "\n".join(d.page_content for d in docs), "question": "What does DNS do?"}))
print("sources:", [d.metadata["url"] for d in docs])
