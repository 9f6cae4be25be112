import numpy as np
import pytest

from retro_vllm.retrieval.index import CURRENT, current_version, open_version, publish
from retro_vllm.retrieval.stores.faiss import FaissStore
from retro_vllm.retrieval.types import Chunk


def store_with(n: int) -> FaissStore:
    store = FaissStore(2)
    chunks = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=str(i), domain="a") for i in range(n)]
    store.upsert(chunks, np.tile(np.asarray([[1, 0]], dtype=np.float32), (n, 1)))
    return store


def test_publish_swaps_versions_and_keeps_a_few(tmp_path):
    for n in range(1, 6):
        version = publish(tmp_path, store_with(n), fingerprint=f"f{n}", keep=3)
    assert (tmp_path / CURRENT).read_text().strip() == version.name == "v000005"
    assert current_version(tmp_path).fingerprint == "f5"
    assert open_version(current_version(tmp_path)).count() == 5
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v000003", "v000004", "v000005"]


def test_failed_write_leaves_the_previous_version_current(tmp_path, monkeypatch):
    publish(tmp_path, store_with(2), fingerprint="old")

    def broken_save(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.faiss").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(FaissStore, "save", broken_save)
    with pytest.raises(OSError):
        publish(tmp_path, store_with(3), fingerprint="new")
    version = current_version(tmp_path)
    assert version.fingerprint == "old"
    assert open_version(version).count() == 2
    assert not list((tmp_path / "versions").glob(".build-*"))


def test_stale_staging_from_a_killed_builder_is_cleaned(tmp_path):
    (tmp_path / "versions" / ".build-dead").mkdir(parents=True)
    publish(tmp_path, store_with(1), fingerprint="x")
    assert not (tmp_path / "versions" / ".build-dead").exists()


def test_no_index_yet(tmp_path):
    assert current_version(tmp_path) is None
