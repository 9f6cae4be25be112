"""What the Qdrant and Weaviate unit tests share: a chunk using every field, an address nothing
listens on, and the check that a store fails there at once, in one line."""

import time

import pytest

from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.types import Chunk

# Nothing listens on the discard port of the loopback interface.
UNREACHABLE = "http://127.0.0.1:9"


def chunk(**changes):
    fields = dict(id="d#0", doc_id="d", text="Paris is in France.", domain="geo", title="Paris",
                  url="https://example.org/paris", tenant="acme", metadata={"lang": "en", "year": 2024})
    return Chunk(**{**fields, **changes})


def fails_fast(make):
    begin = time.monotonic()
    with pytest.raises(StoreError) as raised:
        make()
    assert time.monotonic() - begin < 5
    message = str(raised.value)
    assert "\n" not in message
    return message
