"""AdaLoRA: LoRA in SVD form (P diag(E) Q), whose rank allocator prunes the ranks that matter
least during training.

    settings  init_r (rank of each matrix before pruning), target_r (average rank left), alpha,
              dropout, targets
    training  the allocator prunes after each optimizer step on a schedule laid out over the
              whole run (so a checkpoint resumes only a run of the same length), and its state
              is saved in each checkpoint
    checks    its targets are served ones, and the LoRA it folds into passes LoRA's checks
    served    in a LoRA slot: registration folds it into plain LoRA (E and the scale folded
              into A and B, the pruned ranks dropped)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from retro_vllm.adapters.convert import (
    PREFIX, ConversionError, LoraAdapter, common_checks, leaf, lora_config, pad_to_rank,
)
from retro_vllm.adapters.methods.base import ConvertedToLoRA, MethodError

ADALORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_E)(?:\.weight)?$")


class AdaLoRA(ConvertedToLoRA):  # registration and serving: those of its LoRA
    name, peft_type, served_as = "adalora", "ADALORA", "lora"
    learning_rate, fields = 1e-3, frozenset({"init_r", "target_r", "alpha", "dropout", "targets"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import AdaLoraConfig

        if settings.target_r > settings.init_r:
            raise MethodError(f"AdaLoRA target_r ({settings.target_r}) must not exceed init_r ({settings.init_r})")
        tinit, tfinal = adalora_schedule(total_steps)
        return AdaLoraConfig(init_r=settings.init_r, target_r=settings.target_r, lora_alpha=settings.alpha,
                             lora_dropout=settings.dropout, target_modules=list(settings.targets),
                             total_step=total_steps, tinit=tinit, tfinal=tfinal, deltaT=1, task_type="CAUSAL_LM")

    def fingerprint(self, total_steps: int) -> dict[str, Any]:
        """The pruning schedule is laid out over the step budget: it may not change on resume."""
        return {"total_steps": total_steps}

    def after_step(self, model, step: int) -> None:
        """peft: after the optimizer step, before zero_grad (it reads the gradients), with the
        step counted from 0 (the final allocation happens at total - tfinal)."""
        model.base_model.update_and_allocate(step)

    def trainer_state(self, model) -> dict[str, Any]:
        allocator = model.base_model.rankallocator
        return {"ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt),
                "exp_avg_unc": dict(allocator.exp_avg_unc),
                "rank_pattern": model.peft_config[model.active_adapter].rank_pattern}

    def restore_trainer_state(self, model, saved: dict[str, Any]) -> None:
        allocator = model.base_model.rankallocator
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
            dict(saved["ipt"]), dict(saved["exp_avg_ipt"]), dict(saved["exp_avg_unc"]))
        model.peft_config[model.active_adapter].rank_pattern = saved["rank_pattern"]

    # -- conversion -------------------------------------------------------------------
    def to_lora(self, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                base_model_path: Path | None) -> LoraAdapter:
        return convert_adalora(config, tensors)


def adalora_schedule(total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal): a tenth of the steps of warm-up at full rank, a fifth (at least one, so
    the final allocation happens: steps count from 0) at the final rank, in between pruning.
    peft needs tinit < total_steps - tfinal, which this keeps for every run of >= 1 step."""
    return total_steps // 10, max(total_steps // 5, 1) if total_steps > 1 else 0


def _rank_mask(rank_pattern: dict[str, Any] | None, module: str) -> list[bool] | None:
    """peft saves `rank_pattern` keyed by the lora_E parameter's name, e.g.
    `base_model.model.model.layers.0.self_attn.q_proj.lora_E` (adapter name removed)."""
    for key, mask in (rank_pattern or {}).items():
        owner = key.removesuffix(".lora_E") if key.endswith(".lora_E") else key.rsplit(".lora_E", 1)[0]
        if owner.removeprefix(PREFIX) == module.removeprefix(PREFIX):
            return [bool(v) for v in mask]
    return None


def convert_adalora(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> LoraAdapter:
    common_checks(config, "AdaLoRA")
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
    targets = sorted({leaf(m) for m in parts})
    method = {
        "peft_type": "ADALORA", "served_as": "lora", "exact": True, "init_r": init_r,
        "target_r": config.get("target_r"), "lora_alpha": config.get("lora_alpha"),
        "kept_ranks": kept_ranks, "pruned_ranks": len(parts) * init_r - sum(kept_ranks.values()),
        "rank_pattern_saved": bool(rank_pattern),
    }
    return LoraAdapter(pad_to_rank(out, rank), lora_config(rank, targets, config), method)


METHOD = AdaLoRA()
