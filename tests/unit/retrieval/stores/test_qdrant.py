"""The Qdrant server store without a server: the filters and points it builds with
qdrant-client's classes, and a fast, clear failure when the server is unreachable. The store's
behaviour runs in tests/contract (on qdrant-client's local mode, and on a server when one is given)."""

import numpy as np
import pytest
from qdrant_client import models

from retro_vllm.retrieval.stores import qdrant
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.stores.qdrant_options import QdrantOptions
from retro_vllm.retrieval.types import Chunk

from .server_helpers import UNREACHABLE, chunk, fails_fast


def match_of(flt, key):
    [cond] = [c for c in flt.must if getattr(c, "key", None) == key]
    return cond.match


def test_qdrant_top_level_filters_are_payload_matches():
    flt = qdrant.qdrant_filter({"domain": "geo", "tenant": ["acme", "globex"], "doc_id": "d", "id": "d#0"})
    assert match_of(flt, "domain") == models.MatchValue(value="geo")
    assert match_of(flt, "tenant") == models.MatchAny(any=["acme", "globex"])
    assert match_of(flt, "doc_id") == models.MatchValue(value="d")
    assert match_of(flt, "id") == models.MatchValue(value="d#0")


def test_qdrant_metadata_filters_are_nested_paths():
    flt = qdrant.qdrant_filter({"lang": "en", "tags": ["a", "b"], "a.b": "x"})
    assert match_of(flt, "metadata.lang") == models.MatchValue(value="en")
    assert match_of(flt, "metadata.tags") == models.MatchAny(any=["a", "b"])
    assert match_of(flt, 'metadata."a.b"') == models.MatchValue(value="x")
    with pytest.raises(StoreError, match="double quote"):
        qdrant.qdrant_filter({'a"b': "x"})


def test_qdrant_numbers_are_ranges_and_mixed_lists_alternatives():
    # A range matches integer and float payloads alike, as Python's 1 == 1.0 does.
    [score] = qdrant.qdrant_filter({"score": 0.5}).must
    assert score.range == models.Range(gte=0.5, lte=0.5)
    [year] = qdrant.qdrant_filter({"year": [2023, 2024]}).must
    assert year == models.Filter(should=[
        models.FieldCondition(key="metadata.year", range=models.Range(gte=2023, lte=2023)),
        models.FieldCondition(key="metadata.year", range=models.Range(gte=2024, lte=2024)),
    ])
    [mixed] = qdrant.qdrant_filter({"flag": [True, "yes"]}).must
    assert mixed == models.Filter(should=[
        models.FieldCondition(key="metadata.flag", match=models.MatchAny(any=["yes"])),
        models.FieldCondition(key="metadata.flag", match=models.MatchValue(value=True)),
    ])
    [missing] = qdrant.qdrant_filter({"lang": None}).must
    assert missing == models.IsEmptyCondition(is_empty=models.PayloadField(key="metadata.lang"))
    [nothing] = qdrant.qdrant_filter({"domain": []}).must
    assert nothing == models.HasIdCondition(has_id=[])
    assert qdrant.qdrant_filter(None) is None and qdrant.qdrant_filter({}) is None


def test_qdrant_point_round_trips_the_chunk():
    point = qdrant.to_point(chunk(), np.array([0.6, 0.8], dtype=np.float32))
    assert point.id == qdrant.point_id("d#0")
    assert point.vector == pytest.approx([0.6, 0.8])
    assert Chunk.from_payload(point.payload) == chunk()
    assert point.payload["metadata"] == {"lang": "en", "year": 2024}


def test_unreachable_qdrant_fails_fast():
    message = fails_fast(lambda: qdrant.QdrantStore(QdrantOptions(url=UNREACHABLE, timeout_s=1), 3))
    assert message.startswith(f"Qdrant at {UNREACHABLE} unreachable:")
