"""FAISS, the embedded default: exact (flat) or HNSW inner-product search, persisted with payloads.

The folder holds `index.faiss` (an `IndexIDMap2` keyed by int ids over `IndexFlatIP` or an
HNSW graph over 8-bit codes, float16 or float32 vectors: faiss_index.py), `chunks.sqlite` (each
int id with its chunk's payload and exact float32 vector: faiss_payloads.py, which says what stays
on disk and how writes reach the file) and `meta.json`. Folders written before `chunks.sqlite`
hold `chunks.jsonl` instead (faiss_migration.py); the next `flush()` converts them.

Payload filters are evaluated into a set of allowed int ids (by the payload table) that FAISS
searches within.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, StoreError
from retro_vllm.retrieval.stores.embedded import (
    META_FILE,
    checked_query,
    checked_rows,
    last_rows,
    read_meta,
    refuse_existing,
    write_meta,
)
from retro_vllm.retrieval.stores.faiss_index import (
    TRAIN_SAMPLE,
    IndexOptions,
    graph_vectors,
    index_options,
    mode_of,
    new_index,
    omp_threads,
)
from retro_vllm.retrieval.stores.faiss_migration import LEGACY_CHUNKS_FILE, payloads_from_jsonl
from retro_vllm.retrieval.stores.faiss_options import FaissOptions
from retro_vllm.retrieval.stores.faiss_payloads import (
    CHUNKS_FILE,
    REBUILD_BATCH,
    SCRATCH_FILE,
    ClosedPayloads,
    Payloads,
    columns_of,
)
from retro_vllm.retrieval.types import Chunk, ScoredChunk

BACKEND = "faiss"
_DEFAULTS = FaissOptions()  # the options' defaults are stated once, in FaissOptions
INDEX_FILE = "index.faiss"

RERANK_FACTOR = 4
"""With `hnsw_vectors: sq8` the graph walk compares 8-bit codes and asks for this many times the
hits wanted; those are ranked again by their exact vectors, read from chunks.sqlite. On 100k
clustered vectors (bench/store_scale's) the 8-bit walk alone has recall@10 0.967; re-ranking twice
the hits already gives 1.000, the same as the float16 graph, at half its memory."""

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
every query, and evaluating one reads every row that could match."""

CHUNK_PAGE = 1024
"""Rows per read when `chunks()` walks the store."""


@dataclass(frozen=True)
class _Allowed:
    ids: np.ndarray
    selector: object  # faiss.IDSelectorBatch over `ids`


class FaissStore:
    """Build with `create` or `open`. Options are `FaissOptions`' fields: the index kind they
    ask for is applied at `flush()`; until then a store searches the index it was opened with.

    Deletes in HNSW mode: a FAISS HNSW graph cannot drop nodes, so removed ids stay in the graph,
    masked out of every search by an id selector, and `flush()` rebuilds the graph from the live
    vectors whenever anything was removed. The folder therefore never holds removed vectors and
    readers never pay for a mask; the cost is one graph build per flush that follows a delete or
    a re-upsert, which the index layer does once per publish. Upserts of new chunks go straight
    into the graph."""

    def __init__(self, folder: Path, dimension: int, index, payloads: Payloads, next_id: int, options: IndexOptions):
        self.folder = folder
        self.dimension = dimension
        self._index = index
        self._mode = mode_of(index)
        self._codes_only = graph_vectors(index) == "sq8"
        self._payloads = payloads
        self._count = payloads.count()
        self._trained_on = self._count  # chunks the index was built from; `open` reads it from meta.json
        self._next_id = next_id
        self._options = options
        self._masked: set[int] = set()
        self._filter_cache: dict[str, _Allowed] = {}
        self._cache_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: Path, dimension: int, *, index: str = _DEFAULTS.index, hnsw_above: int = _DEFAULTS.hnsw_above,
        hnsw_m: int = _DEFAULTS.hnsw_m, ef_construction: int = _DEFAULTS.ef_construction,
        ef_search: int = _DEFAULTS.ef_search, hnsw_vectors: str = _DEFAULTS.hnsw_vectors,
    ) -> "FaissStore":
        """A new empty store in `folder` (created if missing). Its files are written by `flush()`;
        writes before that go to the scratch file `chunks.sqlite.tmp`."""
        options = index_options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        refuse_existing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        empty_index = new_index(dimension, options.mode_for(0), options)
        return cls(folder, dimension, empty_index, Payloads.empty(), 0, options)

    @classmethod
    def open(
        cls, folder: Path, *, index: str = _DEFAULTS.index, hnsw_above: int = _DEFAULTS.hnsw_above,
        hnsw_m: int = _DEFAULTS.hnsw_m, ef_construction: int = _DEFAULTS.ef_construction,
        ef_search: int = _DEFAULTS.ef_search, hnsw_vectors: str = _DEFAULTS.hnsw_vectors,
    ) -> "FaissStore":
        """The store in `folder`, changing nothing there until `flush()`."""
        import faiss

        options = index_options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        meta = read_meta(folder, BACKEND)
        payloads = None
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
            if (folder / CHUNKS_FILE).is_file():
                payloads = Payloads.read_only(folder / CHUNKS_FILE)
            elif (folder / LEGACY_CHUNKS_FILE).is_file():
                payloads = payloads_from_jsonl(folder / LEGACY_CHUNKS_FILE, faiss_index)
            else:
                raise FileNotFoundError(f"{CHUNKS_FILE} is missing")
            store = cls(folder, int(meta["dimension"]), faiss_index, payloads, int(meta["next_id"]), options)
            store._trained_on = int(meta.get("trained_on") or meta.get("count") or 0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, sqlite3.Error) as exc:
            if payloads is not None:
                payloads.close()
            raise StoreError(f"FAISS store at {folder} is missing or corrupt: {exc}") from None
        if faiss_index.d != store.dimension or store.mode != meta.get("mode"):
            store.close()
            raise StoreError(
                f"FAISS store at {folder} is corrupt: its index is {store.mode} with dimension {faiss_index.d}, "
                f"{META_FILE} says {meta.get('mode')} with dimension {store.dimension}"
            )
        try:
            store.health()
        except StoreError:
            store.close()
            raise
        return store

    @property
    def mode(self) -> str:
        """The kind of index searched now: "flat" or "hnsw"."""
        return self._mode

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        rows = checked_rows(chunks, vectors, self.dimension)
        keep = last_rows(chunks)
        records = [columns_of(chunks[row].payload()) for row in keep]  # refuses a bad chunk before any change
        if not keep:
            return
        with self._write_lock:
            payloads = self._writable()
            ids = np.arange(self._next_id, self._next_id + len(keep), dtype=np.int64)
            old = sorted(payloads.ids_by_chunk_id([chunks[row].id for row in keep]).values())
            with payloads.transaction():
                payloads.delete(old)
                payloads.insert((int_id, *record) for int_id, record in zip(ids.tolist(), records))
                payloads.insert_vectors(ids, rows[keep])
                # FAISS last, the add before the removal: if the add raises, the rows roll back
                # and the index has lost nothing.
                self._index.add_with_ids(rows[keep], ids)
                self._remove(old)
            self._next_id += len(keep)
            self._count += len(keep) - len(old)
            self._forget_filters()

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        with self._write_lock:
            gone = self._payloads.ids_of_documents(doc_ids) if doc_ids else []
            if not gone:
                return 0
            payloads = self._writable()
            with payloads.transaction():
                payloads.delete(gone)
                self._remove(gone)
            self._count -= len(gone)
            self._forget_filters()
        return len(gone)

    def _writable(self) -> Payloads:
        """The payload table that takes writes: on the first write, a copy in the scratch file."""
        if self._payloads.scratch is None:
            copy = self._payloads.writable_copy(self.folder / SCRATCH_FILE)
            self._payloads.close()
            self._payloads = copy
        return self._payloads

    def _remove(self, int_ids: list[int]) -> None:
        if not int_ids:
            return
        if self._mode == "hnsw":
            self._masked.update(int_ids)
        else:
            self._index.remove_ids(np.asarray(int_ids, dtype=np.int64))

    def flush(self) -> None:
        """Apply the index kind the options ask for at this size, rebuild an HNSW graph that has
        removed nodes or other graph options, and write the folder."""
        import faiss

        with self._write_lock:
            mode = self._options.mode_for(self._count)
            # An 8-bit graph's value ranges come from the vectors it was trained on; a store that
            # has since doubled may hold new regions (a new domain) that those ranges clip.
            outgrown = self._codes_only and self._count >= 2 * max(self._trained_on, 1)
            if (mode != self._mode or self._masked or outgrown
                    or (mode == "hnsw" and self._graph_outdated())):
                self._rebuild(mode)
            # Both new files are complete before either is renamed into place, so a failure while
            # writing them leaves the folder as the last flush wrote it. (The renames themselves are
            # not one atomic step; the index layer flushes a staging folder no reader has open.)
            index_file = self.folder / (INDEX_FILE + ".tmp")
            faiss.write_index(self._index, str(index_file))
            payloads = self._payloads_to_publish()
            os.replace(index_file, self.folder / INDEX_FILE)
            if payloads is not None:
                os.replace(payloads.scratch, self.folder / CHUNKS_FILE)  # all committed: the file is whole
                payloads.close()
                self._payloads = Payloads.read_only(self.folder / CHUNKS_FILE)
            (self.folder / LEGACY_CHUNKS_FILE).unlink(missing_ok=True)
            write_meta(
                self.folder,
                {"backend": BACKEND, "dimension": self.dimension, "mode": self._mode,
                 "count": self._count, "next_id": self._next_id, "trained_on": self._trained_on},
            )

    def _payloads_to_publish(self) -> Payloads | None:
        """The scratch copy to rename over chunks.sqlite; None for a store opened from
        chunks.sqlite and not written since. A new store, or one read from chunks.jsonl, makes
        its scratch copy here."""
        if self._payloads.source == self.folder / CHUNKS_FILE:
            return None
        payloads = self._writable()
        payloads.compact()
        return payloads

    def _rebuild(self, mode: str) -> None:
        """A new index of `mode` from the exact vectors in chunks.sqlite, a batch at a time."""
        ids = self._payloads.all_ids()
        sample = None
        if mode == "hnsw" and self._options.hnsw_vectors == "sq8" and ids.size:
            spaced = np.linspace(0, ids.size - 1, min(ids.size, TRAIN_SAMPLE)).astype(np.int64)
            sample = self._payloads.vectors_by_id(ids[spaced], self.dimension)
        index = new_index(self.dimension, mode, self._options, sample)
        for start in range(0, ids.size, REBUILD_BATCH):
            batch = ids[start:start + REBUILD_BATCH]
            index.add_with_ids(self._payloads.vectors_by_id(batch, self.dimension), batch)
        self._index, self._mode, self._codes_only = index, mode_of(index), graph_vectors(index) == "sq8"
        self._trained_on = int(ids.size)
        self._masked.clear()
        self._forget_filters()

    def _graph_outdated(self) -> bool:
        """The graph differs from the options in degree or vectors, or was built with a narrower
        beam than asked for. A wider beam than asked for only made a better graph: rebuilding it
        (tens of seconds at 100k chunks, at a one-document publish) would gain nothing."""
        import faiss

        graph = faiss.downcast_index(self._index.index)
        return (graph.hnsw.nb_neighbors(1) != self._options.hnsw_m
                or graph_vectors(self._index) != self._options.hnsw_vectors
                or graph.hnsw.efConstruction < self._options.ef_construction)

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        import faiss

        query = checked_query(vector, self.dimension)
        allowed = self._allowed(filters)
        available = self._count if allowed is None else allowed.ids.size
        k = min(top_k, available)
        if k <= 0:
            return []
        selector = None if allowed is None else allowed.selector
        if self._mode == "flat":
            return self._search_index(query, k, None if selector is None else faiss.SearchParameters(sel=selector))
        if allowed is not None and allowed.ids.size <= EXACT_FILTER_LIMIT:
            return self._search_exact(query, k, allowed.ids)
        wanted = min(k * RERANK_FACTOR, available) if self._codes_only else k
        params = faiss.SearchParametersHNSW(efSearch=max(self._options.ef_search, wanted), sel=selector)
        hits = self._search_index(query, k, params, wanted)
        if len(hits) < k:  # the walk met too few allowed nodes; exact scoring cannot miss any
            ids = allowed.ids if allowed is not None else self._payloads.all_ids()
            return self._search_exact(query, k, ids)
        return hits

    def _search_index(self, query: np.ndarray, k: int, params, candidates: int | None = None) -> list[ScoredChunk]:
        """The top `k`; a graph of 8-bit codes finds `candidates` and ranks them by exact vectors."""
        with omp_threads(SEARCH_THREADS):
            scores, ids = self._index.search(query, candidates or k, params=params)
        ranked = [(int_id, score) for score, int_id in zip(scores[0].tolist(), ids[0].tolist()) if int_id >= 0]
        if self._codes_only:
            return [ScoredChunk(chunk, score, "dense", {"dense": score})
                    for _int_id, score, chunk in self._payloads.rerank(query[0], [i for i, _ in ranked], k)]
        return self._hits(ranked)

    def _search_exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[ScoredChunk]:
        rows = self._exact_vectors(ids)
        scores = rows @ query[0]
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return self._hits([(int(ids[i]), float(scores[i])) for i in best])

    def _hits(self, ranked: list[tuple[int, float]]) -> list[ScoredChunk]:
        chunks = self._payloads.chunks_by_id([int_id for int_id, _ in ranked])
        missing = [int_id for int_id, _ in ranked if int_id not in chunks]
        if missing:
            raise StoreError(f"FAISS store at {self.folder} is corrupt: no payload for int ids {missing[:5]}")
        return [ScoredChunk(chunks[int_id], score, "dense", {"dense": score}) for int_id, score in ranked]

    def _allowed(self, filters: Filters | None) -> _Allowed | None:
        """The ids a search may return; None when that is every id in the index."""
        import faiss

        if not filters and not self._masked:
            return None
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        with self._cache_lock:
            allowed = self._filter_cache.get(key)
        if allowed is None:
            ids = self._payloads.matching_ids(filters) if filters else self._payloads.all_ids()
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
            return self._count
        return int(self._allowed(filters).ids.size)

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        """Read a page at a time, so walking every chunk of a large store (router training,
        ingest's duplicate check) holds one page of them, not all. Not a snapshot: finish the
        walk before writing to this store (an upsert's new ids would come up again)."""
        after = -1
        while True:
            after, page = self._payloads.chunk_page(filters, after=after, limit=CHUNK_PAGE)
            if after is None:
                return
            yield from page

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        known = self._payloads.ids_by_chunk_id(ids)
        unknown = [chunk_id for chunk_id in ids if chunk_id not in known]
        if unknown:
            raise StoreError(f"unknown chunk ids: {', '.join(unknown[:5])}")
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._payloads.vectors_by_id(np.asarray([known[i] for i in ids], dtype=np.int64), self.dimension)

    def _exact_vectors(self, int_ids: np.ndarray) -> np.ndarray:
        """For scoring: from the index when it holds them (a memory copy; float16 in an fp16
        graph, whose search scores are float16 too), else from chunks.sqlite."""
        if self._codes_only:
            return self._payloads.vectors_by_id(int_ids, self.dimension)
        with omp_threads(SEARCH_THREADS):
            return self._index.reconstruct_batch(int_ids)

    def health(self) -> None:
        if self._index.ntotal != self._count + len(self._masked):
            raise StoreError(
                f"FAISS store at {self.folder}: the index holds {self._index.ntotal} vectors "
                f"for {self._count} chunks"
            )

    def close(self) -> None:
        """Close the payload database; writes not flushed are dropped with their scratch file."""
        payloads, self._payloads = self._payloads, ClosedPayloads()
        if isinstance(payloads, ClosedPayloads):
            return
        payloads.close()
        if payloads.scratch is not None:
            payloads.scratch.unlink(missing_ok=True)

