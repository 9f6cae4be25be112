"""LoRA: low-rank matrices B A beside the attention projections, what vLLM's LoRA slots serve.

    settings  rank r, alpha, dropout, targets (q/k/v/o by default)
    training  the shared loop, nothing of its own
    served    in a LoRA slot, as it is
"""

from __future__ import annotations

from typing import Any

from retro_vllm.adapters.methods.base import AdapterMethod


class LoRA(AdapterMethod):
    name, peft_type, served_as = "lora", "LORA", "lora"
    learning_rate, fields = 1e-3, frozenset({"rank", "alpha", "dropout", "targets"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import LoraConfig

        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=list(settings.targets), task_type="CAUSAL_LM")


METHOD = LoRA()
