"""The peft configuration of each training method, and which of them vLLM can serve.

    lora     LoraConfig: the served type; rank r on the attention projections.
    adalora  AdaLoraConfig: starts at init_r per matrix and prunes to an average of target_r;
             registration folds it into plain LoRA.
    ia3      IA3Config: learned scaling vectors. Only where (diag(l) - I) W is a LoRA within
             vLLM's rank limit: for SmolLM2-135M that is k_proj and v_proj (rank 192).
    prompt   PromptTuningConfig: virtual tokens before the prompt (served as prompt embeddings).
    prefix   PrefixTuningConfig: trainable, but vLLM has no faithful path for per-layer K/V
             prefixes, so the registry refuses it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Method = Literal["lora", "adalora", "ia3", "prompt", "prefix"]
METHODS: tuple[str, ...] = ("lora", "adalora", "ia3", "prompt", "prefix")
# The largest `--max-lora-rank` vLLM 0.32 accepts (vllm/config/lora.py).
VLLM_MAX_LORA_RANK = 512
# AdamW learning rates that train each method in a few epochs on the demo data: scaling vectors
# and virtual tokens need larger steps than low-rank matrices.
DEFAULT_LEARNING_RATE = {"lora": 1e-3, "adalora": 1e-3, "ia3": 1e-2, "prompt": 3e-2, "prefix": 1e-2}


class MethodError(ValueError):
    """A method setting that cannot be trained or could never be served."""


class TrainingConfig(BaseModel):
    method: Method = Field("lora", description="Which peft method to train.")
    rank: int = Field(16, ge=1, le=VLLM_MAX_LORA_RANK, description="LoRA rank r; the server needs --max-lora-rank >= r.")
    alpha: int = Field(32, ge=1, description="LoRA/AdaLoRA alpha (LoRA scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                               description="Modules LoRA and AdaLoRA adapt.")
    init_r: int = Field(12, ge=1, description="AdaLoRA: rank of each matrix before pruning.")
    target_r: int = Field(8, ge=1, description="AdaLoRA: average rank left after pruning.")
    ia3_targets: list[str] = Field(default_factory=lambda: ["k_proj", "v_proj"], description="Modules IA3 scales.")
    virtual_tokens: int = Field(16, ge=1, le=256, description="Prompt and prefix tuning: number of virtual tokens.")
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, ge=0, description="AdamW learning rate (0 leaves the initial adapter).")
    batch_size: int = Field(4, ge=1)
    top_k: int = Field(4, ge=1, description="Passages per example, as served.")
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (smoke runs).")
    bf16: bool = Field(True, description="bf16 autocast on CPU (about 1.35x faster where supported).")

    def record(self) -> dict[str, Any]:
        """The settings that shape this method's run (others' knobs left out): the manifest's
        training record, and what a checkpoint must share with the run resuming it."""
        others = set().union(*_METHOD_FIELDS.values()) - _METHOD_FIELDS[self.method]
        return self.model_dump(exclude=others)


# Fields only one method reads; every other field shapes every run.
_METHOD_FIELDS = {
    "lora": {"rank", "alpha", "dropout", "targets"},
    "adalora": {"init_r", "target_r", "alpha", "dropout", "targets"},
    "ia3": {"ia3_targets"},
    "prompt": {"virtual_tokens"},
    "prefix": {"virtual_tokens"},
}


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


def adalora_schedule(total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal): a tenth of the steps of warm-up at full rank, a fifth (at least one, so
    the final allocation happens: steps count from 0) at the final rank, in between pruning.
    peft needs tinit < total_steps - tfinal, which this keeps for every run of >= 1 step."""
    return total_steps // 10, max(total_steps // 5, 1) if total_steps > 1 else 0


def build_peft_config(settings: TrainingConfig, *, total_steps: int, model_config: dict[str, Any]):
    """The peft config for `settings.method`; raises MethodError for a setting that cannot be
    trained here or could never be served."""
    from peft import (AdaLoraConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
                      PromptTuningInit)

    method = settings.method
    if method == "lora":
        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                          target_modules=list(settings.targets), task_type="CAUSAL_LM")
    if method == "adalora":
        if settings.target_r > settings.init_r:
            raise MethodError(f"AdaLoRA target_r ({settings.target_r}) must not exceed init_r ({settings.init_r})")
        tinit, tfinal = adalora_schedule(total_steps)
        return AdaLoraConfig(init_r=settings.init_r, target_r=settings.target_r, lora_alpha=settings.alpha,
                             lora_dropout=settings.dropout, target_modules=list(settings.targets),
                             total_step=total_steps, tinit=tinit, tfinal=tfinal, deltaT=1, task_type="CAUSAL_LM")
    if method == "ia3":
        check_ia3_targets(settings.ia3_targets, model_config)
        # feedforward_modules scale a module's input; none of the servable targets is one.
        return IA3Config(target_modules=list(settings.ia3_targets), feedforward_modules=[], task_type="CAUSAL_LM")
    if method == "prompt":
        # Initialised from embeddings of vocabulary tokens drawn with the seeded torch RNG:
        # random, reproducible, and on the scale the model's embeddings have.
        return PromptTuningConfig(num_virtual_tokens=settings.virtual_tokens, task_type="CAUSAL_LM",
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    if method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=settings.virtual_tokens, task_type="CAUSAL_LM")
    raise MethodError(f"unknown training method {method!r}; choose from {', '.join(METHODS)}")
