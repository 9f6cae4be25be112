"""`retro-vllm train`: the flags of the training workflow (`retro_vllm.adapters.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retro_vllm.cli.common import CONFIG_OPTION, fail, load

HELP = (
    "Fine-tune an adapter for a domain on retrieval-augmented examples laid out like serving prompts "
    "(preamble, numbered passages, question -> answer ending in its [n] citation), validate it against the "
    "base model on the held-out questions, and register it as the domain adapter's next version. Examples "
    "come from the domain's QA JSONL (`qa:` in the config or --qa), else are derived from its corpus. "
    "--type picks the method: lora (default), adalora (registered as the plain LoRA it folds into), ia3 "
    "(k_proj/v_proj only: elsewhere vLLM cannot carry it), prompt (prompt tuning, served as prompt embeddings), "
    "prefix (trains, but cannot be registered: vLLM has no faithful path for per-layer K/V prefixes; use "
    "--no-register --output DIR). Registration needs the adapter to beat the base model: lower held-out loss "
    "and answer F1 + valid-citation share not lower; --force registers it anyway, with its figures. CPU, "
    "seeded (same seed and data, same weights), resumable with --checkpoint-dir/--resume, with a progress bar."
)


def train(
    domain: str = typer.Option(..., "--domain", "-d", help="Configured domain to train for."),
    config_path: Optional[Path] = CONFIG_OPTION,
    method: str = typer.Option("lora", "--type", help="lora | adalora | ia3 | prompt | prefix."),
    qa: Optional[Path] = typer.Option(None, help="QA JSONL {question, answer, doc_id}; default: the domain's `qa`."),
    epochs: int = typer.Option(5, help="Passes over the examples."),
    rank: int = typer.Option(16, help="LoRA rank (the server's --max-lora-rank must be at least this)."),
    alpha: int = typer.Option(32, help="LoRA and AdaLoRA alpha."),
    init_r: int = typer.Option(12, help="AdaLoRA: rank of each matrix before pruning."),
    target_r: int = typer.Option(8, help="AdaLoRA: average rank after pruning."),
    ia3_targets: str = typer.Option("k_proj,v_proj", help="IA3: comma-separated modules to scale (k_proj, v_proj)."),
    virtual_tokens: int = typer.Option(16, help="Prompt and prefix tuning: virtual tokens."),
    learning_rate: Optional[float] = typer.Option(
        None, help="AdamW learning rate; default per type: lora/adalora 1e-3, ia3 1e-2, prompt 3e-2, prefix 1e-2."),
    batch_size: int = typer.Option(4, help="Examples per step."),
    holdout: float = typer.Option(0.2, help="Share of QA records kept out of training for validation."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps (quick runs)."),
    seed: int = typer.Option(0, help="Seed for the split, the distractors and the initialisation."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Save resumable checkpoints in this folder."),
    checkpoint_every: int = typer.Option(50, min=1, help="Steps between checkpoints (and one at the end)."),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in --checkpoint-dir."),
    register: bool = typer.Option(True, help="Validate, then register the result in the adapter registry."),
    validate: bool = typer.Option(False, "--validate", help="Validate even with --no-register (figures only)."),
    validate_max: int = typer.Option(24, min=1, help="At most this many held-out questions in validation."),
    validate_tokens: int = typer.Option(64, min=1, help="max_new_tokens of each validation answer."),
    force: bool = typer.Option(False, help="Register even when the adapter is not better than the base model."),
    output: Optional[Path] = typer.Option(None, help="Also keep the peft adapter folder here."),
    device: str = typer.Option("auto", help="Where to train: auto (a CUDA GPU when torch sees one, else cpu), "
                               "cpu, cuda or cuda:N. Validation runs on the CPU."),
) -> None:
    from pydantic import ValidationError

    from retro_vllm.adapters.methods import DEFAULT_LEARNING_RATE, METHODS, TrainingConfig
    from retro_vllm.adapters.pipeline import TrainError, train_domain_adapter
    from retro_vllm.cli.adapters import verdict
    from retro_vllm.prepare import PrepareError

    if method not in METHODS:
        fail(f"--type {method!r}: choose from {', '.join(METHODS)}")
    if resume and checkpoint_dir is None:
        fail("--resume needs --checkpoint-dir")
    if register and not METHODS[method].registrable:
        fail(f"{method} tuning trains but cannot be registered: vLLM has no faithful serving path for it "
             "(its per-layer K/V prefixes); train it with --no-register --output DIR")
    config = load(config_path)
    if config.domain(domain) is None:
        fail(f"unknown domain {domain!r}; configured: {', '.join(config.domain_names)}")
    try:
        settings = TrainingConfig(
            method=method, rank=rank, alpha=alpha, init_r=init_r, target_r=target_r,
            ia3_targets=[t.strip() for t in ia3_targets.split(",") if t.strip()], virtual_tokens=virtual_tokens,
            epochs=epochs, learning_rate=DEFAULT_LEARNING_RATE[method] if learning_rate is None else learning_rate,
            batch_size=batch_size, seed=seed, max_steps=max_steps, top_k=config.retrieval.top_k)
    except ValidationError as exc:
        fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()))
    try:
        manifest = train_domain_adapter(
            config, domain, settings, qa=qa, holdout=holdout, checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every, resume=resume, register=register, validate=validate,
            validate_max=validate_max, validate_tokens=validate_tokens, force=force, output=output, device=device,
            say=typer.echo)
    except (PrepareError, TrainError) as exc:
        fail(str(exc))
    if manifest is not None:
        typer.echo(f"registered {manifest.served_name} in {config.registry_dir}; validation: {verdict(manifest.validation)}")
