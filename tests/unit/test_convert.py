"""AdaLoRA and IA3 converted to plain LoRA give the logits peft's own model gives (float32),
on a tiny llama built with transformers and adapters built with real peft."""

from __future__ import annotations

import json

import pytest
import torch

from retro_vllm.adapters.convert import ConversionError, convert

ATOL = 1e-5


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def base_model(folder):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


INPUT = torch.tensor([[1, 5, 9, 14, 3, 77, 42, 8, 19, 60, 2, 33]])


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def assert_same_as_lora(adapter_folder, base, tmp_path) -> dict:
    """Logits of peft's model from `adapter_folder` vs base + the converted LoRA (peft, as LoRA)."""
    from peft import PeftModel

    expected = logits_of(PeftModel.from_pretrained(base_model(base), adapter_folder).eval())
    converted = convert(adapter_folder, base_model_path=base)
    out = tmp_path / "converted"
    out.mkdir()
    converted.write(out)
    served = PeftModel.from_pretrained(base_model(base), out).eval()
    assert served.peft_config["default"].peft_type.value == "LORA"
    got = logits_of(served)
    plain = logits_of(base_model(base))
    assert (expected - plain).abs().max() > 1e-2  # the adapter really changes the output
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    return json.loads((out / "adapter_config.json").read_text())


def test_adalora_with_pruned_ranks_and_saved_rank_pattern(base_folder, tmp_path):
    """A few real AdaLoRA steps: the rank allocator prunes (E zeroed, rank_pattern saved and the
    state dict resized by peft), then one more rank is zeroed by hand."""
    from peft import AdaLoraConfig, get_peft_model

    torch.manual_seed(1)
    config = AdaLoraConfig(init_r=6, target_r=2, total_step=8, tinit=1, tfinal=3, deltaT=1, lora_alpha=16,
                           target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    model = get_peft_model(base_model(base_folder), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # peft starts E at 0: give every factor a real value
                torch.nn.init.normal_(p, std=1.0 if "lora_E" in name else 0.3)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(8):
        loss = model(input_ids=INPUT, labels=INPUT).loss
        loss.backward()
        optimizer.step()
        model.base_model.update_and_allocate(step)
        optimizer.zero_grad()
    with torch.no_grad():
        model.base_model.model.model.layers[0].self_attn.q_proj.lora_E["default"][0] = 0.0
    folder = tmp_path / "adalora"
    model.save_pretrained(folder)
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["rank_pattern"] and not all(all(mask) for mask in saved["rank_pattern"].values())

    converted = assert_same_as_lora(folder, base_folder, tmp_path)
    lora = convert(folder, base_model_path=base_folder)
    assert converted["r"] == converted["lora_alpha"] == lora.rank < 6
    assert lora.method["pruned_ranks"] > 0 and lora.method["exact"]
    assert sorted(converted["target_modules"]) == ["down_proj", "q_proj", "v_proj"]


def test_adalora_zeroed_singular_values_without_rank_pattern(base_folder, tmp_path):
    from peft import AdaLoraConfig, get_peft_model

    torch.manual_seed(2)
    model = get_peft_model(base_model(base_folder), AdaLoraConfig(init_r=5, total_step=10, lora_alpha=8,
                                                                  target_modules=["k_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                torch.nn.init.normal_(p, std=0.5)
            if "lora_E" in name:
                p[1:3] = 0.0  # two pruned ranks in every module
    folder = tmp_path / "adalora"
    model.save_pretrained(folder)
    assert_same_as_lora(folder, base_folder, tmp_path)
    assert convert(folder).rank == 3  # AdaLoRA needs no base weights


@pytest.mark.parametrize("targets, feedforward", [(["k_proj", "v_proj"], []),
                                                  (["k_proj", "v_proj", "down_proj", "up_proj"], ["down_proj"])])
def test_ia3_is_an_exact_lora(base_folder, tmp_path, targets, feedforward):
    from peft import IA3Config, get_peft_model

    torch.manual_seed(3)
    model = get_peft_model(base_model(base_folder), IA3Config(target_modules=targets, feedforward_modules=feedforward))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.copy_(1 + 0.5 * torch.randn_like(p))
    folder = tmp_path / "ia3"
    model.save_pretrained(folder)
    converted = assert_same_as_lora(folder, base_folder, tmp_path)
    # k/v: out 16 < in 32 -> rank 16; down_proj (32 x 48) and up_proj (48 x 32) -> 32.
    assert converted["r"] == (16 if not feedforward else 32)


def test_ia3_on_smollm2_down_proj_is_refused(tmp_path):
    """The real layer shape: down_proj is 576 x 1536, so its exact LoRA needs rank 576 > 512."""
    from safetensors.torch import save_file

    base = tmp_path / "base"
    base.mkdir()
    save_file({"model.layers.0.mlp.down_proj.weight": torch.zeros(576, 1536),
               "model.layers.0.self_attn.k_proj.weight": torch.zeros(192, 576)}, str(base / "model.safetensors"))
    adapter = tmp_path / "ia3"
    adapter.mkdir()
    save_file({"base_model.model.model.layers.0.mlp.down_proj.ia3_l": torch.ones(1, 1536),
               "base_model.model.model.layers.0.self_attn.k_proj.ia3_l": torch.ones(192, 1)},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "IA3", "target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]}))
    with pytest.raises(ConversionError, match=r"down_proj \(feed-forward.*rank 576.*limit of 512"):
        convert(adapter, base_model_path=base)
    with pytest.raises(ConversionError, match="base_model_path"):
        convert(adapter)


def test_ia3_for_another_model_and_prefix_tuning_are_refused(base_folder, tmp_path):
    from safetensors.torch import save_file

    adapter = tmp_path / "ia3"
    adapter.mkdir()
    save_file({"base_model.model.model.layers.0.self_attn.k_proj.ia3_l": torch.ones(192, 1)},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "target_modules": ["k_proj"]}))
    with pytest.raises(ConversionError, match="another model"):
        convert(adapter, base_model_path=base_folder)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ConversionError, match="prefix-tuning.md"):
        convert(adapter)
