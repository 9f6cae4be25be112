"""`retro-vllm index` as a user runs it: a folder in, a new version out; killed mid-ingest,
the previous version still serves and the next run succeeds. Real embedder, real FAISS; no engine."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retro_vllm.config import load_config, write_demo_config
from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.retrieval.index import current_version, index_root
from retro_vllm.retrieval.ingest import ensure_index
from retro_vllm.retrieval.retriever import Retriever


def cli(*args, config: Path, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "retro_vllm.cli", "index", *args, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    home = tmp_path_factory.mktemp("ingest-home")
    config_path = write_demo_config(home)
    config = load_config(config_path)
    embedder = Embedder(config.embedder.path)
    ensure_index(config, embedder, progress=False)
    docs = tmp_path_factory.mktemp("docs")
    # Enough text that embedding takes a few seconds: time to kill the indexer in the middle.
    for n in range(400):
        (docs / f"note-{n:03d}.md").write_text(f"# Field note {n}\n" + f"Observation {n} about routers and switches. " * 60)
    (docs / "special.md").write_text("# Heliograph relay\nThe heliograph relay on hill 9 signals at dawn with mirrors.")
    (docs / "garbage.txt").write_bytes(b"\x00\xff\x00binary")
    return config_path, config, embedder, docs


def test_killed_mid_ingest_keeps_serving_then_recovers(setup):
    config_path, config, embedder, docs = setup
    root = index_root(config)
    before = current_version(root)
    serving = Retriever(config, embedder, before)
    baseline = [h.chunk.id for h in serving.search("Which port does HTTPS use?", top_k=3)]

    process = cli(str(docs), "--domain", "networking", config=config_path, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((root / "versions").glob(".build-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # inside the embedding loop
    assert process.poll() is None, "the indexer finished before it could be killed; give it more documents"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    assert current_version(root) == before
    assert list((root / "versions").glob(".build-*")), "the killed writer's staging folder is where it was"
    assert [h.chunk.id for h in Retriever(config, embedder, before).search("Which port does HTTPS use?", top_k=3)] == baseline

    process = cli(str(docs), "--domain", "networking", config=config_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert "401 added" in out and "1 files skipped" in out and "garbage.txt" in out
    after = current_version(root)
    assert after.name != before.name and not list((root / "versions").glob(".build-*"))
    # The server-side retriever notices the new version without a restart.
    hits = serving.search("heliograph mirrors at dawn", top_k=1, domain="networking")
    assert serving.version.name == after.name and hits[0].chunk.id == "special#0"
    manifest = json.loads((after.folder / "documents.json").read_text())["documents"]
    assert manifest["special"]["source"] == "ingest" and manifest["special"]["domain"] == "networking"


def test_delete_and_errors(setup):
    config_path, config, embedder, docs = setup
    process = cli("--delete", "special", config=config_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "1 deleted" in out
    retriever = Retriever(config, embedder, current_version(index_root(config)))
    assert all(h.chunk.doc_id != "special" for h in retriever.search("heliograph mirrors at dawn", top_k=5))

    for args, message in [
        (("--delete", "special"), "not in the index"),
        ((str(docs),), "--domain is required"),
        ((str(docs), "--domain", "astrology"), "unknown domain 'astrology'"),
        ((str(docs / "nope"), "--domain", "networking"), "corpus path not found"),
    ]:
        process = cli(*args, config=config_path)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2 and message in err, (args, err)
        assert "Traceback" not in err


def test_config_corpus_rebuild_keeps_ingested_documents(setup):
    config_path, config, embedder, docs = setup
    from retro_vllm.retrieval.ingest import build_index, ingest
    from retro_vllm.retrieval.types import Document

    ingest(config, embedder, [Document(id="kept", text="Carrier pigeons carry packets in RFC 1149.",
                                       domain="networking")], progress=False)
    version = build_index(config, embedder, progress=False)  # as after an edit of the config corpus
    retriever = Retriever(config, embedder, version)
    assert retriever.search("carrier pigeons RFC 1149", top_k=1)[0].chunk.doc_id == "kept"
    assert retriever.passage_counts()["astronomy"] > 0
