"""The API server's ONNX query embedder gives sentence-transformers' vectors, and falls back to
sentence-transformers whenever it cannot promise that."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from retro_vllm.config import RetroConfig
from retro_vllm.retrieval.embedder import Embedder, packaged_embedder_path
from retro_vllm.retrieval.onnx_embedder import INFO_FILE, OnnxEmbedder, _TokenTable, ensure_export, serving_embedder

TEXTS = ["How long should bread dough rise?", "TCP port 443", "x", "Pulsars were discovered by Jocelyn Bell Burnell "
         "in 1967 while she was a graduate student. " * 30]


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("embedders")


@pytest.fixture(scope="module")
def exported(export_root):
    folder = ensure_export(packaged_embedder_path(), export_root)
    assert folder is not None and (folder / INFO_FILE).is_file()
    return folder


def test_onnx_vectors_match_sentence_transformers_single_and_batched(exported):
    reference = Embedder().embed(TEXTS)
    onnx = OnnxEmbedder(None, exported, batch_size=3)
    assert onnx.dimension == reference.shape[1]
    batched = onnx.embed(TEXTS)  # padded batches of 3 then 1
    single = np.stack([onnx.embed_query(t) for t in TEXTS])
    assert np.abs(batched - reference).max() < 1e-4
    assert np.abs(single - reference).max() < 1e-4
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert onnx.embed([]).shape == (0, reference.shape[1])


def test_export_is_reused_and_tied_to_the_folder_contents(exported, export_root, tmp_path):
    assert ensure_export(packaged_embedder_path(), export_root) == exported
    copy = tmp_path / "embedder"
    shutil.copytree(packaged_embedder_path(), copy)
    (copy / "tokenizer.json").unlink()  # without it the server's tokenizer could differ: no export
    assert ensure_export(copy, export_root) is None


def test_serving_embedder_follows_the_runtime_setting(tmp_path, exported):
    config = RetroConfig.model_validate({"home": str(tmp_path), "embedder": {"runtime": "torch"}})
    assert type(serving_embedder(config)) is Embedder
    # A broken embedder folder cannot be exported: auto falls back, onnx refuses to start.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{}")
    auto = RetroConfig.model_validate({"home": str(tmp_path), "embedder": {"path": str(broken)}})
    assert type(serving_embedder(auto)) is Embedder
    strict = RetroConfig.model_validate({"home": str(tmp_path), "embedder": {"path": str(broken), "runtime": "onnx"}})
    with pytest.raises(RuntimeError, match="could not be exported"):
        serving_embedder(strict)


def test_token_table_lives_outside_the_graph(exported):
    import onnx

    info = json.loads((exported / INFO_FILE).read_text())
    table = np.load(exported / info["table"])
    graph = onnx.load(str(exported / "model.onnx")).graph
    # The table is read row by row from its file, never loaded whole into the session.
    assert all(tuple(w.dims) != table.shape for w in graph.initializer)
    ids = np.array([[101, 7592, 2088, 102, 0], [101, 102, 0, 0, 0]])
    assert np.array_equal(_TokenTable(exported / info["table"]).gather(ids), table[ids])
    with pytest.raises(ValueError, match="out of range"):
        _TokenTable(exported / info["table"]).gather(np.array([[table.shape[0]]]))


def test_a_damaged_export_falls_back_or_refuses(tmp_path, exported):
    damaged = tmp_path / "embedders"
    shutil.copytree(exported.parent, damaged)
    folder = damaged / exported.name
    info = json.loads((folder / INFO_FILE).read_text())
    table = folder / info["table"]
    table.write_bytes(table.read_bytes()[:4096])  # cut short
    with pytest.raises(ValueError, match="truncated"):
        _TokenTable(table)
    config = RetroConfig.model_validate({"home": str(tmp_path)})
    assert type(serving_embedder(config)) is Embedder
    strict = RetroConfig.model_validate({"home": str(tmp_path), "embedder": {"runtime": "onnx"}})
    with pytest.raises(RuntimeError, match="unusable"):
        serving_embedder(strict)
