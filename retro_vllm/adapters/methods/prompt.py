"""Prompt tuning: trained virtual-token embeddings put before the prompt.

    settings  virtual_tokens
    training  the shared loop, nothing of its own; the soft prompt starts from embeddings of
              vocabulary tokens
    served    as prompt embeddings: the soft prompt's rows before the prompt's tokens
"""

from __future__ import annotations

from typing import Any

from retro_vllm.adapters.methods.base import AdapterMethod


class PromptTuning(AdapterMethod):
    name, peft_type, served_as = "prompt", "PROMPT_TUNING", "prompt_embeds"
    learning_rate, fields = 3e-2, frozenset({"virtual_tokens"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import PromptTuningConfig, PromptTuningInit

        # Initialised from embeddings of vocabulary tokens drawn with the seeded torch RNG:
        # random, reproducible, and on the scale the model's embeddings have.
        return PromptTuningConfig(num_virtual_tokens=settings.virtual_tokens, task_type="CAUSAL_LM",
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)


METHOD = PromptTuning()
