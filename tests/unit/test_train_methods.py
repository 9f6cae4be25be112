"""Training methods: the peft config each one gets, the IA3 targets vLLM cannot carry, and the
checkpoint bookkeeping that makes a run resumable (no model needed)."""

import pytest
import torch
from peft import PeftType

from retro_vllm.adapters.methods import METHODS, MethodError, TrainingConfig, build_peft_config
from retro_vllm.adapters.methods.adalora import adalora_schedule
from retro_vllm.adapters.methods.ia3 import check_ia3_targets
from retro_vllm.adapters.train_lora import (
    CheckpointError,
    checkpoints,
    load_checkpoint,
    save_checkpoint,
    total_steps,
)

# SmolLM2-135M-Instruct's sizes: q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536.
SMOLLM2 = {"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "intermediate_size": 1536, "num_hidden_layers": 30}


def config_for(method, total=10, **settings):
    return build_peft_config(TrainingConfig(method=method, **settings), total_steps=total, model_config=SMOLLM2)


def test_every_method_builds_its_peft_config():
    expected = {"lora": PeftType.LORA, "adalora": PeftType.ADALORA, "ia3": PeftType.IA3,
                "prompt": PeftType.PROMPT_TUNING, "prefix": PeftType.PREFIX_TUNING}
    assert set(METHODS) == set(expected)
    for method, peft_type in expected.items():
        assert config_for(method).peft_type == peft_type


def test_lora_config_carries_the_settings():
    lora = config_for("lora", rank=8, alpha=16, targets=["q_proj", "v_proj"])
    assert (lora.r, lora.lora_alpha, set(lora.target_modules)) == (8, 16, {"q_proj", "v_proj"})


def test_adalora_schedule_spans_the_run():
    ada = config_for("adalora", total=50, init_r=12, target_r=8)
    assert (ada.init_r, ada.target_r, ada.total_step) == (12, 8, 50)
    assert (ada.tinit, ada.tfinal) == (5, 10)
    # peft refuses a schedule with no pruning phase; every run length must leave one.
    for total in range(1, 300):
        tinit, tfinal = adalora_schedule(total)
        assert 0 <= tinit < total - tfinal


def test_adalora_target_rank_above_initial_is_refused():
    with pytest.raises(MethodError, match="target_r"):
        config_for("adalora", init_r=4, target_r=8)


def test_ia3_defaults_to_key_and_value_projections():
    ia3 = config_for("ia3")
    assert set(ia3.target_modules) == {"k_proj", "v_proj"}
    assert not ia3.feedforward_modules


@pytest.mark.parametrize("target", ["down_proj", "gate_proj", "up_proj", "q_proj", "o_proj"])
def test_ia3_where_no_exact_lora_fits_is_refused(target):
    with pytest.raises(MethodError) as refused:
        config_for("ia3", ia3_targets=["k_proj", target])
    message = str(refused.value)
    assert target in message and "rank up to 576" in message and "512" in message
    assert "--ia3-targets k_proj,v_proj" in message
    assert "\n" not in message


def test_ia3_unknown_module_is_refused():
    with pytest.raises(MethodError, match="not a projection"):
        check_ia3_targets(["lm_head"], SMOLLM2)


def test_prompt_and_prefix_virtual_tokens():
    prompt = config_for("prompt", virtual_tokens=8)
    assert prompt.num_virtual_tokens == 8 and prompt.prompt_tuning_init == "SAMPLE_VOCAB"
    assert config_for("prefix", virtual_tokens=4).num_virtual_tokens == 4


def test_learning_rate_zero_is_allowed_negative_is_not():
    assert TrainingConfig(learning_rate=0).learning_rate == 0
    with pytest.raises(ValueError):
        TrainingConfig(learning_rate=-1e-3)


def test_record_keeps_only_the_methods_own_knobs():
    ia3 = TrainingConfig(method="ia3").record()
    assert "ia3_targets" in ia3 and "rank" not in ia3 and "virtual_tokens" not in ia3
    lora = TrainingConfig().record()
    assert {"rank", "alpha", "targets"} <= set(lora) and "init_r" not in lora


def test_total_steps():
    assert total_steps(10, TrainingConfig(batch_size=4, epochs=3)) == 9
    assert total_steps(10, TrainingConfig(batch_size=4, epochs=3, max_steps=2)) == 2


class _Saveable:
    """Stands in for a peft model: save_checkpoint only asks it to write its folder."""

    def save_pretrained(self, path, safe_serialization=True):
        import pathlib

        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "adapter_config.json").write_text("{}")


def state(step, fingerprint=None):
    return {"step": step, "fingerprint": fingerprint or {"method": "lora", "data": "abc"}, "losses": [1.0] * step,
            "params": {"w": torch.full((2,), float(step))}, "optimizer": {}, "torch_rng": torch.get_rng_state(),
            "adalora": None}


def test_checkpoints_are_renamed_into_place_and_pruned(tmp_path):
    (tmp_path / ".tmp-stale").mkdir()
    (tmp_path / "step-00000009").mkdir()  # no state file: an incomplete copy, never picked
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, _Saveable(), state(step))
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000004", "step-00000006"]
    assert not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "step-00000006" / "adapter" / "adapter_config.json").is_file()
    loaded = load_checkpoint(tmp_path, {"method": "lora", "data": "abc"}, total=10)
    assert loaded["step"] == 6 and torch.equal(loaded["params"]["w"], torch.full((2,), 6.0))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    save_checkpoint(tmp_path, _Saveable(), state(2))
    with pytest.raises(CheckpointError, match="differs in: data"):
        load_checkpoint(tmp_path, {"method": "lora", "data": "xyz"}, total=10)
    with pytest.raises(CheckpointError, match="beyond the 1 steps"):
        load_checkpoint(tmp_path, {"method": "lora", "data": "abc"}, total=1)


def test_unreadable_checkpoint_is_one_error(tmp_path):
    save_checkpoint(tmp_path, _Saveable(), state(2))
    (tmp_path / "step-00000002" / "trainer_state.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path, {"method": "lora", "data": "abc"}, total=10)


def test_no_checkpoint_starts_fresh(tmp_path):
    assert load_checkpoint(tmp_path / "missing", {}, total=4) is None
