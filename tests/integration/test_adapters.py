"""Adapters end to end: a short real training run, the registry, and serving through
vLLM's LoRA path via the registry resolver (no restart for new versions)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from retro_vllm.adapters.registry import AdapterRegistry
from retro_vllm.adapters.train_lora import TrainingConfig, train_adapter
from tests.integration.test_train_validate import CANDIDATES


@pytest.fixture(scope="module")
def tiny_adapter(model_path, tmp_path_factory):
    """A few real optimizer steps on two short examples (well under a minute on 2 cores)."""
    settings = TrainingConfig(rank=8, alpha=16, targets=["q_proj", "v_proj"], epochs=6, batch_size=2, top_k=2,
                              learning_rate=3e-3, seed=0)
    folder = tmp_path_factory.mktemp("tiny-adapter")
    result = train_adapter(model_path, CANDIDATES, preamble="Answer from the sources and cite them.",
                           settings=settings, output_dir=folder, progress=False)
    return folder, result


def test_training_loss_falls(tiny_adapter):
    folder, result = tiny_adapter
    assert result.steps == 6
    assert sum(result.losses[-2:]) / 2 < sum(result.losses[:2]) / 2
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()


@pytest.fixture(scope="module")
def registry(retro_config) -> AdapterRegistry:
    from retro_vllm.config import load_config

    return AdapterRegistry(load_config(retro_config).registry_dir)


def chat(server, model: str, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "What makes bread rise?"}], "max_tokens": 12,
            "temperature": 0, **extra}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)


@pytest.mark.engine
def test_registered_adapter_serves_by_name_and_new_versions_without_restart(retro_server, registry, tiny_adapter):
    folder, _ = tiny_adapter
    first = registry.register(folder, name="tiny", domain="cooking", base_model="SmolLM2-135M-Instruct")
    response = chat(retro_server, "tiny")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["model"] == first.served_name == "tiny@1"
    assert data["retro"]["adapter"] == "tiny@1" and data["retro"]["route"] == "model"
    assert data["retro"]["domain"] == "cooking" and {p["domain"] for p in data["retro"]["passages"]} == {"cooking"}
    assert response.headers["X-Retro-Adapter"] == "tiny@1"

    registry.register(folder, name="tiny", domain="cooking", base_model="SmolLM2-135M-Instruct")
    assert chat(retro_server, "tiny").json()["model"] == "tiny@2"
    listed = [m["id"] for m in httpx.get(f"{retro_server.base_url}/v1/models", timeout=30).json()["data"]]
    assert "tiny" in listed and "tiny@2" in listed
    assert chat(retro_server, "tiny@1").json()["model"] == "tiny@1"


@pytest.mark.engine
def test_corrupt_adapter_is_refused_and_others_keep_serving(retro_server, registry, tiny_adapter):
    folder, _ = tiny_adapter
    good = registry.register(folder, name="sturdy", domain="cooking", base_model="SmolLM2-135M-Instruct")
    bad = registry.register(folder, name="fragile", domain="cooking", base_model="SmolLM2-135M-Instruct")
    weights = registry.folder(bad.name, bad.version) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    response = chat(retro_server, "fragile")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "adapter_rejected" and "checksum" in error["message"]
    assert chat(retro_server, good.name).status_code == 200


@pytest.mark.engine
def test_adapter_for_another_base_or_above_rank_is_refused(retro_server, registry, tiny_adapter, tmp_path):
    folder, _ = tiny_adapter
    registry.register(folder, name="foreign", domain="cooking", base_model="Llama-3-8B")
    response = chat(retro_server, "foreign")
    assert response.status_code == 400 and "trained for 'Llama-3-8B'" in response.json()["error"]["message"]

    import json
    import shutil

    wide = Path(shutil.copytree(folder, tmp_path / "wide"))
    config = json.loads((wide / "adapter_config.json").read_text())
    config["r"] = 64
    (wide / "adapter_config.json").write_text(json.dumps(config))
    registry.register(wide, name="wide", domain="cooking", base_model="SmolLM2-135M-Instruct")
    response = chat(retro_server, "wide")
    assert response.status_code == 400 and "max-lora-rank" in response.json()["error"]["message"]


@pytest.mark.engine
def test_vllm_load_routes_are_closed(retro_server, tiny_adapter):
    folder, _ = tiny_adapter
    for route in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        response = httpx.post(f"{retro_server.base_url}{route}", json={"lora_name": "x", "lora_path": str(folder)},
                              timeout=30)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "adapter_management_closed"
