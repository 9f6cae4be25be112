"""Vector stores, one module per backend, all behind the contract in `base.py`, and the one
table that picks a backend by name.

Holds: `base.py` (the Protocols every store implements), one module per backend (`faiss.py`,
`qdrant_edge.py`, `qdrant.py`, `weaviate.py`) with the helpers only it uses beside it
(`faiss_payloads.py`, `faiss_index.py`, `faiss_migration.py`, `weaviate_schema.py`), what
several share (`embedded.py`: the embedded stores' folder; `qdrant_common.py`: both Qdrant
stores' ids and filters), and each backend's options model (`<backend>_options.py`, which
`retro_vllm.config` reads the YAML with).

Must not import: any store library (faiss, qdrant_edge, qdrant_client, weaviate) or numpy at
package import, here or in an options module: the configuration imports those, and a
deployment needs only its own store's package. Backends are imported when asked for. Of the
rest of the package, stores import only `retro_vllm.retrieval.types` (the records they hold)
and `retro_vllm.envs` (server credentials given in the environment).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retro_vllm.config import RetrievalSection
    from retro_vllm.retrieval.stores.base import VectorStore

BACKENDS: dict[str, str] = {
    "faiss": "retro_vllm.retrieval.stores.faiss:FaissStore",
    "qdrant-edge": "retro_vllm.retrieval.stores.qdrant_edge:QdrantEdgeStore",
    "qdrant": "retro_vllm.retrieval.stores.qdrant:QdrantStore",
    "weaviate": "retro_vllm.retrieval.stores.weaviate:WeaviateStore",
}
"""Every built-in backend: its name in `retrieval.backend`, and the store class as
"module:Class", imported on use. A built-in backend's options are the section of `retrieval`
named like it (`retrieval.faiss`, `retrieval.qdrant_edge`, ...). `retrieval.backend` may also be
the "package.module:Class" path of a store of your own (see `store_class`)."""

_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def check_backend_name(backend: str) -> str:
    """`backend` if it names a built-in backend or looks like a "package.module:Class" path;
    ValueError otherwise (the configuration reports it with the key). Imports nothing."""
    if backend in BACKENDS or _CLASS_PATH.fullmatch(backend):
        return backend
    raise ValueError(
        f"unknown store backend {backend!r}: use {', '.join(BACKENDS)}, or name your own store class "
        "as 'package.module:Class'"
    )


def store_class(backend: str) -> type:
    """The store class of `backend`, imported now: a name in BACKENDS, or the "package.module:Class"
    path of a store of your own. Yours implements `base.VectorStore` and is built like the
    built-in ones: an embedded store (one folder) has the classmethods `create(folder, dimension,
    **options)` and `open(folder, **options)` and a `flush()` (`base.FolderLifecycle`); a server
    store is built as `Store(options, dimension)`. Its options are `retrieval.options`, as written.
    StoreError, saying why, when the class cannot be found."""
    from retro_vllm.retrieval.stores.base import StoreError

    try:
        path = BACKENDS.get(backend) or check_backend_name(backend)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StoreError(f"store backend {backend!r}: cannot import {module_name}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise StoreError(f"store backend {backend!r}: {module_name} has no class {class_name}")
    return cls


def is_embedded(backend: str) -> bool:
    """Whether `backend` keeps its store in a folder (versions copied and swapped by the index
    layer) rather than on a server written in place. Imports the backend."""
    from retro_vllm.retrieval.stores.base import FolderLifecycle

    return issubclass(store_class(backend), FolderLifecycle)


def embedded_store_class(backend: str) -> type:
    """The class whose `create`/`open` build an embedded store of `backend`."""
    from retro_vllm.retrieval.stores.base import StoreError

    if not is_embedded(backend):
        raise StoreError(f"{backend!r} is not an embedded store backend; embedded backends: {_embedded_names()}")
    return store_class(backend)


def backend_options(retrieval: "RetrievalSection") -> Any:
    """The configured backend's options: a built-in backend's own section (an options model), or
    `retrieval.options` (a dict) for a store named by its class path."""
    if retrieval.backend in BACKENDS:
        return getattr(retrieval, retrieval.backend.replace("-", "_"))
    return retrieval.options


def store_options(retrieval: "RetrievalSection") -> dict[str, Any]:
    """Keyword arguments for `create`/`open` of the configured embedded backend."""
    from retro_vllm.retrieval.stores.base import StoreError

    if not is_embedded(retrieval.backend):
        raise StoreError(
            f"{retrieval.backend!r} is not an embedded store backend; embedded backends: {_embedded_names()}"
        )
    options = backend_options(retrieval)
    return dict(options) if isinstance(options, dict) else options.model_dump()


def connect_server_store(retrieval: "RetrievalSection", dimension: int) -> "VectorStore":
    """A store on the configured server, for vectors of `dimension`."""
    from retro_vllm.retrieval.stores.base import StoreError

    if is_embedded(retrieval.backend):
        servers = ", ".join(name for name in BACKENDS if not is_embedded(name))
        raise StoreError(f"{retrieval.backend!r} is not a server store backend; server backends: {servers}")
    return store_class(retrieval.backend)(backend_options(retrieval), dimension)


def _embedded_names() -> str:
    return ", ".join(name for name in BACKENDS if is_embedded(name))
