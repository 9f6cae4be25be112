"""Vector stores, one file each, all behind `retro_vllm.retrieval.stores.base.VectorStore`.

Backends are imported when asked for, so a deployment needs only its own store's package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retro_vllm.retrieval.stores.base import StoreError, VectorStore

if TYPE_CHECKING:
    from retro_vllm.config import RetrievalSection

EMBEDDED_BACKENDS = ("faiss", "qdrant-edge")
SERVER_BACKENDS = ("qdrant", "weaviate")


def embedded_store_class(backend: str) -> type:
    """The class whose `create`/`open` build an embedded store of `backend`."""
    if backend == "faiss":
        from retro_vllm.retrieval.stores.faiss import FaissStore

        return FaissStore
    if backend == "qdrant-edge":
        from retro_vllm.retrieval.stores.qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore
    raise StoreError(f"{backend!r} is not an embedded store backend; embedded backends: {', '.join(EMBEDDED_BACKENDS)}")


def store_options(retrieval: "RetrievalSection") -> dict[str, Any]:
    """Keyword arguments for `create`/`open` of the configured embedded backend."""
    if retrieval.backend == "faiss":
        return retrieval.faiss.model_dump()
    if retrieval.backend == "qdrant-edge":
        return retrieval.qdrant_edge.model_dump()
    raise StoreError(
        f"{retrieval.backend!r} is not an embedded store backend; embedded backends: {', '.join(EMBEDDED_BACKENDS)}"
    )


def connect_server_store(retrieval: "RetrievalSection", dimension: int) -> VectorStore:
    """A store on the configured server, for vectors of `dimension`."""
    if retrieval.backend == "qdrant":
        from retro_vllm.retrieval.stores.qdrant import QdrantStore

        return QdrantStore(retrieval.qdrant, dimension)
    if retrieval.backend == "weaviate":
        from retro_vllm.retrieval.stores.weaviate import WeaviateStore

        return WeaviateStore(retrieval.weaviate, dimension)
    raise StoreError(
        f"{retrieval.backend!r} is not a server store backend; server backends: {', '.join(SERVER_BACKENDS)}"
    )
