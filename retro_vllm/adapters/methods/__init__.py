"""The peft methods retro-vllm trains, one module each with the same shape (base.py), and the
table that maps a method's name to it.

    lora     LoraConfig: the served type; rank r on the attention projections.
    adalora  AdaLoraConfig: starts at init_r per matrix and prunes to an average of target_r;
             registration folds it into plain LoRA.
    ia3      IA3Config: learned scaling vectors. Only where (diag(l) - I) W is a LoRA within
             vLLM's rank limit: for SmolLM2-135M that is k_proj and v_proj (rank 192).
    prompt   PromptTuningConfig: virtual tokens before the prompt (served as prompt embeddings).
    prefix   PrefixTuningConfig: trainable, but vLLM has no faithful path for per-layer K/V
             prefixes, so the registry refuses it.

Callers ask `METHODS[name]` what they need to know (`served_as`, `uses_lora_slot`, ...);
nobody outside this folder compares method names.
"""

from __future__ import annotations

from typing import Any

from retro_vllm.adapters.methods import adalora, ia3, lora, prefix, prompt
from retro_vllm.adapters.methods.base import AdapterMethod, MethodError, ServedAs
from retro_vllm.adapters.methods.config import VLLM_MAX_LORA_RANK, Method, TrainingConfig

__all__ = ["AdapterMethod", "DEFAULT_LEARNING_RATE", "METHODS", "Method", "MethodError", "PEFT_TYPES", "ServedAs",
           "TrainingConfig", "VLLM_MAX_LORA_RANK", "build_peft_config"]

METHODS: dict[str, AdapterMethod] = {m.name: m for m in (lora.METHOD, adalora.METHOD, ia3.METHOD, prompt.METHOD,
                                                           prefix.METHOD)}
PEFT_TYPES: dict[str, AdapterMethod] = {m.peft_type: m for m in METHODS.values()}  # adapter_config.json's
DEFAULT_LEARNING_RATE = {name: method.learning_rate for name, method in METHODS.items()}


def build_peft_config(settings: TrainingConfig, *, total_steps: int, model_config: dict[str, Any]):
    """The peft config for `settings.method`; raises MethodError for a setting that cannot be
    trained here or could never be served."""
    method = METHODS.get(settings.method)
    if method is None:
        raise MethodError(f"unknown training method {settings.method!r}; choose from {', '.join(METHODS)}")
    return method.peft_config(settings, total_steps=total_steps, model_config=model_config)
