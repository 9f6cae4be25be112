"""FAISS, the embedded default: exact inner-product search, persisted with its payloads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, StoreError, matches
from retro_vllm.retrieval.types import Chunk, ScoredChunk

INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
META_FILE = "meta.json"


class FaissStore:
    def __init__(self, dimension: int):
        import faiss

        self.dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._chunks: dict[int, Chunk] = {}
        self._ids_by_chunk: dict[str, int] = {}
        self._next_id = 0
        self._filter_cache: dict[str, np.ndarray] = {}
        self._write_lock = threading.Lock()

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise StoreError(f"vector dimension {vectors.shape[-1]} does not match the store's {self.dimension}")
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        with self._write_lock:
            self._remove([self._ids_by_chunk[c.id] for c in chunks if c.id in self._ids_by_chunk])
            ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
            self._next_id += len(chunks)
            self._index.add_with_ids(vectors, ids)
            for int_id, chunk in zip(ids.tolist(), chunks):
                self._chunks[int_id] = chunk
                self._ids_by_chunk[chunk.id] = int_id
            self._filter_cache.clear()

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        wanted = set(doc_ids)
        with self._write_lock:
            gone = [i for i, c in self._chunks.items() if c.doc_id in wanted]
            self._remove(gone)
            self._filter_cache.clear()
        return len(gone)

    def _remove(self, int_ids: list[int]) -> None:
        if not int_ids:
            return
        self._index.remove_ids(np.asarray(int_ids, dtype=np.int64))
        for int_id in int_ids:
            chunk = self._chunks.pop(int_id)
            self._ids_by_chunk.pop(chunk.id, None)

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        import faiss

        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dimension:
            raise StoreError(f"query dimension {query.shape[1]} does not match the store's {self.dimension}")
        params = None
        if filters:
            allowed = self._allowed_ids(filters)
            if allowed.size == 0:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            top_k = min(top_k, allowed.size)
        top_k = min(top_k, self._index.ntotal)
        if top_k <= 0:
            return []
        scores, ids = self._index.search(query, top_k, params=params)
        return [
            ScoredChunk(self._chunks[i], float(s), "dense", {"dense": float(s)})
            for s, i in zip(scores[0].tolist(), ids[0].tolist())
            if i >= 0 and i in self._chunks
        ]

    def _allowed_ids(self, filters: Filters) -> np.ndarray:
        key = json.dumps(filters, sort_keys=True, default=str)
        allowed = self._filter_cache.get(key)
        if allowed is None:
            allowed = np.asarray([i for i, c in self._chunks.items() if matches(c, filters)], dtype=np.int64)
            self._filter_cache[key] = allowed
        return allowed

    def count(self, filters: Filters | None = None) -> int:
        if not filters:
            return len(self._chunks)
        return int(self._allowed_ids(filters).size)

    def health(self) -> None:
        if self._index.ntotal != len(self._chunks):
            raise StoreError(f"FAISS index holds {self._index.ntotal} vectors for {len(self._chunks)} payloads")

    def chunks(self) -> list[Chunk]:
        return list(self._chunks.values())

    def vectors(self) -> tuple[list[Chunk], np.ndarray]:
        """Every chunk with its stored vector (for training on the corpus without re-embedding)."""
        ids = list(self._chunks)
        matrix = np.vstack([self._index.reconstruct(i) for i in ids]) if ids else np.zeros((0, self.dimension), np.float32)
        return [self._chunks[i] for i in ids], matrix

    # -- persistence --------------------------------------------------------------
    def save(self, folder: Path) -> None:
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        with (folder / CHUNKS_FILE).open("w", encoding="utf-8") as handle:
            for int_id, chunk in self._chunks.items():
                handle.write(json.dumps({"int_id": int_id, **chunk.payload()}, ensure_ascii=False) + "\n")
        meta = {"backend": "faiss", "dimension": self.dimension, "count": len(self._chunks), "next_id": self._next_id}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> "FaissStore":
        import faiss

        try:
            meta = json.loads((folder / META_FILE).read_text())
            store = cls(int(meta["dimension"]))
            store._index = faiss.read_index(str(folder / INDEX_FILE))
            with (folder / CHUNKS_FILE).open(encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    int_id = record.pop("int_id")
                    chunk = Chunk.from_payload(record)
                    store._chunks[int_id] = chunk
                    store._ids_by_chunk[chunk.id] = int_id
            store._next_id = int(meta["next_id"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise StoreError(f"FAISS index at {folder} is missing or corrupt: {exc}") from None
        store.health()
        if store._index.d != store.dimension:
            raise StoreError(f"FAISS index at {folder} has dimension {store._index.d}, metadata says {store.dimension}")
        return store
