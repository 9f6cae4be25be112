"""Reading the packaged GGUF under Hugging Face names, as the conversion and the `retro-gguf`
loader both do (no engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retro_vllm.models.default_model import MARKER, ensure_gguf_folder, find_packaged_gguf
from retro_vllm.models.gguf_weights import GGUF_POINTER, GGUFWeights, GGUFWeightsError, read_pointer, write_pointer


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q_proj/k_proj rows (LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


@pytest.fixture(scope="module")
def config():
    from transformers import AutoConfig

    gguf = find_packaged_gguf()
    return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="module")
def weights(config):
    return GGUFWeights(find_packaged_gguf(), config)


def test_every_parameter_gets_its_tensor_by_name(weights, config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in AutoModelForCausalLM.from_config(config).state_dict().items()}
    got = {name: tuple(tensor.shape) for name, tensor in weights}
    assert config.tie_word_embeddings and "lm_head.weight" not in got  # stored once, as the embedding
    assert got == {name: shape for name, shape in expected.items() if name != "lm_head.weight"}


@pytest.mark.parametrize("gguf_name, hf_name", [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
    ("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("blk.7.attn_output.weight", "model.layers.7.self_attn.o_proj.weight"),
    ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"),
    ("blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"),
    ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"),
])
def test_names(weights, gguf_name, hf_name):
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    name, out = weights.to_hf(gguf_name, values)
    assert name == hf_name
    np.testing.assert_array_equal(out, values)  # only Q and K are reordered


@pytest.mark.parametrize("proj, heads_attr", [("q", "num_attention_heads"), ("k", "num_key_value_heads")])
def test_llama_cpp_row_permutation_is_undone(weights, config, proj, heads_attr):
    head_dim = config.hidden_size // config.num_attention_heads
    rows = getattr(config, heads_attr) * head_dim
    original = np.random.default_rng(0).standard_normal((rows, config.hidden_size)).astype(np.float32)
    stored = llama_cpp_permute(original, config.num_attention_heads, getattr(config, heads_attr))
    assert not np.array_equal(stored, original)
    name, out = weights.to_hf(f"blk.3.attn_{proj}.weight", stored)
    assert name == f"model.layers.3.self_attn.{proj}_proj.weight"
    np.testing.assert_array_equal(out, original)


def test_a_tensor_the_model_has_no_place_for_is_skipped(weights):
    assert weights.to_hf("rope_freqs.weight", np.ones(32, dtype=np.float32)) is None


def test_pointer_is_relative_to_its_folder(tmp_path):
    gguf = tmp_path / "weights" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / GGUF_POINTER).write_text(json.dumps({"gguf": "../weights/m.gguf"}))
    assert read_pointer(folder).resolve() == gguf.resolve()
    write_pointer(folder, gguf)
    assert read_pointer(folder) == gguf.resolve()


@pytest.mark.parametrize("content", [None, "{}", "not json", json.dumps({"gguf": "missing.gguf"})])
def test_bad_pointer_says_which_file(tmp_path, content):
    if content is not None:
        (tmp_path / GGUF_POINTER).write_text(content)
    with pytest.raises(GGUFWeightsError, match=GGUF_POINTER):
        read_pointer(tmp_path)


def test_gguf_folder_has_config_and_tokenizer_but_no_weights(tmp_path):
    folder = ensure_gguf_folder(find_packaged_gguf(), tmp_path / "m", progress=False)
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", GGUF_POINTER, MARKER} <= files
    assert not [name for name in files if name.endswith((".safetensors", ".bin", ".gguf"))]
    assert read_pointer(folder) == find_packaged_gguf().resolve()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"
    marker = (folder / MARKER).stat().st_mtime_ns
    assert ensure_gguf_folder(find_packaged_gguf(), folder, progress=False) == folder
    assert (folder / MARKER).stat().st_mtime_ns == marker  # built once


def test_tokenizer_special_tokens_are_the_ggufs(model_path):
    """transformers 5.17 read eos = <|im_start|> and no pad from this GGUF; the conversion puts
    the GGUF's own ids back, whatever the transformers version read."""
    from transformers import AutoTokenizer

    from retro_vllm.models.default_model import apply_gguf_special_tokens, gguf_special_tokens

    ids = gguf_special_tokens(find_packaged_gguf())
    assert ids == {"eos": 2, "bos": 1, "pad": 2}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", None  # what 5.17 produced
    apply_gguf_special_tokens(tokenizer, ids)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
