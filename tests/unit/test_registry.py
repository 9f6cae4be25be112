import json

import pytest
import torch
from safetensors.torch import save_file

from retro_vllm.adapters.catalog import AdapterCatalog
from retro_vllm.adapters.registry import AdapterError, AdapterRegistry, parse_name, seed_registry


# A tiny llama: q/o 32x32, k/v 16x32, gate/up 48x32, down 32x48, two layers.
TINY = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "intermediate_size": 48, "num_hidden_layers": 2, "model_type": "llama"}
SHAPES = {"q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32), "gate_proj": (48, 32),
          "up_proj": (48, 32), "down_proj": (32, 48)}


def lora_tensors(rank, targets, seed=0, layers=2):
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for target in targets:
            out_dim, in_dim = SHAPES[target]
            group = "mlp" if target in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{target}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_dim, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_dim, rank, generator=generator)
    return tensors


def peft_folder(path, *, rank=8, targets=("q_proj", "v_proj"), payload=0, config_extra=None):
    """A plain peft LoRA folder, as peft writes it (real safetensors)."""
    path.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": list(targets), **(config_extra or {})}
    (path / "adapter_config.json").write_text(json.dumps(config))
    save_file(lora_tensors(rank, targets, seed=payload), str(path / "adapter_model.safetensors"))
    return path


@pytest.fixture
def registry(tmp_path):
    return AdapterRegistry(tmp_path / "registry")


def register(registry, tmp_path, name="legal", **kwargs):
    return registry.register(peft_folder(tmp_path / f"src-{name}", **kwargs), name=name, domain="law", base_model="base")


def test_versions_and_current(registry, tmp_path):
    first = register(registry, tmp_path)
    second = register(registry, tmp_path, payload=1)
    assert (first.served_name, second.served_name) == ("legal@1", "legal@2")
    assert registry.resolve("legal").version == 2
    assert registry.resolve("legal@1").version == 1
    assert second.files["adapter_model.safetensors"] != first.files["adapter_model.safetensors"]
    assert second.rank == 8 and second.targets == ["q_proj", "v_proj"] and second.created
    assert not list((tmp_path / "registry" / "legal").glob(".tmp-*"))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "Legal", "legal@0", "legal@x", "", "legal@1@2"])
def test_invalid_names(name):
    with pytest.raises(AdapterError) as info:
        parse_name(name)
    assert info.value.kind == "invalid"


def test_unknown_names(registry):
    for name in ("nobody", "nobody@3"):
        with pytest.raises(AdapterError) as info:
            registry.resolve(name)
        assert info.value.kind == "not_found"


def test_verify_accepts_a_good_adapter(registry, tmp_path):
    manifest = register(registry, tmp_path)
    assert registry.verify(manifest, base_model="base", max_rank=16) == registry.folder("legal", 1)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "adapter_model.safetensors").write_bytes(b"corrupt"), "checksum"),
        (lambda f: (f / "adapter_model.safetensors").unlink(), "missing"),
        (lambda f: (f / "adapter_config.json").write_text(json.dumps({"r": 64, "target_modules": ["q_proj", "v_proj"]})),
         "checksum"),
    ],
)
def test_verify_refuses_damaged_adapters(registry, tmp_path, damage, message):
    manifest = register(registry, tmp_path)
    damage(registry.folder("legal", 1))
    with pytest.raises(AdapterError, match=message) as info:
        registry.verify(manifest)
    assert info.value.kind == "rejected"


def test_verify_refuses_other_base_and_rank_above_limit(registry, tmp_path):
    manifest = register(registry, tmp_path, rank=32)
    with pytest.raises(AdapterError, match="trained for 'base'"):
        registry.verify(manifest, base_model="other-model")
    with pytest.raises(AdapterError, match="max-lora-rank 16"):
        registry.verify(manifest, base_model="base", max_rank=16)


def test_manifest_that_does_not_match_the_weights_is_refused(registry, tmp_path):
    register(registry, tmp_path)
    path = registry.folder("legal", 1) / "manifest.json"
    data = json.loads(path.read_text())
    data["targets"] = ["q_proj", "v_proj", "gate_proj"]
    path.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="does not match the manifest"):
        registry.verify(registry.resolve("legal@1"))


def test_catalog_caches_until_files_change(registry, tmp_path):
    register(registry, tmp_path)
    catalog = AdapterCatalog(registry, base_model="base", max_rank=16)
    assert catalog.lookup("legal")[0].version == 1
    (registry.folder("legal", 1) / "adapter_model.safetensors").write_bytes(b"tampered!")
    with pytest.raises(AdapterError):
        catalog.lookup("legal@1")
    assert catalog.for_domain("legal") is None  # refused: the base model answers instead


def test_seed_imports_once(registry, tmp_path):
    seed = peft_folder(tmp_path / "seed")
    (seed / "manifest.json").write_text(json.dumps({"training": {"steps": 3}, "validation": {"f1": 0.5}}))
    imported = seed_registry(registry, [("cooking", "cooking", seed)], base_model="base")
    assert [m.served_name for m in imported] == ["cooking@1"]
    assert imported[0].training == {"steps": 3} and imported[0].validation == {"f1": 0.5}
    assert seed_registry(registry, [("cooking", "cooking", seed)], base_model="base") == []


def test_resolver_answers_from_the_registry_and_never_raises(registry, tmp_path):
    import asyncio

    from retro_vllm.adapters.resolver import RegistryLoRAResolver

    register(registry, tmp_path)
    resolver = RegistryLoRAResolver()
    resolver.catalog = AdapterCatalog(registry, base_model="base", max_rank=16)
    request = asyncio.run(resolver.resolve_lora("/models/base", "legal@1"))
    assert request.lora_name == "legal@1" and request.lora_path == str(registry.folder("legal", 1))
    assert asyncio.run(resolver.resolve_lora("/models/base", "../etc")) is None
    assert asyncio.run(resolver.resolve_lora("/models/base", "nobody")) is None
