"""Prompt tuning: trained virtual-token embeddings put before the prompt.

    settings  virtual_tokens
    training  the shared loop, nothing of its own; the soft prompt starts from embeddings of
              vocabulary tokens
    checks    one tensor, prompt_embeddings, as wide as the base model's hidden size
    served    as prompt embeddings: the soft prompt's rows before the prompt's tokens
              (SoftPrompt below; the API server's prompt_adapters.py puts it in front)

What peft computes (`PeftModelForCausalLM.forward`, peft 0.21, PROMPT_TUNING): the model's
input embeddings are `cat(P, E[ids])`, the adapter's soft prompt P ([num_virtual_tokens,
hidden], saved under `prompt_embeddings`) BEFORE the embedding of the whole tokenized input,
positions 0..n+L-1, no other change to the model. vLLM takes exactly that when the engine runs
with `--enable-prompt-embeds`.

The API server never needs the model's embedding table: the engine input is vLLM's "mixed"
form (the one its chat `prompt_embeds` content parts produce), where the first n positions
carry P's rows and the rest are token ids that the engine embeds with its own weights. So the
server holds only P (n x hidden per adapter), whatever load format the engine uses (the
GGUF loader has no safetensors to read an embedding table from), and the token positions are
embedded by the very lookup the engine always uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retro_vllm.adapters.checks import BaseModelShape, Prepared, read_source
from retro_vllm.adapters.convert import CONFIG, WEIGHTS, peft_type
from retro_vllm.adapters.methods.base import AdapterMethod

PEFT_TYPE = "PROMPT_TUNING"
WEIGHTS_KEY = "prompt_embeddings"  # where peft's save_pretrained puts the soft prompt
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class PromptTuning(AdapterMethod):
    name, peft_type, served_as = "prompt", PEFT_TYPE, "prompt_embeds"
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



# -- serving ----------------------------------------------------------------------------
class PromptAdapterError(ValueError):
    """A folder that is not a usable prompt-tuning adapter; the message says why."""


@dataclass(frozen=True)
class SoftPrompt:
    """One prompt-tuning adapter's virtual-token embeddings, [num_virtual_tokens, hidden]."""

    embeddings: torch.Tensor

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.embeddings.shape[0])

    @classmethod
    def load(cls, folder: Path, *, hidden_size: int | None = None, dtype: torch.dtype | None = None) -> "SoftPrompt":
        """Read a peft PROMPT_TUNING folder. `dtype`: the engine's, so what the engine gets is
        what peft feeds its model (peft casts P to the input embeddings' dtype too)."""
        folder = Path(folder)
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise PromptAdapterError(f"{folder}: adapter_config.json unreadable ({exc})") from None
        if config.get("peft_type") != PEFT_TYPE:
            raise PromptAdapterError(f"{folder}: peft_type is {config.get('peft_type')!r}, not {PEFT_TYPE}")
        weights = _read_prompt_weights(folder)
        expected = (int(config.get("num_virtual_tokens", -1)), hidden_size or int(config.get("token_dim", -1)))
        if weights.dim() != 2 or tuple(weights.shape) != expected:
            raise PromptAdapterError(
                f"{folder}: {WEIGHTS_KEY} has shape {tuple(weights.shape)}, expected {expected} "
                "(num_virtual_tokens x the model's hidden size)"
            )
        if not weights.is_floating_point() or not torch.isfinite(weights).all():
            raise PromptAdapterError(f"{folder}: {WEIGHTS_KEY} holds non-finite or non-float values")
        return cls(weights.to(dtype or weights.dtype).contiguous())

    def assemble(self, token_ids: list[int], embed_tokens: torch.Tensor) -> torch.Tensor:
        """The full input embeddings peft builds, given the base model's embedding table:
        what the engine ends up running for `engine_input` (used to check the two agree)."""
        tokens = embed_tokens[torch.as_tensor(token_ids, dtype=torch.long)]
        return torch.cat((self.embeddings.to(tokens.dtype), tokens), dim=0)

    def engine_input(self, token_ids: list[int], *, placeholder_id: int, **options: Any) -> dict[str, Any]:
        """vLLM's mixed embeds input (`vllm.inputs.engine.EmbedsInput`): the soft prompt's rows
        first, then the prompt's own token ids, embedded by the engine. `options`: the token
        input's other keys (prompt text, cache_salt) carried over."""
        n, total = self.num_virtual_tokens, self.num_virtual_tokens + len(token_ids)
        embeds = torch.zeros(total, self.embeddings.shape[1], dtype=self.embeddings.dtype)
        embeds[:n] = self.embeddings
        return {
            **options,
            "type": "embeds",
            "prompt_embeds": embeds,
            "prompt_token_ids": [placeholder_id] * n + list(token_ids),
            "is_token_ids": [False] * n + [True] * len(token_ids),
        }


def is_prompt_tuning(folder: Path) -> bool:
    try:
        return json.loads((Path(folder) / "adapter_config.json").read_text()).get("peft_type") == PEFT_TYPE
    except (OSError, ValueError):
        return False


def _read_prompt_weights(folder: Path) -> torch.Tensor:
    path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise PromptAdapterError(f"{folder}: no adapter_model.safetensors")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                if WEIGHTS_KEY not in handle.keys():
                    raise PromptAdapterError(f"{path}: no {WEIGHTS_KEY!r} tensor (not a prompt-tuning adapter)")
                return handle.get_tensor(WEIGHTS_KEY)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PromptAdapterError:
        raise
    except Exception as exc:  # truncated or corrupt file: one line, not a stack
        raise PromptAdapterError(f"{path}: unreadable ({exc})") from None
    if WEIGHTS_KEY not in state:
        raise PromptAdapterError(f"{path}: no {WEIGHTS_KEY!r} tensor (not a prompt-tuning adapter)")
    return state[WEIGHTS_KEY]


METHOD = PromptTuning()
