"""A Weaviate server (client v4): one collection for every domain, written in place.

Each chunk is one object with a self-provided vector (no vectorizer); how chunks, filters and
tenants map onto the collection is in weaviate_schema.py. With `multi_tenancy`, every chunk lives
in the Weaviate tenant named by its `tenant`, and a read without a `tenant` filter visits every
tenant.

Not exercised against a Weaviate server here: only the pure functions and the unreachable case
are unit-tested; the contract suite (tests/contract) runs the rest given RETRO_WEAVIATE_URL.
"""

from __future__ import annotations

import heapq
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import weaviate
from pydantic import ValidationError
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.exceptions import (
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

import retro_vllm.envs as envs
from retro_vllm.retrieval.stores.base import Filters, StoreError, matches
from retro_vllm.retrieval.stores.weaviate_options import WeaviateOptions
from retro_vllm.retrieval.stores.weaviate_schema import (
    DIMENSION_IN_NOTE,
    RETURNED,
    VECTOR,
    NoMatch,
    chunk_from_properties,
    chunk_uuid,
    collection_settings,
    connection_args,
    keyword_property,
    properties_for,
    property_name,
    prune_unknown,
    route,
    tenant_name,
    where,
)
from retro_vllm.retrieval.types import Chunk, ScoredChunk

BATCH = 256
_UNREACHABLE = (WeaviateConnectionError, WeaviateStartUpError, WeaviateGRPCUnavailableError, WeaviateTimeoutError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class WeaviateStore:
    def __init__(self, section: WeaviateOptions, dimension: int):
        self.dimension = dimension
        self.url = section.url
        self.multi_tenancy = section.multi_tenancy
        self._client = self._connect(section)
        try:
            with self._calls():
                self._collection = self._open_collection(section.collection)
        except StoreError:
            self._client.close()
            raise

    @contextmanager
    def _calls(self) -> Iterator[None]:
        try:
            yield
        except _UNREACHABLE as exc:
            raise StoreError(f"Weaviate at {self.url} unreachable: {_one_line(exc)}") from exc
        except WeaviateBaseError as exc:
            raise StoreError(f"Weaviate at {self.url} failed: {_one_line(exc)}") from exc

    def _connect(self, section: WeaviateOptions) -> weaviate.WeaviateClient:
        key = section.api_key or envs.WEAVIATE_API_KEY
        timeout = Timeout(init=section.timeout_s, query=section.timeout_s, insert=section.timeout_s)
        try:
            with self._calls():
                return weaviate.connect_to_custom(
                    **connection_args(section),
                    auth_credentials=Auth.api_key(key) if key else None,
                    additional_config=AdditionalConfig(timeout=timeout),
                )
        except ValidationError as exc:  # the client's own settings checks (e.g. one port for HTTP and gRPC)
            reasons = "; ".join(error["msg"] for error in exc.errors())
            raise StoreError(f"Weaviate settings for {self.url} rejected: {reasons}") from exc

    def _open_collection(self, name: str):
        if not self._client.collections.exists(name):
            self._client.collections.create(name, **collection_settings(self.dimension, self.multi_tenancy))
        collection = self._client.collections.get(name)
        config = collection.config.get()
        self._check_config(name, config)
        self._properties = {p.name for p in config.properties}
        return collection

    def _check_config(self, name: str, config) -> None:
        found = DIMENSION_IN_NOTE.search(config.description or "")
        if found and int(found.group(1)) != self.dimension:
            raise StoreError(
                f"Weaviate collection {name!r} at {self.url} holds vectors of dimension {found.group(1)}, "
                f"the embedder makes {self.dimension}"
            )
        enabled = config.multi_tenancy_config.enabled
        if enabled != self.multi_tenancy:
            raise StoreError(
                f"Weaviate collection {name!r} at {self.url} has multi-tenancy {'on' if enabled else 'off'}; "
                f"the config says multi_tenancy: {self.multi_tenancy}"
            )

    # -- schema and tenants -----------------------------------------------------------
    def _refresh_properties(self) -> None:
        self._properties = {p.name for p in self._collection.config.get().properties}

    def _known_properties(self, keys: Sequence[str]) -> set[str]:
        # Another writer may have added a metadata key since this store last looked.
        if any(property_name(k) not in self._properties for k in keys):
            self._refresh_properties()
        return self._properties

    def _add_properties(self, chunks: Sequence[Chunk]) -> None:
        keys = {k for c in chunks for k in c.metadata}
        for name in sorted({property_name(k) for k in keys} - self._known_properties(list(keys))):
            self._collection.config.add_property(keyword_property(name))
            self._properties.add(name)

    def _add_tenants(self, names: Sequence[str]) -> None:
        existing = self._collection.tenants.get_by_names(list(names))
        missing = [Tenant(name=n) for n in names if n not in existing]
        if missing:
            self._collection.tenants.create(missing)

    def _views(self, tenants: list[str] | None) -> list:
        """The collection views a read visits: the collection itself, or one per tenant."""
        if not self.multi_tenancy:
            return [self._collection]
        if tenants is None:
            names = list(self._collection.tenants.get())
        else:
            names = list(self._collection.tenants.get_by_names(tenants)) if tenants else []
        return [self._collection.with_tenant(n) for n in sorted(names)]

    def _plan(self, filters: Filters | None) -> tuple[list, Any]:
        """(the views to read, the property filter for each); no views if nothing can match."""
        tenants, rest = route(filters, self.multi_tenancy)
        try:
            flt = where(prune_unknown(rest, self._known_properties(list(rest))))
        except NoMatch:
            return [], None
        return self._views(tenants), flt

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise StoreError(f"vector dimension {vectors.shape[-1]} does not match the store's {self.dimension}")
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        groups = self._objects_by_tenant(chunks, vectors)
        with self._calls():
            self._add_properties(chunks)
            if self.multi_tenancy:
                self._add_tenants(sorted(groups))
            for name, objects in groups.items():
                view = self._collection.with_tenant(name) if name else self._collection
                for start in range(0, len(objects), BATCH):
                    self._insert(view, objects[start : start + BATCH])

    def _objects_by_tenant(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> dict[str | None, list[DataObject]]:
        """Objects grouped by the Weaviate tenant they go to (None: the collection has none).
        A chunk that moves to another tenant keeps its old copy there until its document is
        deleted, as the index layer does before re-adding a document."""
        groups: dict[str | None, list[DataObject]] = {}
        for chunk, vector in zip(chunks, vectors):
            name = tenant_name(chunk.tenant) if self.multi_tenancy else None
            if self.multi_tenancy and name is None:
                raise StoreError(f"tenant {chunk.tenant!r} cannot name a Weaviate tenant (1-64 of A-Z a-z 0-9 _ -)")
            groups.setdefault(name, []).append(
                DataObject(properties_for(chunk), uuid=chunk_uuid(chunk.id), vector={VECTOR: vector.tolist()})
            )
        return groups

    def _insert(self, view, objects: list[DataObject]) -> None:
        # A batch with a known uuid replaces that object, which makes this an upsert.
        result = view.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise StoreError(
                f"Weaviate at {self.url} refused {len(result.errors)} of {len(objects)} chunks: {first.message}"
            )

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        selector = Filter.by_property("doc_id").contains_any(list(doc_ids))
        with self._calls():
            return sum(self._delete_all(view, selector) for view in self._views(None))

    def _delete_all(self, view, selector) -> int:
        # One delete_many removes at most the server's QUERY_MAXIMUM_RESULTS objects.
        gone = 0
        while (result := view.data.delete_many(where=selector)).successful:
            gone += result.successful
        if result.failed:
            raise StoreError(f"Weaviate at {self.url} failed to delete {result.failed} chunks")
        return gone

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise StoreError(f"query dimension {query.shape[0]} does not match the store's {self.dimension}")
        return self._ranked(
            filters,
            top_k,
            "dense",
            lambda view, flt: view.query.near_vector(
                query.tolist(), target_vector=VECTOR, limit=top_k, filters=flt,
                return_metadata=MetadataQuery(distance=True), return_properties=RETURNED,
            ),
            lambda obj: 1.0 - obj.metadata.distance,  # cosine distance
        )

    def keyword_search(self, query: str, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        """Weaviate's own BM25 over chunk text; scores are BM25 scores, stage "bm25". Across
        tenants they are merged as they are, although each tenant keeps its own term statistics."""
        return self._ranked(
            filters,
            top_k,
            "bm25",
            lambda view, flt: view.query.bm25(
                query, query_properties=["text"], limit=top_k, filters=flt,
                return_metadata=MetadataQuery(score=True), return_properties=RETURNED,
            ),
            lambda obj: obj.metadata.score,
        )

    def _ranked(self, filters, top_k: int, stage: str, run: Callable, score: Callable) -> list[ScoredChunk]:
        if top_k <= 0:
            return []
        with self._calls():
            views, flt = self._plan(filters)
            objects = [obj for view in views for obj in run(view, flt).objects]
        best = heapq.nlargest(top_k, ((score(obj), obj) for obj in objects), key=lambda pair: pair[0])
        return [ScoredChunk(chunk_from_properties(obj.properties), s, stage, {stage: s}) for s, obj in best]

    def count(self, filters: Filters | None = None) -> int:
        with self._calls():
            views, flt = self._plan(filters)
            return sum(view.aggregate.over_all(filters=flt, total_count=True).total_count or 0 for view in views)

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        tenants, rest = route(filters, self.multi_tenancy)
        with self._calls():
            views = self._views(tenants)
        for view in views:
            # Weaviate's cursor takes no filter: the contract's own `matches` filters the stream.
            with self._calls():
                for obj in view.iterator(return_properties=RETURNED):
                    chunk = chunk_from_properties(obj.properties)
                    if matches(chunk, rest):
                        yield chunk

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        uuids = [chunk_uuid(i) for i in ids]
        with self._calls():
            found = {
                str(obj.uuid): obj.vector[VECTOR]
                for view in self._views(None)
                for obj in view.query.fetch_objects_by_ids(
                    uuids, limit=len(uuids), include_vector=True, return_properties=["chunk_id"]
                ).objects
            }
        missing = [i for i, u in zip(ids, uuids) if u not in found]
        if missing:
            raise StoreError(f"unknown chunk ids in Weaviate at {self.url}: {', '.join(missing)}")
        return np.asarray([found[u] for u in uuids], dtype=np.float32)

    def health(self) -> None:
        with self._calls():
            if not self._client.is_ready():
                raise StoreError(f"Weaviate at {self.url} is not ready")
            if not self._client.collections.exists(self._collection.name):
                raise StoreError(f"Weaviate collection {self._collection.name!r} is missing at {self.url}")

    def close(self) -> None:
        self._client.close()
