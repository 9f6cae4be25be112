"""Vector stores at scale: FAISS exact, FAISS HNSW and Qdrant Edge on the same synthetic
vectors, in one run. Index build throughput (upsert + flush), search p50/p99 (top 10, one
thread, with and without a domain filter) as ratios against FAISS exact, and each approximate
store's recall@10 against exact search.

Vectors are random, clustered so that neighbours are meaningful (uniform random vectors in
384 dimensions are all nearly orthogonal, which flatters approximate search). No engine runs.

    python -m bench.store_scale [--scales 10000 100000] [--queries 300]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench.harness.driver import main
from bench.harness.stats import p, p50
from bench.harness.workload import clustered

DIM = 384
DOMAINS = ("astronomy", "cooking", "networking")
BACKENDS = {
    # name: (backend, options)
    "faiss exact": ("faiss", {"index": "flat"}),
    "faiss hnsw": ("faiss", {"index": "hnsw"}),
    "qdrant-edge": ("qdrant-edge", {}),
}


def synthetic(count: int, queries: int, seed: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    from retro_vllm.retrieval.types import Chunk

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(count // 100, 8), DIM)).astype(np.float32)
    vectors = clustered(rng, centres, count)
    query_vectors = clustered(rng, centres, queries)
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=f"synthetic {i}", domain=DOMAINS[i % len(DOMAINS)])
              for i in range(count)]
    return chunks, vectors, query_vectors


def measure(name: str, folder: Path, chunks: list, vectors: np.ndarray, queries: np.ndarray) -> dict:
    from retro_vllm.config import RetrievalSection
    from retro_vllm.retrieval.stores import embedded_store_class, store_options

    backend, overrides = BACKENDS[name]
    section = RetrievalSection(backend=backend)
    options = {**store_options(section), **overrides}
    cls = embedded_store_class(backend)
    started = time.perf_counter()
    store = cls.create(folder, DIM, **options)
    for start in range(0, len(chunks), 5000):
        store.upsert(chunks[start:start + 5000], vectors[start:start + 5000])
    store.flush()
    build_s = time.perf_counter() - started
    store.close()
    store = cls.open(folder, **options)  # searched as the server would: a published version
    result = {"build_s": build_s, "build_per_s": len(chunks) / build_s, "ids": [], "filtered_ids": []}
    for label, filters in (("", None), ("filtered_", {"domain": "cooking"})):
        latencies = []
        for query in queries:
            started = time.perf_counter()
            hits = store.search(query, top_k=10, filters=filters)
            latencies.append((time.perf_counter() - started) * 1000)
            result[f"{label}ids"].append([h.chunk.id for h in hits])
        result[f"{label}p50_ms"], result[f"{label}p99_ms"] = p50(latencies), p(latencies, 0.99)
    store.close()
    return result


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / max(len(e), 1) for f, e in zip(found, exact)]))


def options(parser) -> None:
    parser.add_argument("--scales", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--queries", type=int, default=300)


def run(args) -> dict:
    results: dict = {"scales": {}}
    with tempfile.TemporaryDirectory(prefix="retro-store-bench-") as tmp:
        for scale in args.scales:
            chunks, vectors, queries = synthetic(scale, args.queries)
            rows = {}
            for name in tqdm(BACKENDS, desc=f"{scale:,} chunks"):
                rows[name] = measure(name, Path(tmp) / f"{scale}-{name.replace(' ', '-')}", chunks, vectors, queries)
            exact = rows["faiss exact"]
            for name, row in rows.items():
                row["recall@10"] = recall(row.pop("ids"), exact["ids"]) if name != "faiss exact" else 1.0
                row["filtered_recall@10"] = (recall(row.pop("filtered_ids"), exact["filtered_ids"])
                                             if name != "faiss exact" else 1.0)
            exact.pop("ids", None)
            exact.pop("filtered_ids", None)
            for row in rows.values():
                row["build_ratio"] = row["build_per_s"] / exact["build_per_s"]
                row["search_p50_ratio"] = exact["p50_ms"] / row["p50_ms"]
            results["scales"][scale] = rows
    return results


def table(results: dict) -> str:
    lines = ["Ratios are against FAISS exact at the same scale, in the same run (> 1 = faster).", "",
             "| chunks | store | build chunks/s | build ratio | search p50 ms | p99 ms | speed-up p50 "
             "| filtered p50 ms | recall@10 | filtered recall@10 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for scale, rows in results["scales"].items():
        for name, r in rows.items():
            lines.append(f"| {int(scale):,} | {name} | {r['build_per_s']:,.0f} | {r['build_ratio']:.2f}x | "
                         f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['search_p50_ratio']:.2f}x | "
                         f"{r['filtered_p50_ms']:.2f} | {r['recall@10']:.3f} | {r['filtered_recall@10']:.3f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    scales = list(results["scales"])
    width = 0.25
    for n, name in enumerate(BACKENDS):
        ax.bar([i + n * width for i in range(len(scales))],
               [results["scales"][s][name]["p50_ms"] for s in scales], width, label=name)
    ax.set_xticks([i + width for i in range(len(scales))], [f"{int(s):,} chunks" for s in scales])
    ax.set_ylabel("search p50 (ms, top 10)")
    ax.set_title("Vector stores on 2 cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main(sys.modules[__name__])
