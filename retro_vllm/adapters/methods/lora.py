"""LoRA: low-rank matrices B A beside the attention projections, what vLLM's LoRA slots serve.

    settings  rank r, alpha, dropout, targets (q/k/v/o by default)
    training  the shared loop, nothing of its own
    checks    a plain peft LoRA vLLM can load for this base model (checks.check_lora)
    served    in a LoRA slot, its files copied as they are
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retro_vllm.adapters.checks import MANIFEST, Prepared, check_lora, check_stored_lora, read_source
from retro_vllm.adapters.convert import WEIGHTS
from retro_vllm.adapters.methods.base import AdapterMethod


class LoRA(AdapterMethod):
    name, peft_type, served_as = "lora", "LORA", "lora"
    learning_rate, fields = 1e-3, frozenset({"rank", "alpha", "dropout", "targets"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import LoraConfig

        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=list(settings.targets), task_type="CAUSAL_LM")

    # -- registration -----------------------------------------------------------------
    def prepare(self, source: Path, config: dict[str, Any], base_model_path: Path | None) -> Prepared:
        base, tensors = read_source(source, base_model_path)
        rank, targets = check_lora(tensors, config, base)
        copy = [p for p in sorted(source.iterdir()) if p.is_file() and p.name != MANIFEST
                and (p.name == WEIGHTS or p.suffix == ".json")]
        return Prepared(type=self.name, rank=rank, alpha=int(config.get("lora_alpha", rank)), targets=targets,
                        method={"served_as": self.served_as, "exact": True}, copy=copy)

    # -- serving ----------------------------------------------------------------------
    def check_stored(self, manifest, config: dict[str, Any]) -> None:
        check_stored_lora(manifest, config)


METHOD = LoRA()
