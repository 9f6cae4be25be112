"""Folders written before `chunks.sqlite` hold `chunks.jsonl` instead: each line a chunk's payload
with its int id, and no exact vectors. Opening one loads it into a private temporary database
(the folder may be served, so it is not touched); the store's next `flush()` writes
`chunks.sqlite` and removes `chunks.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

from retro_vllm.retrieval.stores.faiss_payloads import REBUILD_BATCH, Payloads, columns_of
from retro_vllm.retrieval.types import Chunk

LEGACY_CHUNKS_FILE = "chunks.jsonl"


def payloads_from_jsonl(path: Path, index) -> Payloads:
    """The payload table of a folder written before chunks.sqlite, in a private temporary
    database, not in the folder; the vectors are the ones `index` (then float32 or float16) holds."""

    def rows():
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                int_id = int(record.pop("int_id"))
                Chunk.from_payload(record)  # a record with unknown or missing fields is corrupt
                yield (int_id, *columns_of(record))

    payloads = Payloads.empty("")
    with payloads.transaction():
        payloads.insert(rows())
        ids = payloads.all_ids(locked=True)
        for start in range(0, ids.size, REBUILD_BATCH):
            batch = ids[start:start + REBUILD_BATCH]
            payloads.insert_vectors(batch, index.reconstruct_batch(batch))
    return payloads
