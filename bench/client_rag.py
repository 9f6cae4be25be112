"""Server-side RAG (retro-vllm) against the client-side pipeline users build today: a
LangChain RAG chain (a retriever over the same FAISS index with the same embedder, in the
client process, and LangChain's usual stuffed prompt) calling stock vLLM from an environment
without retro-vllm. Same model, same questions, same answer length (`ignore_eos`).

retro-vllm gets the bare question through the OpenAI SDK. Concurrency levels use disjoint
question sets, so no level is served from an earlier level's cache.

    python -m bench.client_rag [--levels 1 4 16] [--max-tokens 48]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.client import chat, sdk
from bench.harness.config import demo_config
from bench.harness.driver import main
from bench.harness.servers import RetroServer, StockServer, running
from bench.harness.stats import p, p50

MODEL = "SmolLM2-135M-Instruct"
# The prompt of LangChain's RAG tutorial (the `rlm/rag-prompt` hub prompt), as users copy it.
RAG_TEMPLATE = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
    "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
    "maximum and keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:"
)


def langchain_chain(config_path: Path, stock_url: str, max_tokens: int, top_k: int):
    """retriever -> stuffed prompt -> ChatOpenAI on stock vLLM, in LCEL."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnablePassthrough
    from langchain_openai import ChatOpenAI

    from retro_vllm.config import load_config
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.retriever import Retriever

    config = load_config(config_path)
    embedder = Embedder(config.embedder.path)
    retriever_impl = Retriever(config, embedder, ensure_index(config, embedder, progress=False))

    class IndexRetriever(BaseRetriever):
        """The same embedder and FAISS index the server uses, run in the client."""

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            hits = retriever_impl.search(query, top_k=top_k)
            return [Document(page_content=h.chunk.text, metadata={"id": h.chunk.id, "title": h.chunk.title}) for h in hits]

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    llm = ChatOpenAI(base_url=f"{stock_url}/v1", api_key="unused", model=MODEL, temperature=0, max_tokens=max_tokens,
                     stream_usage=True, extra_body={"ignore_eos": True})
    prompt = ChatPromptTemplate.from_messages([("human", RAG_TEMPLATE)])
    return {"context": IndexRetriever() | format_docs, "question": RunnablePassthrough()} | prompt | llm


async def one_langchain(chain, question: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    ttft, tokens = None, 0
    async for chunk in chain.astream(question):
        if ttft is None and chunk.content:
            ttft = time.perf_counter() - start
        if chunk.usage_metadata:
            tokens = chunk.usage_metadata["output_tokens"]
    total = time.perf_counter() - start
    return ttft or total, total, tokens


async def one_retro(client, question: str, max_tokens: int) -> tuple[float, float, int]:
    timed = await chat(client, {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0,
                                "max_tokens": max_tokens, "ignore_eos": True})
    return timed.ttft_s, timed.total_s, timed.completion_tokens


async def level(run_one, questions: list[str], concurrency: int) -> dict:
    gate = asyncio.Semaphore(concurrency)

    async def guarded(q):
        async with gate:
            return await run_one(q)

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(guarded(q) for q in questions))
    wall = time.perf_counter() - start
    ttft = [o[0] * 1000 for o in outcomes]
    total = [o[1] * 1000 for o in outcomes]
    return {"requests_s": len(questions) / wall, "tokens_s": sum(o[2] for o in outcomes) / wall,
            "ttft_p50": p50(ttft), "ttft_p95": p(ttft, 0.95), "total_p50": p50(total), "total_p95": p(total, 0.95)}


def options(parser) -> None:
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--per-level", type=int, nargs="+", default=[6, 12, 24], help="Questions at each level.")
    parser.add_argument("--max-tokens", type=int, default=48, help="Generated tokens per answer (ignore_eos).")


def run(args) -> dict:
    from retro_vllm.config import DEMO_CONFIG, load_config

    questions = []
    for path in sorted((DEMO_CONFIG.parent / "qa").glob("*.jsonl")):
        questions.append([json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()])
    mixed = [q for group in zip(*questions) for q in group]  # interleave domains
    sets, start = [], 0
    for count in args.per_level:
        sets.append(mixed[start:start + count])
        start += count

    results = {}
    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp:
        config_path = demo_config(Path(tmp) / "home")
        config = load_config(config_path)
        with running(RetroServer(config_path),
                     StockServer(Path(config.model.path), MODEL, Path(tmp) / "stock.log")) as (retro, stock):
            chain = langchain_chain(config_path, stock.url, args.max_tokens, config.retrieval.top_k)
            client = sdk(retro.url)

            async def run_all():
                await one_retro(client, "warm-up", 4)
                await one_langchain(chain, "warm-up")
                for concurrency, subset in zip(args.levels, sets):
                    results[concurrency] = {
                        "langchain + stock vLLM": await level(lambda q: one_langchain(chain, q), subset, concurrency),
                        "retro-vllm": await level(lambda q: one_retro(client, q, args.max_tokens), subset, concurrency),
                    }

            asyncio.run(run_all())
    # What the table states besides the levels' figures; bench/__main__ reads the levels only.
    results["setup"] = {"max_tokens": args.max_tokens, "per_level": args.per_level}
    return results


def by_level(results: dict) -> dict:
    """The concurrency levels' figures, without the run's settings."""
    return {level: rows for level, rows in results.items() if level != "setup"}


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    results = by_level(results)
    levels = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("langchain + stock vLLM", "retro-vllm"):
        axes[0].plot(levels, [results[c][name]["ttft_p50"] for c in levels], "o-", label=name)
        axes[1].plot(levels, [results[c][name]["requests_s"] for c in levels], "o-", label=name)
    axes[0].set(xlabel="concurrency", ylabel="TTFT p50 ms", xscale="log")
    axes[1].set(xlabel="concurrency", ylabel="requests/s", xscale="log")
    axes[0].legend()
    fig.suptitle("Server-side RAG (retro-vllm) vs client-side LangChain chain on stock vLLM")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    setup, results = results["setup"], by_level(results)
    lines = ["| concurrency | pipeline | requests/s | generated tok/s | TTFT p50 ms | TTFT p95 ms | latency p50 ms "
             "| latency p95 ms |", "|---|---|---|---|---|---|---|---|"]
    for concurrency, rows in results.items():
        for name, r in rows.items():
            lines.append(f"| {concurrency} | {name} | {r['requests_s']:.2f} | {r['tokens_s']:.1f} | {r['ttft_p50']:.0f} | "
                         f"{r['ttft_p95']:.0f} | {r['total_p50']:.0f} | {r['total_p95']:.0f} |")
    lines += ["", "| concurrency | requests/s ratio | TTFT p50 ratio (baseline / retro) | latency p50 ratio "
              "(baseline / retro) |", "|---|---|---|---|"]
    for concurrency, rows in results.items():
        base, ours = rows["langchain + stock vLLM"], rows["retro-vllm"]
        lines.append(f"| {concurrency} | {ours['requests_s'] / base['requests_s']:.2f}x | "
                     f"{base['ttft_p50'] / ours['ttft_p50']:.2f}x | {base['total_p50'] / ours['total_p50']:.2f}x |")
    lines.append("")
    lines.append(f"{setup['max_tokens']} generated tokens per answer (ignore_eos), greedy; questions per level "
                 f"{setup['per_level']}, disjoint. Baseline: LangChain LCEL chain (retriever over the same FAISS index "
                 "and embedder in the client, LangChain's RAG tutorial prompt) -> ChatOpenAI -> stock vLLM.")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.modules[__name__])
