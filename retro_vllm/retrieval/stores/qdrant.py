"""A Qdrant server: one collection for every domain, written in place.

Chunks are stored as points whose payload is `Chunk.payload()` (metadata nested under
`metadata`), so a payload reads back as the same chunk and filters address metadata keys as
nested paths. Point ids and filters are built as for Qdrant Edge (qdrant_common.py).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

import retro_vllm.envs as envs
from retro_vllm.retrieval.stores import qdrant_common
from retro_vllm.retrieval.stores.base import Filters, StoreError
from retro_vllm.retrieval.stores.qdrant_options import QdrantOptions
from retro_vllm.retrieval.types import Chunk, ScoredChunk

INDEXED_KEYS = ("domain", "tenant", "doc_id")
# Bounds one request's body (Qdrant refuses REST bodies over 32 MB by default).
BATCH = 256


def point_id(chunk_id: str) -> str:
    return str(qdrant_common.point_id(chunk_id, qdrant_common.SERVER_NAMESPACE))


def to_point(chunk: Chunk, vector: np.ndarray) -> models.PointStruct:
    return models.PointStruct(id=point_id(chunk.id), vector=vector.tolist(), payload=chunk.payload())


class _ClientConditions:
    """qdrant-client's spelling of the shared filter conditions (qdrant_common)."""

    @staticmethod
    def match_value(path: str, value) -> models.Condition:
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))

    @staticmethod
    def match_any(path: str, values) -> models.Condition:
        return models.FieldCondition(key=path, match=models.MatchAny(any=values))

    @staticmethod
    def is_empty(path: str) -> models.Condition:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=path))

    @staticmethod
    def equals_number(path: str, value) -> models.Condition:
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))

    @staticmethod
    def nothing(path: str) -> models.Condition:
        # An empty `should` would be ignored; no point has an id in an empty list.
        return models.HasIdCondition(has_id=[])

    @staticmethod
    def any_of(conditions) -> models.Filter:
        return models.Filter(should=conditions)

    @staticmethod
    def all_of(conditions) -> models.Filter:
        return models.Filter(must=conditions)


def qdrant_filter(filters: Filters | None) -> models.Filter | None:
    return qdrant_common.qdrant_filter(filters, _ClientConditions)


def _error_text(exc: UnexpectedResponse) -> str:
    try:
        return json.loads(exc.content)["status"]["error"]
    except (ValueError, KeyError, TypeError):
        return exc.reason_phrase or "no reason given"


class QdrantStore:
    def __init__(self, section: QdrantOptions, dimension: int):
        self.dimension = dimension
        self.url = section.url
        self.collection = section.collection
        # The version check would only warn (slowly) on an unreachable server; the collection
        # check below fails fast instead.
        self._client = QdrantClient(
            url=section.url,
            api_key=section.api_key or envs.QDRANT_API_KEY,
            timeout=section.timeout_s,
            check_compatibility=False,
        )
        try:
            self._ensure_collection()
        except StoreError:
            self._client.close()
            raise

    @contextmanager
    def _calls(self) -> Iterator[None]:
        try:
            yield
        except ResponseHandlingException as exc:
            raise StoreError(f"Qdrant at {self.url} unreachable: {' '.join(str(exc.source).split())}") from exc
        except UnexpectedResponse as exc:
            raise StoreError(f"Qdrant at {self.url} answered {exc.status_code}: {_error_text(exc)}") from exc

    def _ensure_collection(self) -> None:
        with self._calls():
            if not self._client.collection_exists(self.collection):
                self._create_collection()
                return
            params = self._client.get_collection(self.collection).config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise StoreError(
                f"Qdrant collection {self.collection!r} at {self.url} uses named vectors; it needs one unnamed vector"
            )
        if params.size != self.dimension:
            raise StoreError(
                f"Qdrant collection {self.collection!r} at {self.url} holds vectors of dimension {params.size}, "
                f"the embedder makes {self.dimension}"
            )

    def _create_collection(self) -> None:
        self._client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)
        )
        for key in INDEXED_KEYS:
            self._client.create_payload_index(self.collection, key, field_schema=models.PayloadSchemaType.KEYWORD)

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise StoreError(f"vector dimension {vectors.shape[-1]} does not match the store's {self.dimension}")
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        points = [to_point(c, v) for c, v in zip(chunks, vectors)]
        with self._calls():
            for start in range(0, len(points), BATCH):
                self._client.upsert(self.collection, points=points[start : start + BATCH], wait=True)

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        selector = qdrant_filter({"doc_id": list(doc_ids)})
        with self._calls():
            gone = self._client.count(self.collection, count_filter=selector, exact=True).count
            if gone:
                self._client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)
        return gone

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise StoreError(f"query dimension {query.shape[0]} does not match the store's {self.dimension}")
        if top_k <= 0:
            return []
        with self._calls():
            hits = self._client.query_points(
                self.collection, query=query.tolist(), limit=top_k, query_filter=qdrant_filter(filters),
                with_payload=True,
            ).points
        return [ScoredChunk(Chunk.from_payload(h.payload), h.score, "dense", {"dense": h.score}) for h in hits]

    def count(self, filters: Filters | None = None) -> int:
        with self._calls():
            return self._client.count(self.collection, count_filter=qdrant_filter(filters), exact=True).count

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        offset = None
        while True:
            with self._calls():
                records, offset = self._client.scroll(
                    self.collection, scroll_filter=qdrant_filter(filters), limit=BATCH, offset=offset, with_payload=True
                )
            yield from (Chunk.from_payload(r.payload) for r in records)
            if offset is None:
                return

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        wanted = [point_id(i) for i in ids]
        with self._calls():
            records = self._client.retrieve(self.collection, ids=wanted, with_payload=False, with_vectors=True)
        found = {str(r.id): r.vector for r in records}
        missing = [i for i, p in zip(ids, wanted) if p not in found]
        if missing:
            raise StoreError(f"unknown chunk ids in Qdrant collection {self.collection!r}: {', '.join(missing)}")
        return np.asarray([found[p] for p in wanted], dtype=np.float32).reshape(len(ids), self.dimension)

    def health(self) -> None:
        with self._calls():
            if not self._client.collection_exists(self.collection):
                raise StoreError(f"Qdrant collection {self.collection!r} is missing at {self.url}")

    def close(self) -> None:
        self._client.close()
