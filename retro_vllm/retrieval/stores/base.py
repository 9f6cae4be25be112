"""The contract every vector store implements.

A store holds chunks with their vectors and payloads. It never embeds text and never
ranks beyond vector similarity: keyword search, fusion and reranking happen above it.

Two kinds:
- embedded stores (`EmbeddedStore`: FAISS, Qdrant Edge) live in one folder. The index layer
  never writes a folder that is being served: it copies the current version's folder, opens
  the copy, writes, `flush()`es, then swaps a pointer (retrieval/index.py).
- server stores (Qdrant, Weaviate) are written in place, one document at a time. One is built
  as `Store(options, dimension)` and connects then; a collection holding vectors of another
  dimension is a StoreError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from retro_vllm.retrieval.types import Chunk, ScoredChunk

Filters = dict[str, Any]
"""Equality filters on payload keys: `domain`, `tenant`, `doc_id`, `id`, or any key of a
chunk's `metadata`. A list value matches any of its items. All keys must match."""

TOP_LEVEL_KEYS = ("domain", "tenant", "doc_id", "id")


class StoreError(RuntimeError):
    """The store cannot answer (unreachable, corrupt, wrong dimension); the message says why."""


@runtime_checkable
class VectorStore(Protocol):
    dimension: int

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace chunks by `Chunk.id`. `vectors` are L2-normalized float32 rows, one
        per chunk. Raises StoreError on a dimension or length mismatch, before changing anything."""
        ...

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of these documents; return how many chunks went."""
        ...

    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        """The `top_k` most similar chunks that match all filters, best first; `score` is the
        cosine similarity, `stage` "dense", `scores` {"dense": score}. Safe to call from several
        threads while no write is in progress. Raises StoreError on a wrong query dimension."""
        ...

    def count(self, filters: Filters | None = None) -> int: ...

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        """Every stored chunk matching `filters`, in no particular order."""
        ...

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of these chunk ids, one row each, in the same order. Raises
        StoreError if an id is unknown."""
        ...

    def health(self) -> None:
        """Return if the store can serve; raise StoreError saying why not."""
        ...

    def close(self) -> None:
        """Release files, locks or connections; idempotent."""
        ...


@runtime_checkable
class KeywordSearchable(Protocol):
    """Optional: a store that ranks chunks by their words itself (Weaviate's BM25). The retriever
    asks `isinstance(store, KeywordSearchable)` for a server store; embedded versions use their
    BM25 sidecar (retrieval/keyword.py), which has the same method. A store without it serves
    hybrid retrieval as dense only."""

    def keyword_search(self, query: str, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        """The `top_k` chunks that match all filters, best first by keyword relevance to `query`;
        `score` is the keyword score (BM25: not comparable with a cosine), `stage` "bm25",
        `scores` {"bm25": score}. Chunks sharing no word with `query` are not returned. Safe to
        call from several threads while no write is in progress."""
        ...


@runtime_checkable
class FolderLifecycle(Protocol):
    """How a store lives in one folder. Construct with `create(folder, dimension)` (a new empty
    store there) or `open(folder)`, options as keyword arguments; `flush()` makes every write
    durable in that folder, after which a byte copy of the folder opens as the same store. A
    store class with these is an embedded one (`stores.is_embedded` asks with `issubclass`)."""

    @classmethod
    def create(cls, folder: Path, dimension: int, **options: Any) -> "EmbeddedStore": ...

    @classmethod
    def open(cls, folder: Path, **options: Any) -> "EmbeddedStore": ...

    def flush(self) -> None: ...


@runtime_checkable
class EmbeddedStore(VectorStore, FolderLifecycle, Protocol):
    """A store that lives in one folder (`FolderLifecycle`)."""


def payload_value(chunk: Chunk, key: str) -> Any:
    return getattr(chunk, key) if key in TOP_LEVEL_KEYS else chunk.metadata.get(key)


def matches(chunk: Chunk, filters: Filters | None) -> bool:
    if not filters:
        return True
    for key, wanted in filters.items():
        value = payload_value(chunk, key)
        if isinstance(wanted, (list, tuple, set)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
