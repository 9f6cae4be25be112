"""IA3: learned vectors that scale activations (keys and values by default).

    settings  ia3_targets: only modules where (diag(l) - I) W is a LoRA within vLLM's rank
              limit; for SmolLM2-135M that is k_proj and v_proj (rank 192)
    training  the shared loop, nothing of its own
    checks    its targets are served ones, and the LoRA it turns into passes LoRA's checks
    served    in a LoRA slot: registration turns it into the exact LoRA it is, from the base
              model's weights
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from retro_vllm.adapters.convert import (
    PREFIX, VLLM_MAX_RANK, ConversionError, LoraAdapter, common_checks, leaf, lora_config, pad_to_rank,
)
from retro_vllm.adapters.methods.base import ConvertedToLoRA, MethodError
from retro_vllm.adapters.methods.config import VLLM_MAX_LORA_RANK

IA3_KEY = re.compile(r"^(?P<module>.+)\.ia3_l(?:\.weight)?$")


class IA3(ConvertedToLoRA):  # registration and serving: those of its LoRA
    name, peft_type, served_as = "ia3", "IA3", "lora"
    learning_rate, fields = 1e-2, frozenset({"ia3_targets"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import IA3Config

        check_ia3_targets(settings.ia3_targets, model_config)
        # feedforward_modules scale a module's input; none of the servable targets is one.
        return IA3Config(target_modules=list(settings.ia3_targets), feedforward_modules=[], task_type="CAUSAL_LM")

    # -- conversion -------------------------------------------------------------------
    def to_lora(self, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                base_model_path: Path | None) -> LoraAdapter:
        return convert_ia3(config, tensors, base_model_path)


def projection_shapes(model_config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer of a Llama-style decoder block."""
    hidden = int(model_config["hidden_size"])
    heads = int(model_config["num_attention_heads"])
    head_dim = int(model_config.get("head_dim") or hidden // heads)
    kv = int(model_config.get("num_key_value_heads") or heads) * head_dim
    inter = int(model_config["intermediate_size"])
    return {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
            "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}


def check_ia3_targets(targets: list[str], model_config: dict[str, Any]) -> None:
    """IA3 is served as the LoRA dW = (diag(l) - I) W (or W (diag(l) - I) on a feed-forward
    input), whose rank can reach min(in, out): a module is allowed only if that fits vLLM."""
    shapes = projection_shapes(model_config)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise MethodError(f"IA3 target {', '.join(unknown)} is not a projection of this model "
                          f"(choose from {', '.join(shapes)})")
    too_big = [t for t in targets if min(shapes[t]) > VLLM_MAX_LORA_RANK]
    if too_big:
        shown = ", ".join(f"{t} ({shapes[t][1]}x{shapes[t][0]}: rank up to {min(shapes[t])})" for t in too_big)
        servable = [t for t in shapes if min(shapes[t]) <= VLLM_MAX_LORA_RANK]
        raise MethodError(f"IA3 on {shown} cannot be served: vLLM carries IA3 as an exact LoRA and its rank limit "
                          f"is {VLLM_MAX_LORA_RANK}; use --ia3-targets {','.join(servable) or '(none fit)'}")


class BaseWeights:
    """Reads single tensors from a model folder's safetensors files (sharded or not), without
    loading the model."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        self._where: dict[str, Path] = {}
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise ConversionError(f"no *.safetensors weights in the base model folder {self.folder}")
        for path in files:
            with safe_open(str(path), "pt") as handle:
                self._where.update({key: path for key in handle.keys()})

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        if key not in self._where:
            raise ConversionError(f"the base model in {self.folder} has no tensor {key!r}: the adapter was "
                                  "trained for another model")
        with safe_open(str(self._where[key]), "pt") as handle:
            return handle.get_tensor(key)


def convert_ia3(config: dict[str, Any], tensors: dict[str, torch.Tensor], base_model_path: Path | None,
                max_rank: int = VLLM_MAX_RANK) -> LoraAdapter:
    common_checks(config, "IA3")
    scales: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = IA3_KEY.match(key)
        if not match:
            raise ConversionError(f"IA3 weights hold an unexpected tensor {key!r}")
        scales[match.group("module")] = tensor.to(torch.float32)
    if base_model_path is None:
        raise ConversionError("IA3 is served as a LoRA built from the base model's weights: register it with "
                              "base_model_path set to the base model's folder")
    base = BaseWeights(base_model_path)
    out: dict[str, torch.Tensor] = {}
    too_wide: dict[str, str] = {}
    for module, scale in sorted(scales.items()):
        name = module.removeprefix(PREFIX)
        weight = base.get(f"{name}.weight").to(torch.float32)
        feedforward = scale.shape[0] == 1 and scale.shape[-1] == weight.shape[1] != 1
        delta = scale.reshape(-1) - 1
        if delta.shape[0] != weight.shape[1 if feedforward else 0]:
            raise ConversionError(f"IA3 on {name}: {delta.shape[0]} scales do not fit the base layer "
                                  f"{tuple(weight.shape)} (trained for another model)")
        if not feedforward and f"{name}.bias" in base:
            # (W x + b) * l - W x - b = (l - 1) W x + (l - 1) b: the bias part is no LoRA.
            raise ConversionError(f"IA3 on {name}: the base layer has a bias, so its IA3 update is not a LoRA")
        rank = min(weight.shape)
        if rank > max_rank:
            how = "feed-forward, scales its input" if feedforward else "scales its output"
            too_wide[leaf(name)] = f"{leaf(name)} ({how}: rank {rank} = min{tuple(weight.shape)})"
            continue
        # dW = diag(l - 1) W (output scaled) or W diag(l - 1) (input scaled); B A with the smaller side as rank.
        scaled = delta.unsqueeze(1) * weight if not feedforward else weight * delta.unsqueeze(0)
        if weight.shape[0] <= weight.shape[1]:
            b = torch.diag(delta) if not feedforward else torch.eye(weight.shape[0])
            a = weight.clone() if not feedforward else scaled
        else:
            b = scaled if not feedforward else weight.clone()
            a = torch.eye(weight.shape[1]) if not feedforward else torch.diag(delta)
        out[f"{module}.lora_A.weight"] = a
        out[f"{module}.lora_B.weight"] = b
    if too_wide:
        raise ConversionError(
            f"IA3 on {'; '.join(too_wide.values())} has no exact LoRA within vLLM's rank limit of {max_rank}. "
            "Train IA3 on k_proj/v_proj only (no feedforward_modules), which serves as an exact rank-192 LoRA.")
    rank = max(t.shape[0] for k, t in out.items() if k.endswith("lora_A.weight"))
    targets = sorted({leaf(m) for m in scales})
    method = {"peft_type": "IA3", "served_as": "lora", "exact": True, "ia3_targets": targets,
              "feedforward_modules": config.get("feedforward_modules") or []}
    return LoraAdapter(pad_to_rank(out, rank), lora_config(rank, targets, config), method)


METHOD = IA3()
