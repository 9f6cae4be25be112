"""Registration of every peft method, and the refusals of bad adapters at registration and at
load (verify), each with one clear message and nothing left behind."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from retro_vllm.adapters.checks import sha256_file
from retro_vllm.adapters.registry import AdapterError, AdapterRegistry
from tests.unit.test_registry import SHAPES, TINY, lora_tensors, peft_folder


@pytest.fixture
def registry(tmp_path):
    return AdapterRegistry(tmp_path / "registry")


@pytest.fixture
def base(tmp_path):
    """A base model folder as the registry reads it: config.json and safetensors weights."""
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    generator = torch.Generator().manual_seed(7)
    weights = {}
    for layer in range(2):
        for target in ("q_proj", "k_proj", "v_proj", "o_proj"):
            weights[f"model.layers.{layer}.self_attn.{target}.weight"] = torch.randn(*SHAPES[target], generator=generator)
        for target in ("gate_proj", "up_proj", "down_proj"):
            weights[f"model.layers.{layer}.mlp.{target}.weight"] = torch.randn(*SHAPES[target], generator=generator)
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def register(registry, source, base=None, **fields):
    return registry.register(source, name=fields.pop("name", "legal"), domain="law", base_model="base",
                             base_model_path=base, **fields)


def adalora_folder(path, *, init_r=4, zeroed=(1,)):
    path.mkdir()
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for layer in range(2):
        prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{prefix}.lora_A"] = torch.randn(init_r, 32, generator=generator)
        tensors[f"{prefix}.lora_B"] = torch.randn(32, init_r, generator=generator)
        tensors[f"{prefix}.lora_E"] = torch.randn(init_r, 1, generator=generator)
        tensors[f"{prefix}.lora_E"][list(zeroed)] = 0.0
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "ADALORA", "init_r": init_r, "target_r": 2, "lora_alpha": 8, "r": 8, "target_modules": ["q_proj"],
         "rank_pattern": None, "bias": "none"}))
    return path


def ia3_folder(path, targets=("k_proj", "v_proj")):
    path.mkdir()
    tensors = {}
    for layer in range(2):
        for target in targets:
            out_dim, in_dim = SHAPES[target]
            group = "mlp" if target.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"
            shape = (1, in_dim) if target == "down_proj" else (out_dim, 1)
            tensors[f"base_model.model.model.layers.{layer}.{group}.{target}.ia3_l"] = 1 + 0.1 * torch.randn(*shape)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "IA3", "target_modules": list(targets),
         "feedforward_modules": ["down_proj"] if "down_proj" in targets else []}))
    return path


def prompt_folder(path, tokens=5, dim=32):
    path.mkdir()
    save_file({"prompt_embeddings": torch.randn(tokens, dim)}, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": tokens, "token_dim": dim, "task_type": "CAUSAL_LM",
         "num_transformer_submodules": 1}))
    return path


def refused(registry, source, match, base=None, name="legal", **fields):
    with pytest.raises(AdapterError, match=match) as info:
        register(registry, source, base, name=name, **fields)
    assert info.value.kind == "rejected"
    assert str(info.value).count("\n") == 0
    assert registry.versions(name) == [] and not (registry.root / name).exists()  # nothing written


# -- each method ------------------------------------------------------------------------
def test_lora_records_its_method(registry, tmp_path, base):
    manifest = register(registry, peft_folder(tmp_path / "lora"), base)
    assert (manifest.type, manifest.rank, manifest.targets) == ("lora", 8, ["q_proj", "v_proj"])
    assert manifest.method["peft_type"] == "LORA" and manifest.method["exact"]


def test_adalora_is_stored_as_its_exact_lora(registry, tmp_path, base):
    manifest = register(registry, adalora_folder(tmp_path / "ada"), base)
    assert (manifest.type, manifest.rank, manifest.alpha) == ("adalora", 3, 3)  # one of 4 ranks pruned
    assert manifest.method["peft_type"] == "ADALORA" and manifest.method["served_as"] == "lora"
    assert manifest.method["pruned_ranks"] == 2 and manifest.method["exact"]
    folder = registry.verify(manifest, base_model="base", max_rank=8)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 3, 3)


def test_ia3_on_k_and_v_is_stored_as_a_rank_16_lora(registry, tmp_path, base):
    manifest = register(registry, ia3_folder(tmp_path / "ia3"), base, type="ia3")
    assert (manifest.type, manifest.rank, manifest.targets) == ("ia3", 16, ["k_proj", "v_proj"])
    assert registry.verify(manifest, base_model="base", max_rank=16)
    with pytest.raises(AdapterError, match="rank 16, above this server's --max-lora-rank 8"):
        registry.verify(manifest, base_model="base", max_rank=8)


def test_ia3_needs_the_base_weights(registry, tmp_path):
    refused(registry, ia3_folder(tmp_path / "ia3"), "base_model_path")


def test_prompt_tuning_is_kept_as_is(registry, tmp_path, base):
    manifest = register(registry, prompt_folder(tmp_path / "prompt"), base)
    assert (manifest.type, manifest.rank, manifest.alpha, manifest.targets) == ("prompt", 0, 0, [])
    assert manifest.method["num_virtual_tokens"] == 5 and manifest.method["token_dim"] == 32
    folder = registry.verify(manifest, base_model="base", max_rank=1)  # never in a LoRA slot: no rank limit
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["peft_type"] == "PROMPT_TUNING"
    data = json.loads((folder / "manifest.json").read_text())
    data["method"]["num_virtual_tokens"] = 9
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="does not match the manifest"):
        registry.verify(registry.resolve("legal@1"))


def test_prompt_for_another_model_is_refused(registry, tmp_path, base):
    refused(registry, prompt_folder(tmp_path / "prompt", dim=64), "hidden size is 32", base)


def test_prefix_tuning_unknown_types_and_contradictions_are_refused(registry, tmp_path):
    prefix = prompt_folder(tmp_path / "prefix")
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 5}))
    refused(registry, prefix, "no faithful vLLM serving path.*docs/prefix-tuning.md")
    loha = peft_folder(tmp_path / "loha", config_extra={"peft_type": "LOHA"})
    refused(registry, loha, "peft_type LOHA is not served")
    refused(registry, peft_folder(tmp_path / "lora"), "registered as type 'ia3', but .* says peft_type LORA", type="ia3")


# -- bad input at registration ----------------------------------------------------------
def test_truncated_or_corrupt_weights_are_refused(registry, tmp_path):
    source = peft_folder(tmp_path / "lora")
    weights = source / "adapter_model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) - 100])
    refused(registry, source, "not a readable safetensors file, truncated or corrupt")
    weights.write_bytes(b"\x00" * 64)
    refused(registry, source, "not a readable safetensors file")
    weights.unlink()
    (source / "adapter_model.bin").write_bytes(b"pickle")
    refused(registry, source, "adapter_model.bin is a pickle")


def test_weights_with_nan_are_refused(registry, tmp_path):
    source = tmp_path / "nan"
    peft_folder(source)
    tensors = lora_tensors(8, ("q_proj", "v_proj"))
    next(iter(tensors.values()))[0, 0] = float("nan")
    save_file(tensors, str(source / "adapter_model.safetensors"))
    refused(registry, source, "NaN or infinite")


def test_config_that_does_not_match_the_weights_is_refused(registry, tmp_path, base):
    source = peft_folder(tmp_path / "lora")
    config = json.loads((source / "adapter_config.json").read_text())
    (source / "adapter_config.json").write_text(json.dumps({**config, "r": 64}))
    refused(registry, source, r"has shape \(8, 32\), expected \(64, 32\)", base)
    (source / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj"]}))
    refused(registry, source, "weights for v_proj .* which adapter_config.json does not target", base)


def test_adapter_for_another_base_model_is_refused(registry, tmp_path, base):
    wider = tmp_path / "wider"
    wider.mkdir()
    (wider / "config.json").write_text(json.dumps({**TINY, "hidden_size": 64, "head_dim": 16}))
    refused(registry, peft_folder(tmp_path / "lora"), r"expected \(8, 64\)", wider)
    (wider / "config.json").write_text(json.dumps({**TINY, "num_hidden_layers": 1}))
    refused(registry, peft_folder(tmp_path / "lora"), "layer 1, the base model has 1 layers", wider)


def test_rank_above_the_limits_is_refused(registry, tmp_path, base):
    refused(registry, peft_folder(tmp_path / "r32", rank=32), "rank 32, above the server's --max-lora-rank 16",
            base, max_rank=16)
    huge = tmp_path / "huge"
    peft_folder(huge, rank=8, config_extra={"r": 1024})
    refused(registry, huge, "rank 1024 is outside vLLM's LoRA ranks 1..512")


@pytest.mark.parametrize("targets, key", [(["lm_head"], None), (["embed_tokens"], None),
                                          (["q_proj"], "base_model.model.model.embed_tokens.lora_embedding_A")])
def test_unsupported_target_modules_are_refused(registry, tmp_path, targets, key):
    source = peft_folder(tmp_path / "odd", targets=("q_proj",), config_extra={"target_modules": targets})
    if key:
        tensors = lora_tensors(8, ("q_proj",))
        tensors[key] = torch.zeros(8, 96)
        save_file(tensors, str(source / "adapter_model.safetensors"))
        refused(registry, source, "embedding LoRA .* vLLM's LoRA does not serve")
    else:
        refused(registry, source, f"target module\\(s\\) {targets[0]} are not served by vLLM's LoRA")


# -- bad input at load ------------------------------------------------------------------
def rewrite(registry, name, version, config_update, manifest_update):
    """Edit a stored version and its checksums consistently (a registry written by hand or by
    an older version), so that only verify's own checks can refuse it."""
    folder = registry.folder(name, version)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **config_update}))
    data = json.loads((folder / "manifest.json").read_text())
    data.update(manifest_update)
    data["files"]["adapter_config.json"] = sha256_file(folder / "adapter_config.json")
    (folder / "manifest.json").write_text(json.dumps(data))
    return registry.resolve(f"{name}@{version}")


