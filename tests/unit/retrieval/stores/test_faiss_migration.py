"""Folders written before chunks.sqlite (chunks.jsonl) open unchanged and convert at the next flush."""

import json

from retro_vllm.retrieval.stores.faiss import FaissStore

from .faiss_corpus import files, flushed, rich_corpus


def old_format(folder):
    """Turn a flushed folder into the layout written before chunks.sqlite: chunks.jsonl."""
    import sqlite3

    connection = sqlite3.connect(folder / "chunks.sqlite")
    with (folder / "chunks.jsonl").open("w", encoding="utf-8") as handle:
        for int_id, payload in connection.execute("SELECT int_id, payload FROM chunks ORDER BY int_id"):
            handle.write(json.dumps({"int_id": int_id, **json.loads(payload)}, ensure_ascii=False) + "\n")
    connection.close()
    (folder / "chunks.sqlite").unlink()


def test_a_folder_with_chunks_jsonl_opens_unchanged_and_converts_at_flush(tmp_path):
    chunks, vectors = rich_corpus(40)
    store = flushed(tmp_path / "s", chunks, vectors, index="hnsw")
    store.close()
    old_format(tmp_path / "s")
    before = files(tmp_path / "s")
    reader = FaissStore.open(tmp_path / "s", index="hnsw")
    assert reader.count() == 40 and reader.search(vectors[5], top_k=1)[0].chunk == chunks[5]
    in_a0 = sum(c.domain == "a" and c.metadata["bucket"] == 0 for c in chunks)
    assert reader.count({"domain": "a", "bucket": 0}) == in_a0
    reader.close()
    assert files(tmp_path / "s") == before  # a reader converts nothing

    writer = FaissStore.open(tmp_path / "s", index="hnsw")
    writer.delete(doc_ids=["d0"])
    writer.flush()
    assert set(files(tmp_path / "s")) == {"index.faiss", "chunks.sqlite", "meta.json"}
    again = FaissStore.open(tmp_path / "s", index="hnsw")
    assert again.count() == 38 and again.search(vectors[5], top_k=1)[0].chunk == chunks[5]

    old_format(tmp_path / "s")  # and with no write at all
    FaissStore.open(tmp_path / "s", index="hnsw").flush()
    assert set(files(tmp_path / "s")) == {"index.faiss", "chunks.sqlite", "meta.json"}
    assert FaissStore.open(tmp_path / "s", index="hnsw").count() == 38
