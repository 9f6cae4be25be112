"""The `retro-vllm train` workflow (`adapters/pipeline.py`) end to end with training, validation,
retrieval and the model stubbed out: the held-out split, what it says, the gate, what it registers.
Training for real runs in tests/integration/test_train_validate.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from retro_vllm.adapters import pipeline
from retro_vllm.adapters.examples import Candidates, QARecord
from retro_vllm.adapters.methods import TrainingConfig
from retro_vllm.adapters.registry import AdapterRegistry
from retro_vllm.adapters.train_lora import TrainResult
from retro_vllm.adapters.validate import Figures, Validation
from retro_vllm.config import load_config
from retro_vllm.retrieval.types import Chunk, ScoredChunk

DEMO_ADAPTER = Path(__file__).resolve().parents[2] / "retro_vllm" / "demo" / "adapters" / "cooking"
# SmolLM2-135M-Instruct's layer sizes: the registry checks the adapter's shapes against them.
BASE_CONFIG = {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
               "num_hidden_layers": 30}
BASE = Figures(loss=2.0, f1=0.30, valid_citations=0.20)


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """A config with one domain and ten QA records; every heavy step replaced by a stand-in."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "d0", "text": "A passage."}))
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}", "doc_id": f"doc{i}"})
                            for i in range(10)))
    path = tmp_path / "retro.yaml"
    path.write_text(yaml.safe_dump({"home": str(tmp_path / "home"),
                                    "domains": [{"name": "cooking", "corpus": [str(corpus)], "qa": str(qa)}]}))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(BASE_CONFIG))
    calls: dict = {"validated": []}

    def candidates(_retriever, _domain, records, *, pool):
        chunk = ScoredChunk(Chunk(id="d0#0", doc_id="d0", text="A passage.", domain="cooking"), 0.5)
        return [Candidates(record, chunk, []) for record in records]

    def train_adapter(model_path, candidates, *, output_dir, device, settings, **_):
        calls.update(model=model_path, examples=len(candidates), device=device, method=settings.method)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(DEMO_ADAPTER / name, output_dir / name)
        return TrainResult(losses=[2.5, 1.5], steps=3, seconds=1.0, examples=len(candidates))

    def validate(model_path, adapter_dir, questions, *, max_new_tokens, **_):
        calls["validated"].append([c.record.doc_id for c in questions])
        return Validation(adapter=calls.get("figures", Figures(1.0, 0.5, 0.9)), base=BASE, n=len(questions),
                          max_new_tokens=max_new_tokens)

    monkeypatch.setattr(pipeline, "prepare_model", lambda config: model)
    monkeypatch.setattr(pipeline, "prepare_index", lambda config: (None, None))
    monkeypatch.setattr("retro_vllm.retrieval.retriever.Retriever", lambda config, embedder, version: None)
    monkeypatch.setattr("retro_vllm.adapters.examples.gather_candidates", candidates)
    monkeypatch.setattr("retro_vllm.adapters.train_lora.train_adapter", train_adapter)
    monkeypatch.setattr("retro_vllm.adapters.validate.validate", validate)
    return load_config(path), calls


def test_trains_validates_on_the_held_out_questions_and_registers(stubbed):
    config, calls = stubbed
    said: list[str] = []
    manifest = pipeline.train_domain_adapter(config, "cooking", TrainingConfig(seed=3), holdout=0.2, device="cpu",
                                             say=said.append)
    assert manifest.served_name == "cooking@1" and manifest.domain == "cooking" and manifest.validation["better"]
    held = manifest.training["heldout_doc_ids"]
    assert len(held) == 2 and calls["validated"] == [held] and calls["examples"] == 8
    assert manifest.training["device"] == "cpu" and manifest.training["steps"] == 3 and calls["method"] == "lora"
    assert said[0] == "trained lora on 8 examples, 3 steps in 1s; loss 2.500 -> 1.500"
    assert said[1].startswith("validation: held-out loss 1.0000 vs base 2.0000") and said[1].endswith(
        "; better than the base model")
    assert AdapterRegistry(config.registry_dir).resolve("cooking").version == 1
    # The same seed holds out the same questions.
    again = pipeline.train_domain_adapter(config, "cooking", TrainingConfig(seed=3), device="cpu", say=said.append)
    assert again.version == 2 and again.training["heldout_doc_ids"] == held


def test_the_gate_refuses_an_adapter_no_better_than_the_base_model(stubbed):
    config, calls = stubbed
    calls["figures"] = BASE
    with pytest.raises(pipeline.TrainError, match="^not registered: .*--force"):
        pipeline.train_domain_adapter(config, "cooking", TrainingConfig(), device="cpu", say=lambda _: None)
    assert AdapterRegistry(config.registry_dir).names() == []
    forced = pipeline.train_domain_adapter(config, "cooking", TrainingConfig(), device="cpu", force=True,
                                           say=lambda _: None)
    assert forced.validation["forced"] is True and forced.validation["better"] is False


def test_without_register_nothing_is_validated_or_registered(stubbed, tmp_path):
    config, calls = stubbed
    out = tmp_path / "kept"
    assert pipeline.train_domain_adapter(config, "cooking", TrainingConfig(), register=False, output=out,
                                         device="cpu", say=lambda _: None) is None
    assert calls["validated"] == [] and (out / "adapter_model.safetensors").is_file()
    assert AdapterRegistry(config.registry_dir).names() == []


def test_training_device_names_the_flag():
    assert pipeline.training_device("cpu") == "cpu"
    with pytest.raises(pipeline.TrainError, match="choose auto, cpu, cuda or cuda:N"):
        pipeline.training_device("tpu")