def test_verify_refuses_an_unsupported_target(registry, tmp_path):
    register(registry, peft_folder(tmp_path / "lora"))
    manifest = rewrite(registry, "legal", 1, {"target_modules": ["q_proj", "lm_head"]}, {"targets": ["lm_head", "q_proj"]})
    with pytest.raises(AdapterError, match="targets lm_head, which vLLM's LoRA does not serve") as info:
        registry.verify(manifest, base_model="base", max_rank=16)
    assert info.value.kind == "rejected"


def test_verify_refuses_a_non_lora_config_under_a_lora_manifest(registry, tmp_path):
    register(registry, peft_folder(tmp_path / "lora"))
    manifest = rewrite(registry, "legal", 1, {"peft_type": "IA3"}, {})
    with pytest.raises(AdapterError, match="does not match the manifest"):
        registry.verify(manifest)


def test_resolver_never_hands_a_prompt_adapter_to_a_lora_slot(registry, tmp_path, base):
    import asyncio

    from retro_vllm.adapters.catalog import AdapterCatalog
    from retro_vllm.adapters.resolver import RegistryLoRAResolver

    register(registry, prompt_folder(tmp_path / "prompt"), base, name="soft")
    register(registry, peft_folder(tmp_path / "lora"), name="legal")
    resolver = RegistryLoRAResolver()
    resolver.catalog = AdapterCatalog(registry, base_model="base", max_rank=16)
    assert asyncio.run(resolver.resolve_lora("/models/base", "soft@1")) is None
    assert asyncio.run(resolver.resolve_lora("/models/base", "legal@1")).lora_name == "legal@1"
