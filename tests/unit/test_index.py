"""Index versions and ingestion on every embedded backend: write new, then swap; a failed or
killed writer changes nothing; documents are added, replaced, deduplicated and deleted."""

import numpy as np
import pytest

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import CURRENT, DocumentEntry, IndexWriter, current_version, index_root, open_store
from retro_vllm.retrieval.ingest import IngestError, build_index, ingest
from retro_vllm.retrieval.retriever import Retriever
from retro_vllm.retrieval.types import Chunk, Document

BACKENDS = ["faiss", "qdrant-edge"]


def config(tmp_path, backend, **retrieval):
    return RetroConfig.model_validate({
        "home": str(tmp_path / "home"),
        "retrieval": {"backend": backend, **retrieval},
        "domains": [{"name": "net"}, {"name": "food"}],
    })


def write(cfg, n: int) -> str:
    with IndexWriter(cfg, dimension=2, embedder_id="test") as writer:
        chunks = [Chunk(id=f"d{n}#0", doc_id=f"d{n}", text=str(n), domain="net")]
        writer.upsert(f"d{n}", DocumentEntry("net", "ingest", str(n), 1), chunks, np.asarray([[1, 0]], np.float32))
        return writer.commit().name


@pytest.mark.parametrize("backend", BACKENDS)
def test_commits_swap_versions_and_keep_a_few(tmp_path, backend):
    cfg = config(tmp_path, backend)
    for n in range(1, 6):
        name = write(cfg, n)
    root = index_root(cfg)
    assert (root / CURRENT).read_text().strip() == name == "v000005"
    version = current_version(root)
    assert version.backend == backend and open_store(cfg, version, 2).count() == 5
    assert sorted(p.name for p in (root / "versions").iterdir() if not p.name.startswith(".")) == [
        "v000003", "v000004", "v000005"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_embedded_store_opens_without_asking_the_dimension(tmp_path, backend):
    cfg = config(tmp_path, backend)
    write(cfg, 1)

    def dimension():
        raise AssertionError("an embedded store reads its own dimension")

    assert open_store(cfg, current_version(index_root(cfg)), dimension).count() == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_writer_that_fails_changes_nothing(tmp_path, backend):
    cfg = config(tmp_path, backend)
    write(cfg, 1)
    before = current_version(index_root(cfg))
    with pytest.raises(RuntimeError, match="disk full"):
        with IndexWriter(cfg, dimension=2, embedder_id="test") as writer:
            writer.delete(["d1"])
            raise RuntimeError("disk full")
    assert current_version(index_root(cfg)) == before
    assert open_store(cfg, before, 2).count() == 1
    assert not list((index_root(cfg) / "versions").glob(".build-*"))


def test_stale_staging_from_a_killed_writer_is_cleaned(tmp_path):
    cfg = config(tmp_path, "faiss")
    (index_root(cfg) / "versions" / ".build-dead").mkdir(parents=True)
    write(cfg, 1)
    assert not (index_root(cfg) / "versions" / ".build-dead").exists()


def test_no_index_yet(tmp_path):
    assert current_version(tmp_path) is None


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def doc(doc_id, text, domain="net", **kwargs):
    return Document(id=doc_id, text=text, domain=domain, title=kwargs.pop("title", doc_id), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ingest_replace_dedupe_delete(tmp_path, backend, embedder):
    cfg = config(tmp_path, backend, mode="hybrid")
    report = ingest(cfg, embedder, [
        doc("tls", "HTTPS runs HTTP over TLS on TCP port 443."),
        doc("dns", "DNS resolves host names to addresses, usually over UDP port 53."),
        doc("copy", "HTTPS runs HTTP over TLS on TCP port 443.", title="tls"),  # same chunk text as tls
        doc("bread", "Knead the dough for ten minutes until it is smooth.", domain="food", tenant="acme"),
    ], progress=False)
    assert (report.added, report.duplicate_chunks, report.chunks) == (4, 1, 3)
    retriever = Retriever(cfg, embedder, report.version)
    assert retriever.search("Which port does DNS use?", top_k=1)[0].chunk.doc_id == "dns"
    hybrid = retriever.search("port 443", top_k=2, domain="net")
    assert hybrid[0].chunk.doc_id == "tls" and hybrid[0].stage == "hybrid" and {"dense", "bm25"} <= set(hybrid[0].scores)
    assert [h.chunk.doc_id for h in retriever.search("dough", top_k=3, filters={"tenant": "acme"})] == ["bread"]
    assert retriever.search("dough", top_k=3, filters={"tenant": "other"}) == []

    again = ingest(cfg, embedder, [doc("dns", "DNS resolves host names to addresses, usually over UDP port 53.")],
                   progress=False)
    assert again.unchanged == 1 and again.version.name == report.version.name  # nothing to write: no new version

    edited = ingest(cfg, embedder, [doc("dns", "DNS answers over UDP port 53 and falls back to TCP.")], progress=False)
    assert edited.replaced == 1
    texts = [h.chunk.text for h in retriever.search("DNS port", top_k=5, domain="net")]  # picks up the new version
    assert retriever.version.name == edited.version.name
    assert any("falls back to TCP" in t for t in texts) and not any("host names" in t for t in texts)

    gone = ingest(cfg, embedder, [], delete=["dns", "missing"], progress=False)
    assert (gone.deleted, gone.deleted_chunks, gone.missing) == (1, 1, ["missing"])
    assert all(h.chunk.doc_id != "dns" for h in retriever.search("DNS port", top_k=5))


def test_bad_batches_write_nothing(tmp_path, embedder):
    cfg = config(tmp_path, "faiss")
    first = ingest(cfg, embedder, [doc("a", "alpha")], progress=False).version
    with pytest.raises(IngestError, match="unknown domain 'astrology'"):
        ingest(cfg, embedder, [doc("b", "beta", domain="astrology")], progress=False)
    with pytest.raises(IngestError, match="appears twice"):
        ingest(cfg, embedder, [doc("b", "beta"), doc("b", "gamma")], progress=False)
    assert current_version(index_root(cfg)) == first


def test_backend_change_rebuilds_and_keeps_ingested_documents(tmp_path, embedder):
    cfg = config(tmp_path, "faiss")
    ingest(cfg, embedder, [doc("pigeon", "Carrier pigeons carry IP packets in RFC 1149.")], progress=False)
    moved = config(tmp_path, "qdrant-edge")
    version = build_index(moved, embedder, progress=False)
    assert version.backend == "qdrant-edge"
    hits = Retriever(moved, embedder, version).search("carrier pigeons", top_k=1)
    assert hits[0].chunk.doc_id == "pigeon"
