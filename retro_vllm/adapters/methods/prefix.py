"""Prefix tuning: trained keys and values put before the prompt's at every layer.

    settings  virtual_tokens
    training  the shared loop, nothing of its own
    checks    none: registration refuses it before reading anything
    served    refused: vLLM has no faithful path for per-layer K/V prefixes (prompt embeddings
              enter at the first layer only; see docs/prefix-tuning.md), so it trains but is
              never registered
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retro_vllm.adapters.convert import ConversionError, LoraAdapter
from retro_vllm.adapters.methods.base import AdapterMethod

PREFIX_TUNING_DOC = "docs/prefix-tuning.md"


class PrefixTuning(AdapterMethod):
    name, peft_type, served_as = "prefix", "PREFIX_TUNING", "refused"
    learning_rate, fields = 1e-2, frozenset({"virtual_tokens"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=settings.virtual_tokens, task_type="CAUSAL_LM")

    # -- registration -----------------------------------------------------------------
    def prepare(self, source: Path, config: dict[str, Any], base_model_path: Path | None):
        raise ValueError("prefix tuning has no faithful vLLM serving path: prompt embeddings enter at the first layer "
                         f"only, prefix tuning sets keys and values at every layer (see {PREFIX_TUNING_DOC})")

    # -- serving ----------------------------------------------------------------------
    def check_stored(self, manifest, config: dict[str, Any]) -> None:
        raise ValueError(f"prefix tuning is never registered (see {PREFIX_TUNING_DOC})")

    # -- conversion -------------------------------------------------------------------
    def to_lora(self, config: dict[str, Any], tensors: dict[str, Any], base_model_path: Path | None) -> LoraAdapter:
        raise ConversionError(f"prefix tuning has no faithful vLLM serving path (see {PREFIX_TUNING_DOC})")


METHOD = PrefixTuning()
