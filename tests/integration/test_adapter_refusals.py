"""Bad adapters that reach the registry anyway (edited by hand, or fine for another server) are
refused at load with one clear 400, and the running server keeps serving the others. Corrupt
weights, another base model and a LoRA rank above the limit are in test_adapters.py; the
registration side of every case is in tests/unit/test_registry_methods.py."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from retro_vllm.adapters.registry import AdapterRegistry, sha256_file

pytestmark = pytest.mark.engine

BASE = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def registry(retro_config) -> AdapterRegistry:
    from retro_vllm.config import load_config

    return AdapterRegistry(load_config(retro_config).registry_dir)


def build(model_path, folder, config, scale: float):
    """A real peft adapter on the real base model, with non-zero weights (no training)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name or ".ia3_l." in name:
                param.copy_((1 if ".ia3_l." in name else 0) + scale * torch.randn_like(param))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_folder(model_path, tmp_path_factory):
    from peft import LoraConfig

    return build(model_path, tmp_path_factory.mktemp("refusals") / "lora",
                 LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), 0.01)


def chat(server, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "What makes bread rise?"}], "max_tokens": 8,
            "temperature": 0}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)


def assert_refused(server, name: str, fragment: str, good: str) -> None:
    response = chat(server, name)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "adapter_rejected" and fragment in error["message"], error
    assert chat(server, good).status_code == 200  # the server keeps serving the others


def edit_version(registry, name: str, config_update: dict, manifest_update: dict) -> None:
    """Change a stored version and keep its checksums right, as a hand edit or an older
    registry might: only verify's own checks can catch it."""
    folder = registry.folder(name, registry.current(name))
    config_path, manifest_path = folder / "adapter_config.json", folder / "manifest.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **config_update}))
    manifest = {**json.loads(manifest_path.read_text()), **manifest_update}
    manifest["files"]["adapter_config.json"] = sha256_file(config_path)
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def good(retro_server, registry, model_path, lora_folder) -> str:
    manifest = registry.register(lora_folder, name="steady", domain="cooking", base_model=BASE,
                                 base_model_path=model_path)
    assert chat(retro_server, "steady").status_code == 200
    return manifest.name


def test_manifest_that_does_not_match_the_weights(retro_server, registry, model_path, lora_folder, good):
    registry.register(lora_folder, name="mismatched", domain="cooking", base_model=BASE, base_model_path=model_path)
    edit_version(registry, "mismatched", {}, {"targets": ["k_proj", "q_proj", "v_proj"]})
    assert_refused(retro_server, "mismatched", "does not match the manifest", good)


def test_unsupported_target_module(retro_server, registry, model_path, lora_folder, good):
    registry.register(lora_folder, name="headed", domain="cooking", base_model=BASE, base_model_path=model_path)
    edit_version(registry, "headed", {"target_modules": ["lm_head", "q_proj", "v_proj"]},
                 {"targets": ["lm_head", "q_proj", "v_proj"]})
    assert_refused(retro_server, "headed", "targets lm_head, which vLLM's LoRA does not serve", good)


def test_ia3_above_this_servers_rank(retro_server, registry, model_path, tmp_path, good):
    """A faithful IA3 (rank 192) registered for a rank-256 server, requested from this one
    (adapters.max_lora_rank 16): refused with the flag that would serve it."""
    from peft import IA3Config

    folder = build(model_path, tmp_path / "ia3", IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[]),
                   0.1)
    manifest = registry.register(folder, name="scaled", domain="cooking", base_model=BASE, base_model_path=model_path,
                                 type="ia3")
    assert (manifest.type, manifest.rank) == ("ia3", 192)
    assert_refused(retro_server, "scaled", "rank 192, above this server's --max-lora-rank 16", good)
