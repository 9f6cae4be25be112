"""Prompt tuning: trained virtual-token embeddings put before the prompt.

    settings  virtual_tokens
    training  the shared loop, nothing of its own; the soft prompt starts from embeddings of
              vocabulary tokens
    checks    one tensor, prompt_embeddings, as wide as the base model's hidden size
    served    as prompt embeddings: the soft prompt's rows before the prompt's tokens
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retro_vllm.adapters.checks import BaseModelShape, Prepared, read_source
from retro_vllm.adapters.convert import CONFIG, WEIGHTS, peft_type
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

    # -- registration -----------------------------------------------------------------
    def prepare(self, source: Path, config: dict[str, Any], base_model_path: Path | None) -> Prepared:
        base, tensors = read_source(source, base_model_path)
        facts = {"served_as": self.served_as, "exact": True, **check_prompt(tensors, config, base)}
        return Prepared(type=self.name, rank=0, alpha=0, targets=[], method=facts, copy=[source / CONFIG, source / WEIGHTS])

    # -- serving ----------------------------------------------------------------------
    def check_stored(self, manifest, config: dict[str, Any]) -> None:
        facts = {k: config.get(k) for k in ("num_virtual_tokens", "token_dim")}
        if peft_type(config) != self.peft_type or any(manifest.method.get(k) != v for k, v in facts.items()):
            raise ValueError("adapter_config.json does not match the manifest (peft_type, num_virtual_tokens or token_dim)")


def check_prompt(tensors: dict[str, Any], config: dict[str, Any], base: BaseModelShape | None) -> dict[str, Any]:
    tokens, dim = int(config.get("num_virtual_tokens") or 0), int(config.get("token_dim") or 0)
    rows = tokens * int(config.get("num_transformer_submodules") or 1)
    embeddings = tensors.get("prompt_embeddings")
    if set(tensors) != {"prompt_embeddings"} or embeddings is None or tuple(embeddings.shape) != (rows, dim):
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise ValueError(f"a prompt-tuning adapter holds one tensor prompt_embeddings of shape ({rows}, {dim}); "
                         f"this one holds {shapes}")
    if base is not None and dim != base.hidden_size:
        raise ValueError(f"prompt embeddings are {dim} wide, the base model's hidden size is {base.hidden_size} "
                         "(trained for another model)")
    return {"num_virtual_tokens": tokens, "token_dim": dim}


METHOD = PromptTuning()
