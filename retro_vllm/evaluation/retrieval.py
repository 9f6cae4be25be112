"""`retro-vllm eval retrieval`: dense, BM25, hybrid and hybrid + rerank side by side on a
labelled data set, through the same ingestion, index and retriever the server uses."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from retro_vllm.config import RetroConfig
from retro_vllm.evaluation.datasets import RetrievalDataset
from retro_vllm.evaluation.retrieval_metrics import doc_ranking, summarize

DOMAIN = "eval"
DEPTH = 10  # documents ranked per query (recall@10, MRR@10, nDCG@10)


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    rerank: str  # "none" | "mmr" | "cross-encoder"


def variants(cross_encoder: Path | None) -> list[Variant]:
    found = [Variant("dense", "dense", "none"), Variant("bm25", "bm25", "none"), Variant("hybrid", "hybrid", "none"),
             Variant("hybrid+mmr", "hybrid", "mmr")]
    if cross_encoder is not None:
        found.append(Variant("hybrid+cross-encoder", "hybrid", "cross-encoder"))
    return found


def eval_config(base: RetroConfig, home: Path, *, backend: str, cross_encoder: Path | None) -> RetroConfig:
    """The user's retrieval settings, one domain holding the data set, caches off (each query
    is timed in full), a private home so the user's index is untouched."""
    raw = base.model_dump(exclude={"source"})
    raw["home"] = home
    raw["domains"] = [{"name": DOMAIN}]
    retrieval = raw["retrieval"]
    retrieval["backend"] = backend
    retrieval["cache"] = {"results": 0, "embeddings": 0}
    retrieval["max_top_k"] = 64
    if cross_encoder is not None:
        retrieval["rerank"]["cross_encoder_path"] = cross_encoder
    return RetroConfig.model_validate(raw)


def evaluate(dataset: RetrievalDataset, config: RetroConfig, *, cross_encoder: Path | None = None,
             progress: bool = True) -> dict:
    from retro_vllm.retrieval.corpus import document_from_record
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import ingest
    from retro_vllm.retrieval.rerank import make_reranker
    from retro_vllm.retrieval.retriever import Retriever

    embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
    documents = [document_from_record(r, domain=DOMAIN, tenant=None) for r in dataset.documents]
    started = time.perf_counter()
    report = ingest(config, embedder, documents, progress=progress)
    index_s = time.perf_counter() - started
    retriever = Retriever(config, embedder, report.version)
    questions = [q["question"] for q in dataset.queries]
    started = time.perf_counter()
    vectors = embedder.embed(questions, progress=progress)
    embed_ms = (time.perf_counter() - started) * 1000 / max(len(questions), 1)

    rows = {}
    # Several chunks of one document may rank high: ask for more chunks than documents needed.
    depth_chunks = DEPTH * 3
    for variant in variants(cross_encoder):
        retriever.reranker = make_reranker(variant.rerank, mmr_lambda=config.retrieval.rerank.mmr_lambda,
                                           cross_encoder_path=cross_encoder)
        rankings, elapsed = {}, 0.0
        for query, vector in tqdm(list(zip(dataset.queries, vectors)), desc=variant.name, disable=not progress):
            started = time.perf_counter()
            hits = retriever.search(query["question"], top_k=depth_chunks, vector=vector, mode=variant.mode,
                                    rerank=variant.rerank != "none")
            elapsed += time.perf_counter() - started
            rankings[query["id"]] = doc_ranking(h.chunk.doc_id for h in hits)[:DEPTH]
        rows[variant.name] = {**summarize(rankings, dataset.gold_by_query),
                              "ms_per_query": elapsed * 1000 / max(len(dataset.queries), 1)}
    return {
        "dataset": dataset.name, "source": str(dataset.source), "documents": len(dataset.documents),
        "chunks": retriever.store.count(), "queries": len(dataset.queries), "backend": config.retrieval.backend,
        "index_s": round(index_s, 1), "embed_ms_per_query": round(embed_ms, 2),
        "settings": {"hybrid": config.retrieval.hybrid.model_dump(), "rerank": config.retrieval.rerank.model_dump(mode="json")},
        "variants": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"{result['dataset']}: {result['queries']} queries, {result['documents']} documents "
        f"({result['chunks']} chunks), backend {result['backend']}; query embedding "
        f"{result['embed_ms_per_query']:.1f} ms/query (shared by every variant, not in ms/query below)",
        "",
        "| variant | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 | ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['recall@1']:.3f} | {row['recall@5']:.3f} | {row['recall@10']:.3f} | "
                     f"{row['mrr@10']:.3f} | {row['ndcg@10']:.3f} | {row['ms_per_query']:.2f} |")
    return "\n".join(lines)
