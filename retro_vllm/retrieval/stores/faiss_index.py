"""The FAISS index inside a store: the kinds it can be (exact inner product over flat vectors, or
an HNSW graph over 8-bit codes, float16 or float32 vectors), how one is built, and what a built
one is. Every index is an `IndexIDMap2` keyed by the int ids of the payload table."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from retro_vllm.retrieval.stores.base import StoreError

INDEX_KINDS = ("auto", "flat", "hnsw")
HNSW_VECTORS = ("sq8", "fp16", "fp32")

TRAIN_SAMPLE = 16_384
"""Vectors an 8-bit graph learns its value ranges from (evenly spaced over the store; 24 MB at
384 dimensions: a publish through the API server pays it there)."""


@dataclass(frozen=True)
class IndexOptions:
    index: str
    hnsw_above: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    hnsw_vectors: str

    def mode_for(self, count: int) -> str:
        if self.index == "auto":
            return "hnsw" if count >= self.hnsw_above else "flat"
        return self.index


@contextmanager
def omp_threads(count: int):
    """FAISS's OpenMP team size for the calling thread only, restored after: the setting is
    per thread, and the same worker thread may later build an index, which does use every core."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def index_options(index: str, hnsw_above: int, hnsw_m: int, ef_construction: int, ef_search: int,
                  hnsw_vectors: str) -> IndexOptions:
    if index not in INDEX_KINDS:
        raise StoreError(f"unknown FAISS index kind {index!r}; use one of {', '.join(INDEX_KINDS)}")
    if hnsw_vectors not in HNSW_VECTORS:
        raise StoreError(f"unknown FAISS HNSW vector type {hnsw_vectors!r}; use one of {', '.join(HNSW_VECTORS)}")
    return IndexOptions(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)


def new_index(dimension: int, mode: str, options: IndexOptions, sample: np.ndarray | None = None):
    """`sample`: vectors an 8-bit graph learns its value ranges from. Without one (an empty store
    asked for HNSW) an sq8 store starts flat, searched exactly, and the first flush builds the
    graph from everything upserted by then: one graph build, not a float16 one and then another."""
    import faiss

    if mode == "flat" or (options.hnsw_vectors == "sq8" and (sample is None or not len(sample))):
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if options.hnsw_vectors == "sq8":
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_8bit, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.train(np.ascontiguousarray(sample, dtype=np.float32))
    elif options.hnsw_vectors == "fp16":
        # Half the memory of float32 (100k x 384: 77 MB of vectors against 154 MB).
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        graph = faiss.IndexHNSWFlat(dimension, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = options.ef_construction
    return faiss.IndexIDMap2(graph)


def mode_of(index) -> str:
    """"flat" or "hnsw": what a search of `index` does (an 8-bit graph without vectors to learn
    from yet is flat, whatever was asked for)."""
    return "flat" if graph_vectors(index) is None else "hnsw"


def graph_vectors(index) -> str | None:
    """What the HNSW graph of `index` holds ("sq8": 8-bit codes, approximations of the vectors;
    "fp16"; "fp32"), None for a flat index."""
    import faiss

    graph = faiss.downcast_index(index.index)
    if not isinstance(graph, faiss.IndexHNSW):
        return None
    if not isinstance(graph, faiss.IndexHNSWSQ):
        return "fp32"
    qtype = faiss.downcast_index(graph.storage).sq.qtype
    return "sq8" if qtype == faiss.ScalarQuantizer.QT_8bit else "fp16"
