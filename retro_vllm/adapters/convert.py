"""Serve peft methods other than LoRA through vLLM's LoRA slots, by exact conversion: the
plain LoRA form every conversion produces, and what the conversions share. Each conversion
lives with its method (`AdapterMethod.to_lora` in methods/adalora.py and methods/ia3.py).

vLLM's slots compute `y = W x + scale * B (A x)` and nothing else, so a method is served
there only if its update to every targeted layer is exactly such a product:

- AdaLoRA adds `B diag(E) A x * alpha / (ranknum + 1e-5)` (peft/tuners/adalora/layer.py):
  fold E and the factor into A and B, drop the ranks it pruned (E == 0, or masked out by the
  saved `rank_pattern`), pad every module to one rank, and set lora_alpha = r so vLLM's scale
  is 1.
- IA3 rescales an activation. On a module that scales its output (k_proj, v_proj),
  `(W x) * l = W x + diag(l - 1) W x`: a LoRA with A = W, B = diag(l - 1). On a feed-forward
  module it scales the input, `W (x * l) = W x + W diag(l - 1) x`: A = diag(l - 1), B = W.
  Either needs rank min(out, in) (192 for SmolLM2-135M's k/v; 576 for down_proj, above
  vLLM's 512 limit, so refused), and reads the base model's weights.

Prompt tuning is served through prompt embeddings instead, and prefix tuning has no faithful
path (see docs/prefix-tuning.md). Conversions work in float32 and return tensors in memory;
the registry writes them into its staging folder, so a refusal leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
VLLM_MAX_RANK = 512  # the largest --max-lora-rank vLLM 0.32 accepts (config/lora.py)
PREFIX = "base_model.model."


class ConversionError(ValueError):
    """The adapter cannot be served exactly as a LoRA; the message says which part and why."""


@dataclass
class LoraAdapter:
    """A plain peft LoRA in memory: what vLLM loads once written."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]
    method: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def targets(self) -> list[str]:
        return list(self.config["target_modules"])

    def write(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.config, indent=2, sort_keys=True))


def peft_type(config: dict[str, Any]) -> str:
    """peft writes `peft_type`; older LoRA folders may lack it."""
    return str(config.get("peft_type") or "LORA").upper()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read in full so a truncated file is caught here."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def lora_config(rank: int, targets: list[str], source: dict[str, Any]) -> dict[str, Any]:
    # lora_alpha == r and no rsLoRA: vLLM's scale alpha/r is exactly 1, the factors carry the rest.
    return {
        "peft_type": "LORA", "task_type": source.get("task_type") or "CAUSAL_LM",
        "base_model_name_or_path": source.get("base_model_name_or_path"),
        "r": rank, "lora_alpha": rank, "use_rslora": False, "use_dora": False, "lora_dropout": 0.0,
        "bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "inference_mode": True,
        "rank_pattern": {}, "alpha_pattern": {}, "target_modules": sorted(targets),
    }


def common_checks(config: dict[str, Any], kind: str) -> None:
    if config.get("fan_in_fan_out"):
        raise ConversionError(f"{kind} with fan_in_fan_out (Conv1D layers) is not supported: llama layers are Linear")
    if config.get("modules_to_save"):
        raise ConversionError(f"{kind} saves whole modules ({config['modules_to_save']}); vLLM's LoRA slots cannot carry them")
    if str(config.get("bias", "none")) != "none":
        raise ConversionError(f"{kind} trains biases (bias={config['bias']!r}); vLLM's LoRA slots cannot carry them")


def leaf(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def pad_to_rank(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Zero rows of A / columns of B add nothing: one rank for the whole adapter, as vLLM wants."""
    out = {}
    for key, tensor in tensors.items():
        missing = rank - (tensor.shape[0] if key.endswith("lora_A.weight") else tensor.shape[1])
        if missing:
            pad = (0, 0, 0, missing) if key.endswith("lora_A.weight") else (0, missing)
            tensor = torch.nn.functional.pad(tensor, pad)
        out[key] = tensor
    return out


def convert(source: Path, base_model_path: Path | None = None) -> LoraAdapter:
    """The plain-LoRA form of the peft adapter folder `source` (AdaLoRA or IA3): its method's
    `to_lora`."""
    from retro_vllm.adapters.methods import PEFT_TYPES  # the methods import this module

    config = json.loads((Path(source) / CONFIG).read_text())
    kind = peft_type(config)
    tensors = read_tensors(Path(source) / WEIGHTS)
    method = PEFT_TYPES.get(kind)
    if method is None:
        raise ConversionError(f"no LoRA conversion for peft_type {kind}")
    return method.to_lora(config, tensors, base_model_path)
