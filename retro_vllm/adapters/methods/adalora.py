"""AdaLoRA: LoRA in SVD form (P diag(E) Q), whose rank allocator prunes the ranks that matter
least during training.

    settings  init_r (rank of each matrix before pruning), target_r (average rank left), alpha,
              dropout, targets
    training  the allocator prunes after each optimizer step on a schedule laid out over the
              whole run (so a checkpoint resumes only a run of the same length), and its state
              is saved in each checkpoint
    served    in a LoRA slot: registration folds it into plain LoRA
"""

from __future__ import annotations

from typing import Any

from retro_vllm.adapters.methods.base import AdapterMethod, MethodError


class AdaLoRA(AdapterMethod):
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


def adalora_schedule(total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal): a tenth of the steps of warm-up at full rank, a fifth (at least one, so
    the final allocation happens: steps count from 0) at the final rank, in between pruning.
    peft needs tinit < total_steps - tfinal, which this keeps for every run of >= 1 step."""
    return total_steps // 10, max(total_steps // 5, 1) if total_steps > 1 else 0


METHOD = AdaLoRA()
