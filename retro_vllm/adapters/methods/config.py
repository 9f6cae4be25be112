"""The settings of one training run (the flags of `retro-vllm train`): one model for every
method. Each method reads the shared fields and its own (`AdapterMethod.fields`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Method = Literal["lora", "adalora", "ia3", "prompt", "prefix"]  # the keys of METHODS
# The largest `--max-lora-rank` vLLM 0.32 accepts (vllm/config/lora.py).
VLLM_MAX_LORA_RANK = 512


class TrainingConfig(BaseModel):
    method: Method = Field("lora", description="Which peft method to train.")
    rank: int = Field(16, ge=1, le=VLLM_MAX_LORA_RANK, description="LoRA rank r; the server needs --max-lora-rank >= r.")
    alpha: int = Field(32, ge=1, description="LoRA/AdaLoRA alpha (LoRA scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                               description="Modules LoRA and AdaLoRA adapt.")
    init_r: int = Field(12, ge=1, description="AdaLoRA: rank of each matrix before pruning.")
    target_r: int = Field(8, ge=1, description="AdaLoRA: average rank left after pruning.")
    ia3_targets: list[str] = Field(default_factory=lambda: ["k_proj", "v_proj"], description="Modules IA3 scales.")
    virtual_tokens: int = Field(16, ge=1, le=256, description="Prompt and prefix tuning: number of virtual tokens.")
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, ge=0, description="AdamW learning rate (0 leaves the initial adapter).")
    batch_size: int = Field(4, ge=1)
    top_k: int = Field(4, ge=1, description="Passages per example, as served.")
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (smoke runs).")
    bf16: bool = Field(True, description="bf16 autocast on CPU (about 1.35x faster where supported).")

    def record(self) -> dict[str, Any]:
        """The settings that shape this method's run (others' knobs left out): the manifest's
        training record, and what a checkpoint must share with the run resuming it."""
        from retro_vllm.adapters.methods import METHODS  # the table's package imports this module

        others = set().union(*(m.fields for m in METHODS.values())) - METHODS[self.method].fields
        return self.model_dump(exclude=others)
