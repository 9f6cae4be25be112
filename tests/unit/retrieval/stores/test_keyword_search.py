"""Keyword search is an optional capability of a store (`base.KeywordSearchable`): the retriever
uses a server store's own when it has one, and serves hybrid as dense when it has none."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval import retriever as retriever_module
from retro_vllm.retrieval.index import IndexVersion
from retro_vllm.retrieval.keyword import LazyKeywordIndex
from retro_vllm.retrieval.stores import BACKENDS, store_class
from retro_vllm.retrieval.stores.base import KeywordSearchable
from retro_vllm.retrieval.types import Chunk, ScoredChunk


def hit(chunk_id, stage):
    return ScoredChunk(Chunk(id=chunk_id, doc_id=chunk_id, text=chunk_id, domain="net"), 1.0, stage, {stage: 1.0})


class DenseOnlyServer:
    dimension = 2

    def search(self, vector, *, top_k, filters=None):
        return [hit("dense#0", "dense")]


class KeywordServer(DenseOnlyServer):
    def keyword_search(self, query, *, top_k, filters=None):
        return [hit("words#0", "bm25")]


def test_keyword_search_is_a_capability_of_the_class():
    searchable = {name for name in BACKENDS if issubclass(store_class(name), KeywordSearchable)}
    assert searchable == {"weaviate"}  # the embedded stores' BM25 is the version's sidecar
    assert issubclass(LazyKeywordIndex, KeywordSearchable)


@pytest.mark.parametrize("store, ids", [(KeywordServer(), {"dense#0", "words#0"}), (DenseOnlyServer(), {"dense#0"})])
def test_hybrid_uses_a_server_stores_own_keyword_search(tmp_path, monkeypatch, caplog, store, ids):
    config = RetroConfig.model_validate({"home": str(tmp_path), "retrieval": {"mode": "hybrid"},
                                         "domains": [{"name": "net"}]})
    monkeypatch.setattr(retriever_module, "open_store", lambda *_args: store)
    embedder = SimpleNamespace(dimension=2, embed_query=lambda query: np.asarray([1, 0], np.float32))
    version = IndexVersion(name="s000001", folder=None, backend="weaviate", embedder="test", config_fingerprint="")
    with caplog.at_level(logging.WARNING):
        hits = retriever_module.Retriever(config, embedder, version).search("words", top_k=4)
    assert {h.chunk.id for h in hits} == ids
    assert ("no keyword search" in caplog.text) == ("words#0" not in ids)
