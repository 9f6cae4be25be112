"""IA3: learned vectors that scale activations (keys and values by default).

    settings  ia3_targets: only modules where (diag(l) - I) W is a LoRA within vLLM's rank
              limit; for SmolLM2-135M that is k_proj and v_proj (rank 192)
    training  the shared loop, nothing of its own
    served    in a LoRA slot: registration turns it into the exact LoRA it is, from the base
              model's weights
"""

from __future__ import annotations

from typing import Any

from retro_vllm.adapters.methods.base import AdapterMethod, MethodError
from retro_vllm.adapters.methods.config import VLLM_MAX_LORA_RANK


class IA3(AdapterMethod):
    name, peft_type, served_as = "ia3", "IA3", "lora"
    learning_rate, fields = 1e-2, frozenset({"ia3_targets"})

    # -- training ---------------------------------------------------------------------
    def peft_config(self, settings, *, total_steps: int, model_config: dict[str, Any]):
        from peft import IA3Config

        check_ia3_targets(settings.ia3_targets, model_config)
        # feedforward_modules scale a module's input; none of the servable targets is one.
        return IA3Config(target_modules=list(settings.ia3_targets), feedforward_modules=[], task_type="CAUSAL_LM")


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


METHOD = IA3()
