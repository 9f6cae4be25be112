"""Prompt tuning: the soft prompt goes where peft puts it, the engine input vLLM gets resolves
to the same embeddings, and a bad adapter folder is one clear error."""

from __future__ import annotations

import json

import pytest
import torch

from retro_vllm.adapters.methods.prompt import PromptAdapterError, SoftPrompt
from retro_vllm.config import RetroConfig
from retro_vllm.launch.flags import engine_flags
from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.prompt_adapters import (
    VIRTUAL_TOKEN_ID,
    _with_soft_prompt,
    refuse_client_embeds,
)

VIRTUAL = 5


@pytest.fixture(scope="module")
def peft_prompt(model_path, tmp_path_factory):
    """A real peft prompt-tuning adapter on the real base model (random init, seeded)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL))
    folder = tmp_path_factory.mktemp("prompt")
    model.save_pretrained(folder)
    return model.eval(), folder


def test_soft_prompt_goes_before_the_whole_input_as_in_peft(peft_prompt):
    model, folder = peft_prompt
    seen = {}

    def capture(_module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"][0].detach().clone()

    ids = [1, 9690, 198, 2683, 314, 253, 1]  # <|im_start|>system ... : special tokens included
    handle = model.get_base_model().register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    finally:
        handle.remove()
    table = model.get_input_embeddings().weight.detach()
    soft = SoftPrompt.load(folder, hidden_size=table.shape[1], dtype=torch.float32)
    assert soft.num_virtual_tokens == VIRTUAL
    assert torch.equal(soft.assemble(ids, table), seen["embeds"])


def test_engine_input_resolves_to_the_same_embeddings(peft_prompt):
    model, folder = peft_prompt
    table = model.get_input_embeddings().weight.detach()
    soft = SoftPrompt.load(folder, dtype=torch.float32)
    ids = [5, 17, 300, 2]
    engine_input = _with_soft_prompt(soft, {"type": "token", "prompt_token_ids": ids, "prompt": "x", "cache_salt": "s"})
    assert engine_input["type"] == "embeds" and engine_input["prompt"] == "x" and engine_input["cache_salt"] == "s"
    mask = torch.tensor(engine_input["is_token_ids"])
    tokens = torch.tensor(engine_input["prompt_token_ids"])
    assert engine_input["prompt_embeds"].shape == (VIRTUAL + len(ids), table.shape[1])
    assert tokens[:VIRTUAL].eq(VIRTUAL_TOKEN_ID).all() and not mask[:VIRTUAL].any() and mask[VIRTUAL:].all()
    # What vLLM's model runner does with a mixed input: token positions from its own table.
    resolved = torch.where(mask[:, None], table[tokens], engine_input["prompt_embeds"])
    assert torch.equal(resolved, soft.assemble(ids, table))


def test_engine_dtype_is_kept(peft_prompt):
    _, folder = peft_prompt
    assert SoftPrompt.load(folder, dtype=torch.bfloat16).embeddings.dtype == torch.bfloat16


def test_media_or_embeds_input_is_refused(peft_prompt):
    _, folder = peft_prompt
    with pytest.raises(ValueError, match="text or token prompt"):
        _with_soft_prompt(SoftPrompt.load(folder), {"type": "embeds", "prompt_embeds": torch.zeros(2, 576)})


@pytest.mark.parametrize("damage, message", [
    ("hidden", r"expected \(5, 64\)"),
    ("type", "peft_type is 'LORA'"),
    ("truncate", "unreadable"),
    ("missing", "no adapter_model.safetensors"),
])
def test_bad_folders_are_one_clear_error(peft_prompt, tmp_path, damage, message):
    import shutil

    _, folder = peft_prompt
    target = tmp_path / "adapter"
    shutil.copytree(folder, target)
    weights = target / "adapter_model.safetensors"
    if damage == "type":
        config = json.loads((target / "adapter_config.json").read_text())
        (target / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "missing":
        weights.unlink()
    with pytest.raises(PromptAdapterError, match=message) as info:
        SoftPrompt.load(target, hidden_size=64 if damage == "hidden" else None)
    assert "\n" not in str(info.value)


def test_launch_adds_the_engine_flag_only_when_configured():
    on = RetroConfig.model_validate({"adapters": {"prompt_embeds": True}})
    assert "--enable-prompt-embeds" in engine_flags(on, [])
    assert "--enable-prompt-embeds" not in engine_flags(RetroConfig(), [])
    assert engine_flags(on, ["--enable-prompt-embeds"]).count("--enable-prompt-embeds") == 0


def test_client_embeddings_refused_when_the_flag_is_retros():
    class State:
        config = RetroConfig.model_validate({"adapters": {"prompt_embeds": True}})

    part = {"messages": [{"role": "user", "content": [{"type": "prompt_embeds", "data": "AAAA"}]}]}
    for body in ({"prompt_embeds": "AAAA"}, part):
        with pytest.raises(RetroHTTPError) as info:
            refuse_client_embeds(State, body, None)
        assert info.value.status == 400
    refuse_client_embeds(State, {"prompt": "text"}, None)  # text passes

    State.config = RetroConfig()  # the flag given by the operator: stock vLLM behaviour
    refuse_client_embeds(State, {"prompt_embeds": "AAAA"}, None)
