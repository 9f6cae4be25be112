"""Serve peft methods other than LoRA through vLLM's LoRA slots, by exact conversion.

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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
VLLM_MAX_RANK = 512  # the largest --max-lora-rank vLLM 0.32 accepts (config/lora.py)
PREFIX = "base_model.model."
ADALORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_E)(?:\.weight)?$")
IA3_KEY = re.compile(r"^(?P<module>.+)\.ia3_l(?:\.weight)?$")
PREFIX_TUNING_DOC = "docs/prefix-tuning.md"


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


def _common_checks(config: dict[str, Any], kind: str) -> None:
    if config.get("fan_in_fan_out"):
        raise ConversionError(f"{kind} with fan_in_fan_out (Conv1D layers) is not supported: llama layers are Linear")
    if config.get("modules_to_save"):
        raise ConversionError(f"{kind} saves whole modules ({config['modules_to_save']}); vLLM's LoRA slots cannot carry them")
    if str(config.get("bias", "none")) != "none":
        raise ConversionError(f"{kind} trains biases (bias={config['bias']!r}); vLLM's LoRA slots cannot carry them")


def _leaf(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _pad(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Zero rows of A / columns of B add nothing: one rank for the whole adapter, as vLLM wants."""
    out = {}
    for key, tensor in tensors.items():
        missing = rank - (tensor.shape[0] if key.endswith("lora_A.weight") else tensor.shape[1])
        if missing:
            pad = (0, 0, 0, missing) if key.endswith("lora_A.weight") else (0, missing)
            tensor = torch.nn.functional.pad(tensor, pad)
        out[key] = tensor
    return out


# -- AdaLoRA ----------------------------------------------------------------------------
def _rank_mask(rank_pattern: dict[str, Any] | None, module: str) -> list[bool] | None:
    """peft saves `rank_pattern` keyed by the lora_E parameter's name, e.g.
    `base_model.model.model.layers.0.self_attn.q_proj.lora_E` (adapter name removed)."""
    for key, mask in (rank_pattern or {}).items():
        owner = key.removesuffix(".lora_E") if key.endswith(".lora_E") else key.rsplit(".lora_E", 1)[0]
        if owner.removeprefix(PREFIX) == module.removeprefix(PREFIX):
            return [bool(v) for v in mask]
    return None


def convert_adalora(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> LoraAdapter:
    _common_checks(config, "AdaLoRA")
    init_r = int(config.get("init_r") or 12)
    alpha = float(config.get("lora_alpha") or 0)
    rank_pattern = config.get("rank_pattern")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = ADALORA_KEY.match(key)
        if not match:
            raise ConversionError(f"AdaLoRA weights hold an unexpected tensor {key!r}")
        parts.setdefault(match.group("module"), {})[match.group("part")] = tensor.to(torch.float32)
    out: dict[str, torch.Tensor] = {}
    kept_ranks: dict[str, int] = {}
    # peft builds every layer with r = init_r, keeps ranknum = init_r through a rank_pattern resize,
    # and sets scaling = lora_alpha, or the layer's r when lora_alpha is 0.
    ranknum = torch.tensor(float(init_r), dtype=torch.float32) + 1e-5
    for module, part in sorted(parts.items()):
        if set(part) != {"lora_A", "lora_B", "lora_E"}:
            raise ConversionError(f"AdaLoRA module {module} lacks {sorted({'lora_A', 'lora_B', 'lora_E'} - set(part))}")
        a, b, e = part["lora_A"], part["lora_B"], part["lora_E"].reshape(-1)
        if not (a.shape[0] == b.shape[1] == e.shape[0]):
            raise ConversionError(f"AdaLoRA module {module}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} and "
                                  f"lora_E {tuple(e.shape)} disagree on the rank")
        mask = _rank_mask(rank_pattern, module)
        layer_r = init_r
        if mask is not None:
            layer_r = sum(mask)
            if len(mask) == a.shape[0]:  # saved before peft resized the state dict
                keep = torch.tensor(mask, dtype=torch.bool)
                a, b, e = a[keep], b[:, keep], e[keep]
            elif layer_r != a.shape[0]:
                raise ConversionError(f"AdaLoRA module {module}: rank_pattern keeps {layer_r} of {len(mask)} ranks "
                                      f"but the weights have {a.shape[0]}")
        scaling = alpha if alpha > 0 else float(layer_r)
        live = e != 0  # ranks the allocator pruned have E == 0 and add nothing
        factor = (torch.tensor(scaling, dtype=torch.float32) / ranknum).item()
        out[f"{module}.lora_A.weight"] = a[live] * e[live].unsqueeze(1)
        out[f"{module}.lora_B.weight"] = b[:, live] * factor
        kept_ranks[module.removeprefix(PREFIX)] = int(live.sum())
    rank = max([1, *kept_ranks.values()])
    targets = sorted({_leaf(m) for m in parts})
    method = {
        "peft_type": "ADALORA", "served_as": "lora", "exact": True, "init_r": init_r,
        "target_r": config.get("target_r"), "lora_alpha": config.get("lora_alpha"),
        "kept_ranks": kept_ranks, "pruned_ranks": len(parts) * init_r - sum(kept_ranks.values()),
        "rank_pattern_saved": bool(rank_pattern),
    }
    return LoraAdapter(_pad(out, rank), lora_config(rank, targets, config), method)


# -- IA3 --------------------------------------------------------------------------------
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
    _common_checks(config, "IA3")
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
            too_wide[_leaf(name)] = f"{_leaf(name)} ({how}: rank {rank} = min{tuple(weight.shape)})"
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
    targets = sorted({_leaf(m) for m in scales})
    method = {"peft_type": "IA3", "served_as": "lora", "exact": True, "ia3_targets": targets,
              "feedforward_modules": config.get("feedforward_modules") or []}
    return LoraAdapter(_pad(out, rank), lora_config(rank, targets, config), method)


def convert(source: Path, base_model_path: Path | None = None) -> LoraAdapter:
    """The plain-LoRA form of the peft adapter folder `source` (AdaLoRA or IA3)."""
    config = json.loads((Path(source) / CONFIG).read_text())
    kind = peft_type(config)
    tensors = read_tensors(Path(source) / WEIGHTS)
    if kind == "ADALORA":
        return convert_adalora(config, tensors)
    if kind == "IA3":
        return convert_ia3(config, tensors, base_model_path)
    if kind == "PREFIX_TUNING":
        raise ConversionError(f"prefix tuning has no faithful vLLM serving path (see {PREFIX_TUNING_DOC})")
    raise ConversionError(f"no LoRA conversion for peft_type {kind}")
