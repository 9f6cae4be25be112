"""What both Qdrant stores share (qdrant_common.py): point ids and payload paths."""

import uuid

import pytest

from retro_vllm.retrieval.stores import qdrant, qdrant_common, weaviate_schema
from retro_vllm.retrieval.stores.base import StoreError


def test_chunk_ids_map_to_the_same_uuid5_every_time():
    first = qdrant.point_id("d#0")
    assert first == qdrant.point_id("d#0") != qdrant.point_id("d#1")
    assert uuid.UUID(first).version == 5
    assert weaviate_schema.chunk_uuid("d#0") == first


def test_point_ids_never_change():
    # Stored points carry them: a Qdrant collection and every copy of a Qdrant Edge folder.
    assert qdrant.point_id("d#0") == "f9ab03a0-a4d7-5f00-983d-a8b7ed2c9212"
    edge = qdrant_common.point_id("d#0", qdrant_common.EDGE_NAMESPACE)
    assert edge == uuid.UUID("ed16711a-dcae-59c0-a6f7-286ecd61443e")


def test_payload_paths():
    assert [qdrant_common.payload_path(k) for k in ("domain", "id", "lang", "a.b", "x-1")] == [
        "domain", "id", "metadata.lang", 'metadata."a.b"', 'metadata."x-1"']
    with pytest.raises(StoreError, match="double quote"):
        qdrant_common.payload_path('a"b')
