"""The backends the store contract runs on, each built through the same factory the index uses,
and the fixtures that hand a test one of them (tests/contract/test_store_contract.py says which).

Backends:
- `faiss-flat`, `faiss-hnsw`, `faiss-hnsw-fp16`, `qdrant-edge`: embedded, always run.
- `qdrant-local`: the Qdrant server store over qdrant-client's local mode, an in-process Python
  re-implementation of the server's API: it checks the requests the store builds, not the
  transport. Always runs.
- `qdrant`: a Qdrant server, given `RETRO_QDRANT_URL=http://localhost:6333`.
- `weaviate`, `weaviate-tenants` (multi-tenancy on): a Weaviate server, given
  `RETRO_WEAVIATE_URL=http://localhost:8080` (`RETRO_WEAVIATE_GRPC_PORT`, default 50051).
Without its URL a server backend is skipped with that reason. Every server test works in a
fresh collection and drops it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import pytest

from retro_vllm.config import RetrievalSection
from retro_vllm.retrieval.stores import (
    connect_server_store,
    embedded_store_class,
    is_embedded,
    store_class,
    store_options,
)
from retro_vllm.retrieval.stores.base import KeywordSearchable

QDRANT_URL = os.environ.get("RETRO_QDRANT_URL")
WEAVIATE_URL = os.environ.get("RETRO_WEAVIATE_URL")
WEAVIATE_GRPC_PORT = int(os.environ.get("RETRO_WEAVIATE_GRPC_PORT", "50051"))


@dataclass(frozen=True)
class Case:
    retrieval: dict  # the `retrieval` section that selects the store
    exact: bool = False  # search is exact: results equal a brute-force ranking
    score_tolerance: float = 1e-5
    server_url: str | None = None  # for a server backend: where it is, None when not given
    local: bool = False  # qdrant-client's local mode instead of a server
    marks: list = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.retrieval["backend"]


def server(backend: str, url: str | None, variable: str, **options) -> Case:
    skip = pytest.mark.skipif(not url, reason=f"no {backend.capitalize()} server: set {variable}")
    return Case({"backend": backend, backend: {"url": url or "http://unset", **options}}, server_url=url,
                score_tolerance=1e-4, marks=[skip])


CASES = {
    "faiss-flat": Case({"backend": "faiss", "faiss": {"index": "flat"}}, exact=True),
    "faiss-hnsw": Case({"backend": "faiss", "faiss": {"index": "hnsw"}}),  # 8-bit codes once flushed, flat before
    # A FAISS HNSW graph of float16 vectors scores with them: half a float16 step near 1.0.
    "faiss-hnsw-fp16": Case({"backend": "faiss", "faiss": {"index": "hnsw", "hnsw_vectors": "fp16"}},
                            score_tolerance=5e-4),
    "qdrant-edge": Case({"backend": "qdrant-edge"}, exact=True),
    "qdrant-local": Case({"backend": "qdrant"}, exact=True, local=True, marks=[
        pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")]),
    "qdrant": server("qdrant", QDRANT_URL, "RETRO_QDRANT_URL"),
    "weaviate": server("weaviate", WEAVIATE_URL, "RETRO_WEAVIATE_URL", grpc_port=WEAVIATE_GRPC_PORT),
    "weaviate-tenants": server("weaviate", WEAVIATE_URL, "RETRO_WEAVIATE_URL", grpc_port=WEAVIATE_GRPC_PORT,
                               multi_tenancy=True),
}
EMBEDDED = [name for name, case in CASES.items() if is_embedded(case.backend)]
SERVERS = [name for name in CASES if name not in EMBEDDED]
KEYWORD_SEARCHABLE = [name for name, case in CASES.items()
                      if issubclass(store_class(case.backend), KeywordSearchable)]


def params(names):
    return [pytest.param(name, marks=CASES[name].marks) for name in names]


class Stores:
    """Builds stores of one case and closes (and, on a server, drops) what it built."""

    def __init__(self, case: Case, tmp_path, monkeypatch):
        self.case, self.tmp_path = case, tmp_path
        self.collection = f"Retro_test_{uuid.uuid4().hex[:10]}"
        self.opened: list = []
        if case.local:
            from qdrant_client import QdrantClient

            from retro_vllm.retrieval.stores import qdrant

            monkeypatch.setattr(qdrant, "QdrantClient", lambda **_: QdrantClient(path=str(tmp_path / "qdrant")))

    def __call__(self, dimension: int = 3, folder: str = "store"):
        """A new empty store (embedded: in `folder`; server: in this test's collection)."""
        retrieval = self._retrieval()
        if is_embedded(self.case.backend):
            cls = embedded_store_class(self.case.backend)
            store = cls.create(self.tmp_path / folder, dimension, **store_options(retrieval))
        else:
            store = connect_server_store(retrieval, dimension)
        self.opened.append(store)
        return store

    def open(self, folder: str):
        """The embedded store in `folder`."""
        retrieval = self._retrieval()
        store = embedded_store_class(self.case.backend).open(self.tmp_path / folder, **store_options(retrieval))
        self.opened.append(store)
        return store

    def _retrieval(self) -> RetrievalSection:
        raw = {key: dict(value) if isinstance(value, dict) else value for key, value in self.case.retrieval.items()}
        if not is_embedded(self.case.backend):
            raw.setdefault(self.case.backend, {})["collection"] = self.collection
        return RetrievalSection.model_validate(raw)

    def close(self) -> None:
        for store in self.opened:
            store.close()
        if self.case.server_url:
            drop_collection(self.case.backend, self._retrieval())


def drop_collection(backend: str, retrieval: RetrievalSection) -> None:
    if backend == "qdrant":
        from qdrant_client import QdrantClient

        client = QdrantClient(url=retrieval.qdrant.url, api_key=os.environ.get("QDRANT_API_KEY"))
        client.delete_collection(retrieval.qdrant.collection)
    else:
        import weaviate as client_lib

        from retro_vllm.retrieval.stores.weaviate_schema import connection_args

        client = client_lib.connect_to_custom(**connection_args(retrieval.weaviate))
        client.collections.delete(retrieval.weaviate.collection)
    client.close()


def stores_fixture(name: str, cases: list[str]):
    """A fixture `name` that hands a test a `Stores` of each of `cases` in turn."""

    @pytest.fixture(name=name, params=params(cases))
    def fixture(request, tmp_path, monkeypatch) -> Stores:
        stores = Stores(CASES[request.param], tmp_path, monkeypatch)
        request.addfinalizer(stores.close)
        return stores

    return fixture


make = stores_fixture("make", list(CASES))
make_embedded = stores_fixture("make_embedded", EMBEDDED)
make_server = stores_fixture("make_server", SERVERS)
make_keyword_searchable = stores_fixture("make_keyword_searchable", KEYWORD_SEARCHABLE)
