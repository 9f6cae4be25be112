"""`retro_vllm.prepare`: what `retro-vllm serve` readies before vLLM starts, and the server's
start-up steps then only opening it (building is for launches that prepared nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from retro_vllm import prepare
from retro_vllm.adapters.registry import AdapterRegistry
from retro_vllm.config import load_config
from retro_vllm.retrieval.ingest import ensure_index

DEMO_ADAPTER = Path(__file__).resolve().parents[2] / "retro_vllm" / "demo" / "adapters" / "cooking"


@pytest.fixture
def config(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"Passage {i} about topic {i}."}) for i in range(3)))
    path = tmp_path / "retro.yaml"
    path.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "domains": [
        {"name": "cooking", "corpus": [str(corpus)], "adapter_seed": str(DEMO_ADAPTER)}]}))
    return load_config(path)


class NoEmbedding:
    """An embedder that may be named but not used: opening an index needs no vectors."""

    def __init__(self, path):
        self.path = path

    def __getattr__(self, name):
        raise AssertionError(f"the server built something: embedder.{name}")


def test_what_serve_prepared_the_server_only_opens(config):
    said: list[str] = []
    embedder, version = prepare.prepare_index(config, notify=said.append)
    prepare.seed_adapters(config, notify=said.append)
    assert said == ["registered shipped adapter cooking@1"]

    # The server's start-up steps (rag/state.py), after `retro-vllm serve` prepared:
    assert ensure_index(config, NoEmbedding(embedder.path), progress=False) == version
    prepare.seed_adapters(config, notify=said.append)
    assert len(said) == 1 and AdapterRegistry(config.registry_dir).versions("cooking") == [1]


def test_problems_are_one_line_errors(config, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert prepare.checkpoint_problem(broken) == "no *.safetensors weights"
    config.model.path = broken
    with pytest.raises(prepare.PrepareError, match=r"^model at .* is unusable: no \*.safetensors weights \(model.path"):
        prepare.prepare_model(config)
    config.domains[0].adapter_seed = tmp_path / "missing"
    with pytest.raises(prepare.PrepareError, match="^cannot import shipped adapters into "):
        prepare.seed_adapters(config)
