"""Picking a store: the BACKENDS table, a store of your own named by its class path, and the
options each backend gets from the configuration."""

import subprocess
import sys

import numpy as np
import pytest

from retro_vllm.config import RetrievalSection, RetroConfig
from retro_vllm.retrieval.index import DocumentEntry, IndexWriter, open_store
from retro_vllm.retrieval.stores import (
    BACKENDS,
    connect_server_store,
    embedded_store_class,
    is_embedded,
    store_class,
    store_options,
)
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.types import Chunk

FAISS_PATH = "retro_vllm.retrieval.stores.faiss:FaissStore"


class OwnServerStore:
    """Stands in for a user's server store: built as `Store(options, dimension)`."""

    def __init__(self, options, dimension):
        self.options, self.dimension = options, dimension


def test_every_backend_resolves_to_its_kind():
    kinds = {name: is_embedded(name) for name in BACKENDS}
    assert kinds == {"faiss": True, "qdrant-edge": True, "qdrant": False, "weaviate": False}
    assert store_class("faiss").__name__ == "FaissStore"


def test_every_backend_has_its_options_section():
    sections = RetrievalSection.model_fields
    for name in BACKENDS:
        assert name.replace("-", "_") in sections, f"retrieval has no options section for {name}"


def test_options_come_from_the_backends_own_section():
    retrieval = RetrievalSection(backend="qdrant-edge", qdrant_edge={"hnsw_m": 8})
    assert store_options(retrieval) == {"hnsw_m": 8, "ef_construct": 100, "ef_search": 128}
    with pytest.raises(StoreError, match="not an embedded store backend; embedded backends: faiss, qdrant-edge"):
        store_options(RetrievalSection(backend="qdrant"))
    with pytest.raises(StoreError, match="not a server store backend; server backends: qdrant, weaviate"):
        connect_server_store(RetrievalSection(backend="faiss"), 3)


def test_a_store_of_your_own_by_its_class_path():
    assert store_class(FAISS_PATH) is embedded_store_class("faiss")
    retrieval = RetrievalSection(backend=FAISS_PATH, options={"index": "flat"})
    assert is_embedded(retrieval.backend) and store_options(retrieval) == {"index": "flat"}
    own = RetrievalSection(backend=f"{__name__}:OwnServerStore", options={"url": "x"})
    store = connect_server_store(own, 3)
    assert isinstance(store, OwnServerStore) and (store.options, store.dimension) == ({"url": "x"}, 3)


def test_an_index_writes_and_reads_through_a_store_of_your_own(tmp_path):
    config = RetroConfig.model_validate({
        "home": str(tmp_path / "home"), "domains": [{"name": "net"}],
        "retrieval": {"backend": FAISS_PATH, "options": {"index": "flat"}},
    })
    with IndexWriter(config, dimension=2, embedder_id="test") as writer:
        chunks = [Chunk(id="d#0", doc_id="d", text="d", domain="net")]
        writer.upsert("d", DocumentEntry("net", "ingest", "d", 1), chunks, np.asarray([[1, 0]], np.float32))
        version = writer.commit()
    assert version.embedded and version.backend == FAISS_PATH
    store = open_store(config, version, None)
    assert store.count() == 1
    store.close()


@pytest.mark.parametrize("backend, message", [
    ("milvus", "unknown store backend 'milvus': use faiss, qdrant-edge, qdrant, weaviate, or name your own"),
    ("no_such_package.store:Store", "cannot import no_such_package.store"),
    ("retro_vllm.retrieval.stores.faiss:NoSuchStore", "retro_vllm.retrieval.stores.faiss has no class NoSuchStore"),
    ("retro_vllm.retrieval.stores.faiss:BACKEND", "has no class BACKEND"),
])
def test_a_backend_that_cannot_be_found_is_a_store_error(backend, message):
    with pytest.raises(StoreError, match=message):
        store_class(backend)


def test_the_configuration_checks_backend_names_and_options():
    with pytest.raises(ValueError, match="unknown store backend 'milvus'"):
        RetrievalSection(backend="milvus")
    with pytest.raises(ValueError, match="faiss's options go under faiss"):
        RetrievalSection(backend="faiss", options={"index": "flat"})
    assert RetrievalSection(backend="my_stores.chroma:ChromaStore").backend == "my_stores.chroma:ChromaStore"


def test_reading_the_configuration_imports_no_store_library():
    code = ("import sys, retro_vllm.config;"
            "heavy = ('faiss', 'qdrant_edge', 'qdrant_client', 'weaviate', 'numpy');"
            "print(','.join(m for m in heavy if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""



def test_stores_import_only_what_their_package_docstring_allows():
    import ast
    from pathlib import Path

    import retro_vllm.retrieval.stores as stores

    allowed_project = ("retro_vllm.retrieval.stores", "retro_vllm.retrieval.types", "retro_vllm.envs")
    store_libraries = ("faiss", "qdrant_edge", "qdrant_client", "weaviate", "numpy")
    for path in Path(stores.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for_typing = {id(node) for block in ast.walk(tree)
                      if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
                      for node in ast.walk(block)}
        light = path.name == "__init__.py" or path.name.endswith("_options.py")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in for_typing:
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.startswith("retro_vllm"):
                    assert name.startswith(allowed_project), f"{path.name} imports {name}"
                if light and node in tree.body:  # at import time
                    assert not name.startswith(store_libraries), f"{path.name} imports {name} at import"
