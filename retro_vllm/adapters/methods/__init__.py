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
nobody outside this folder compares method names. `prepare` finds a peft folder's method and
runs that method's registration checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retro_vllm.adapters.checks import Prepared, sha256_file
from retro_vllm.adapters.convert import CONFIG, WEIGHTS, peft_type
from retro_vllm.adapters.methods import adalora, ia3, lora, prefix, prompt
from retro_vllm.adapters.methods.base import AdapterMethod, MethodError, ServedAs
from retro_vllm.adapters.methods.config import VLLM_MAX_LORA_RANK, Method, TrainingConfig

__all__ = ["AdapterMethod", "DEFAULT_LEARNING_RATE", "METHODS", "Method", "MethodError", "PEFT_TYPES", "ServedAs",
           "TrainingConfig", "VLLM_MAX_LORA_RANK", "build_peft_config", "prepare"]

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


def prepare(source: Path, base_model_path: Path | None, *, claimed_type: str | None = None) -> Prepared:
    """Every registration check, with nothing written: the folder's method (its
    adapter_config.json's peft_type, which must agree with `claimed_type` when given), then that
    method's checks of the weights against the config and (with `base_model_path`) against the
    base model, and its conversion. Raises ValueError saying what is wrong."""
    if not source.is_dir():
        raise ValueError("not a folder")
    try:
        config = json.loads((source / CONFIG).read_text())
    except FileNotFoundError:
        raise ValueError(f"no {CONFIG}") from None
    except ValueError as exc:
        raise ValueError(f"{CONFIG} is not valid JSON ({exc})") from None
    kind = peft_type(config)
    method = PEFT_TYPES.get(kind)
    if method is None:
        served = ", ".join(m.peft_type for m in METHODS.values() if m.registrable)
        raise ValueError(f"peft_type {kind} is not served (served: {served})")
    if claimed_type is not None and claimed_type != method.name:
        raise ValueError(f"registered as type {claimed_type!r}, but {CONFIG} says peft_type {kind} ({method.name!r})")
    prepared = method.prepare(source, config, base_model_path)
    prepared.method = {"peft_type": kind, "source_sha256": sha256_file(source / WEIGHTS), **prepared.method}
    return prepared
