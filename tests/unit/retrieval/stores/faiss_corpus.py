"""The corpora and folder readers the FAISS store's tests share."""

import json

import faiss
import numpy as np

from retro_vllm.retrieval.stores import faiss as faiss_store
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.stores.faiss_index import graph_vectors as index_graph_vectors
from retro_vllm.retrieval.types import Chunk

DIMENSION = 16


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def corpus(n, seed=0):
    vectors = unit(np.random.default_rng(seed).normal(size=(n, DIMENSION)))
    chunks = [
        Chunk(id=f"d{i}#0", doc_id=f"d{i}", text="", domain="ab"[i % 2], metadata={"bucket": i % 50}) for i in range(n)
    ]
    return chunks, vectors


def rich_corpus(n, seed=0):
    """Chunks whose payloads use every field, with filter values of several types."""
    vectors = unit(np.random.default_rng(seed).normal(size=(n, DIMENSION)))
    chunks = [
        Chunk(id=f"d{i // 2}#{i % 2}", doc_id=f"d{i // 2}", text=f"passage {i} é ✓", domain="abc"[i % 3],
              title=f"Title {i // 2}", url=f"https://example.com/{i // 2}" if i % 4 else None,
              tenant=[None, "t1", "t2"][i % 3 - 1] if i % 5 else None,
              metadata={"bucket": i % 7, "lang": ["en", "fr", None][i % 3], "flag": i % 2 == 0, "tag": "x" * (i % 3)}
              | ({"extra": [1, 2]} if i % 11 == 0 else {}))
        for i in range(n)
    ]
    return chunks, vectors


def written(folder):
    index = faiss.read_index(str(folder / faiss_store.INDEX_FILE))
    return index, json.loads((folder / "meta.json").read_text())


def flushed(folder, chunks, vectors, **options) -> FaissStore:
    """A new store holding `chunks`, written to `folder`."""
    store = FaissStore.create(folder, DIMENSION, **options)
    store.upsert(chunks, vectors)
    store.flush()
    return store


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def graph_vectors(folder) -> str | None:
    return index_graph_vectors(written(folder)[0])
