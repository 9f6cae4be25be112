"""FAISS, the embedded default: exact (flat) or HNSW inner-product search, persisted with payloads.

The folder holds `index.faiss` (an `IndexIDMap2` keyed by int ids over `IndexFlatIP` or
an HNSW graph over float16 or float32 vectors), `chunks.jsonl` (each int id with its chunk's payload) and `meta.json`.
Payload filters are evaluated in Python (`base.matches`) into a set of allowed int ids that
FAISS searches within.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, StoreError, matches
from retro_vllm.retrieval.stores.embedded import (
    META_FILE,
    checked_query,
    checked_rows,
    last_rows,
    read_meta,
    refuse_existing,
    replace_atomically,
    write_meta,
)
from retro_vllm.retrieval.types import Chunk, ScoredChunk

BACKEND = "faiss"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
INDEX_KINDS = ("auto", "flat", "hnsw")
HNSW_VECTORS = ("fp16", "fp32")

EXACT_FILTER_LIMIT = 1024
"""In HNSW mode a filter allowing at most this many chunks is answered by exact scoring of just
those vectors: that costs less than a graph walk that skips nearly every node it visits, and
cannot come back short of matches. Kept small because gathering vectors out of an HNSW index
costs about 2.4 us each (bench/store_scale: 3,300 allowed of 10k took 8 ms this way, against
0.3 ms for the filtered walk)."""

SEARCH_THREADS = 1
"""OpenMP threads a search may use. One query gains nothing from more (FAISS parallelises over
queries; HNSW walks and the flat scan of one query are serial), but FAISS still opens a team of
every core for small steps such as mapping result ids, and its barrier then waits for a core the
engine is generating on: inside the API server a 10k-chunk exact search took 18 ms (p50) with the
default team and 1.2 ms with one thread, a 1k-chunk one 5.5 ms against 0.2 ms."""

FILTER_CACHE_SIZE = 256
"""Allowed-id sets kept per distinct filter: the retriever sends the same domain filter with
every query, and evaluating it walks every payload in Python."""


@dataclass(frozen=True)
class _Options:
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


@dataclass(frozen=True)
class _Allowed:
    ids: np.ndarray
    selector: object  # faiss.IDSelectorBatch over `ids`


class FaissStore:
    """Build with `create` or `open`. Options are `FaissSection`'s fields: the index kind they
    ask for is applied at `flush()`; until then a store searches the index it was opened with.

    Deletes in HNSW mode: a FAISS HNSW graph cannot drop nodes, so removed ids stay in the graph,
    masked out of every search by an id selector, and `flush()` rebuilds the graph from the live
    vectors whenever anything was removed. The folder therefore never holds removed vectors and
    readers never pay for a mask; the cost is one graph build per flush that follows a delete or
    a re-upsert, which the index layer does once per publish. Upserts of new chunks go straight
    into the graph."""

    def __init__(self, folder: Path, dimension: int, index, chunks: dict[int, Chunk], next_id: int, options: _Options):
        import faiss

        self.folder = folder
        self.dimension = dimension
        self._index = index
        self._mode = "hnsw" if isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW) else "flat"
        self._chunks = chunks
        self._ids_by_chunk = {chunk.id: int_id for int_id, chunk in chunks.items()}
        self._next_id = next_id
        self._options = options
        self._masked: set[int] = set()
        self._filter_cache: dict[str, _Allowed] = {}
        self._cache_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: Path, dimension: int, *, index: str = "auto", hnsw_above: int = 50_000, hnsw_m: int = 32,
        ef_construction: int = 200, ef_search: int = 128, hnsw_vectors: str = "fp16",
    ) -> "FaissStore":
        """A new empty store in `folder` (created if missing); nothing is written before `flush()`."""
        options = _options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        refuse_existing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, dimension, _new_index(dimension, options.mode_for(0), options), {}, 0, options)

    @classmethod
    def open(
        cls, folder: Path, *, index: str = "auto", hnsw_above: int = 50_000, hnsw_m: int = 32,
        ef_construction: int = 200, ef_search: int = 128, hnsw_vectors: str = "fp16",
    ) -> "FaissStore":
        import faiss

        options = _options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        meta = read_meta(folder, BACKEND)
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
            chunks: dict[int, Chunk] = {}
            with (folder / CHUNKS_FILE).open(encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    int_id = int(record.pop("int_id"))
                    chunks[int_id] = Chunk.from_payload(record)
            store = cls(folder, int(meta["dimension"]), faiss_index, chunks, int(meta["next_id"]), options)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise StoreError(f"FAISS store at {folder} is missing or corrupt: {exc}") from None
        if faiss_index.d != store.dimension or store.mode != meta.get("mode"):
            raise StoreError(
                f"FAISS store at {folder} is corrupt: its index is {store.mode} with dimension {faiss_index.d}, "
                f"{META_FILE} says {meta.get('mode')} with dimension {store.dimension}"
            )
        store.health()
        return store

    @property
    def mode(self) -> str:
        """The kind of index searched now: "flat" or "hnsw"."""
        return self._mode

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        rows = checked_rows(chunks, vectors, self.dimension)
        keep = last_rows(chunks)
        with self._write_lock:
            self._remove([self._ids_by_chunk[chunks[row].id] for row in keep if chunks[row].id in self._ids_by_chunk])
            ids = np.arange(self._next_id, self._next_id + len(keep), dtype=np.int64)
            self._next_id += len(keep)
            self._index.add_with_ids(rows[keep], ids)
            for int_id, row in zip(ids.tolist(), keep):
                self._chunks[int_id] = chunks[row]
                self._ids_by_chunk[chunks[row].id] = int_id
            self._forget_filters()

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        wanted = set(doc_ids)
        with self._write_lock:
            gone = [int_id for int_id, chunk in self._chunks.items() if chunk.doc_id in wanted]
            self._remove(gone)
            self._forget_filters()
        return len(gone)

    def _remove(self, int_ids: list[int]) -> None:
        if not int_ids:
            return
        if self._mode == "hnsw":
            self._masked.update(int_ids)
        else:
            self._index.remove_ids(np.asarray(int_ids, dtype=np.int64))
        for int_id in int_ids:
            del self._ids_by_chunk[self._chunks.pop(int_id).id]

    def flush(self) -> None:
        """Apply the index kind the options ask for at this size, rebuild an HNSW graph that has
        removed nodes or other graph options, and write the folder."""
        import faiss

        with self._write_lock:
            mode = self._options.mode_for(len(self._chunks))
            wanted_graph = (self._options.hnsw_m, self._options.ef_construction, self._options.hnsw_vectors)
            if mode != self._mode or self._masked or (mode == "hnsw" and self._graph_options() != wanted_graph):
                self._rebuild(mode)
            replace_atomically(self.folder / INDEX_FILE, lambda p: faiss.write_index(self._index, str(p)))
            replace_atomically(self.folder / CHUNKS_FILE, self._write_chunks)
            write_meta(
                self.folder,
                {"backend": BACKEND, "dimension": self.dimension, "mode": self._mode,
                 "count": len(self._chunks), "next_id": self._next_id},
            )

    def _rebuild(self, mode: str) -> None:
        ids = np.fromiter(self._chunks, dtype=np.int64, count=len(self._chunks))
        index = _new_index(self.dimension, mode, self._options)
        if ids.size:
            index.add_with_ids(self._index.reconstruct_batch(ids), ids)
        self._index, self._mode = index, mode
        self._masked.clear()
        self._forget_filters()

    def _graph_options(self) -> tuple[int, int, str]:
        import faiss

        graph = faiss.downcast_index(self._index.index)
        vectors = "fp16" if isinstance(graph, faiss.IndexHNSWSQ) else "fp32"
        return graph.hnsw.nb_neighbors(1), graph.hnsw.efConstruction, vectors

    def _write_chunks(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            for int_id, chunk in self._chunks.items():
                handle.write(json.dumps({"int_id": int_id, **chunk.payload()}, ensure_ascii=False) + "\n")

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        import faiss

        query = checked_query(vector, self.dimension)
        allowed = self._allowed(filters)
        k = min(top_k, len(self._chunks) if allowed is None else allowed.ids.size)
        if k <= 0:
            return []
        selector = None if allowed is None else allowed.selector
        if self._mode == "flat":
            return self._search_index(query, k, None if selector is None else faiss.SearchParameters(sel=selector))
        if allowed is not None and allowed.ids.size <= EXACT_FILTER_LIMIT:
            return self._search_exact(query, k, allowed.ids)
        params = faiss.SearchParametersHNSW(efSearch=max(self._options.ef_search, k), sel=selector)
        hits = self._search_index(query, k, params)
        if len(hits) < k:  # the walk met too few allowed nodes; exact scoring cannot miss any
            ids = allowed.ids if allowed is not None else np.fromiter(self._chunks, dtype=np.int64)
            return self._search_exact(query, k, ids)
        return hits

    def _search_index(self, query: np.ndarray, k: int, params) -> list[ScoredChunk]:
        with omp_threads(SEARCH_THREADS):
            scores, ids = self._index.search(query, k, params=params)
        return [self._hit(int_id, score) for score, int_id in zip(scores[0].tolist(), ids[0].tolist()) if int_id >= 0]

    def _search_exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[ScoredChunk]:
        with omp_threads(SEARCH_THREADS):
            rows = self._index.reconstruct_batch(ids)
        scores = rows @ query[0]
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self._hit(int(ids[i]), float(scores[i])) for i in best]

    def _hit(self, int_id: int, score: float) -> ScoredChunk:
        return ScoredChunk(self._chunks[int_id], score, "dense", {"dense": score})

    def _allowed(self, filters: Filters | None) -> _Allowed | None:
        """The ids a search may return; None when that is every id in the index."""
        import faiss

        if not filters and not self._masked:
            return None
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        with self._cache_lock:
            allowed = self._filter_cache.get(key)
        if allowed is None:
            ids = np.fromiter((i for i, c in self._chunks.items() if matches(c, filters)), dtype=np.int64)
            allowed = _Allowed(ids, faiss.IDSelectorBatch(ids))
            with self._cache_lock:
                if len(self._filter_cache) >= FILTER_CACHE_SIZE:
                    del self._filter_cache[next(iter(self._filter_cache))]
                self._filter_cache[key] = allowed
        return allowed

    def _forget_filters(self) -> None:
        with self._cache_lock:
            self._filter_cache.clear()

    def count(self, filters: Filters | None = None) -> int:
        if not filters:
            return len(self._chunks)
        return int(self._allowed(filters).ids.size)

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        return iter([chunk for chunk in list(self._chunks.values()) if matches(chunk, filters)])

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        unknown = [chunk_id for chunk_id in ids if chunk_id not in self._ids_by_chunk]
        if unknown:
            raise StoreError(f"unknown chunk ids: {', '.join(unknown[:5])}")
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray([self._ids_by_chunk[i] for i in ids], dtype=np.int64))

    def health(self) -> None:
        if self._index.ntotal != len(self._chunks) + len(self._masked):
            raise StoreError(
                f"FAISS store at {self.folder}: the index holds {self._index.ntotal} vectors "
                f"for {len(self._chunks)} chunks"
            )

    def close(self) -> None:
        """Nothing to release: FAISS keeps no file open; the index goes with the object."""


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


def _options(index: str, hnsw_above: int, hnsw_m: int, ef_construction: int, ef_search: int,
             hnsw_vectors: str) -> _Options:
    if index not in INDEX_KINDS:
        raise StoreError(f"unknown FAISS index kind {index!r}; use one of {', '.join(INDEX_KINDS)}")
    if hnsw_vectors not in HNSW_VECTORS:
        raise StoreError(f"unknown FAISS HNSW vector type {hnsw_vectors!r}; use one of {', '.join(HNSW_VECTORS)}")
    return _Options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)


def _new_index(dimension: int, mode: str, options: _Options):
    import faiss

    if mode == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if options.hnsw_vectors == "fp16":
        # Half the memory of float32 (100k x 384: 96 MB against 177 MB); a float16 round trip is
        # exact on the second pass, so rebuilds and carried-over vectors do not drift.
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        graph = faiss.IndexHNSWFlat(dimension, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = options.ef_construction
    return faiss.IndexIDMap2(graph)
