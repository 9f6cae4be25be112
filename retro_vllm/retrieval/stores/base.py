"""The contract every vector store implements.

A store holds chunks with their vectors and payloads. It never embeds text and never
ranks beyond vector similarity: hybrid fusion and reranking happen above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from retro_vllm.retrieval.types import Chunk, ScoredChunk

Filters = dict[str, Any]
"""Equality filters on payload keys (`domain`, `tenant`, `doc_id` or any `metadata` key).
A list value matches any of its items."""


class StoreError(RuntimeError):
    """The store cannot answer (unreachable, corrupt, wrong dimension)."""


@runtime_checkable
class VectorStore(Protocol):
    dimension: int

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace chunks by id. `vectors` are L2-normalized float32 rows, one per
        chunk. Must raise StoreError on a dimension mismatch, before changing anything."""
        ...

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of these documents; return how many chunks went."""
        ...

    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        """The `top_k` most similar chunks that match all filters, best first; score is cosine.
        Must be safe to call from several threads while no write is in progress."""
        ...

    def count(self, filters: Filters | None = None) -> int: ...

    def health(self) -> None:
        """Return if the store can serve; raise StoreError saying why not."""
        ...


@runtime_checkable
class PersistentStore(VectorStore, Protocol):
    """An embedded store that lives in a folder (write new, then swap)."""

    def save(self, folder: Path) -> None: ...


def matches(chunk: Chunk, filters: Filters | None) -> bool:
    if not filters:
        return True
    for key, wanted in filters.items():
        if key in ("domain", "tenant", "doc_id", "id"):
            value = getattr(chunk, key)
        else:
            value = chunk.metadata.get(key)
        if isinstance(wanted, (list, tuple, set)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
