"""Train a domain adapter, validate it against the base model, register it: `retro-vllm train`.

    device -> model and index (`retro_vllm.prepare`) -> QA records, split into train and
    held-out -> examples laid out like serving prompts -> train -> validate on the held-out
    questions -> the validation gate -> the registry's next version of the domain adapter

Each step says what it did through `say`; a refusal or failure is one `TrainError` whose
message is the line to show the user.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from retro_vllm.prepare import prepare_index, prepare_model


class TrainError(Exception):
    """Training, validation or registration cannot go on; the message says why, in one line."""


def training_device(requested: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` as the device to train on."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested != "cpu" and not (requested == "cuda" or requested.startswith("cuda:")):
        raise TrainError(f"--device {requested!r}: choose auto, cpu, cuda or cuda:N")
    if requested != "cpu" and not torch.cuda.is_available():
        raise TrainError(f"--device {requested}: torch sees no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    return requested


def train_domain_adapter(config, domain: str, settings, *, qa: Path | None = None, holdout: float = 0.2,
                         checkpoint_dir: Path | None = None, checkpoint_every: int = 50, resume: bool = False,
                         register: bool = True, validate: bool = False, validate_max: int = 24,
                         validate_tokens: int = 64, force: bool = False, output: Path | None = None,
                         device: str = "auto", say: Callable[[str], None] = print):
    """Train `settings.method` for `domain` and, with `register`, register it when it beats the
    base model (or with `force`). Returns the registered manifest, else None. `settings` is an
    `adapters.methods.TrainingConfig`; its seed also picks the held-out split."""
    from retro_vllm.adapters.examples import gather_candidates, qa_from_corpus, read_qa
    from retro_vllm.adapters.methods import MethodError
    from retro_vllm.adapters.registry import AdapterError, AdapterRegistry
    from retro_vllm.adapters.train_lora import CheckpointError, data_hash, train_adapter
    from retro_vllm.adapters.validate import gate
    from retro_vllm.retrieval.retriever import Retriever

    section = config.domain(domain)
    if section is None:
        raise TrainError(f"unknown domain {domain!r}; configured: {', '.join(config.domain_names)}")
    method = settings.method
    device = training_device(device)
    model_path = prepare_model(config)
    embedder, version = prepare_index(config)
    retriever = Retriever(config, embedder, version)
    qa_path = qa or section.qa
    records = read_qa(qa_path) if qa_path else qa_from_corpus([c for c in retriever.store.chunks() if c.domain == domain])
    rng = random.Random(settings.seed)
    rng.shuffle(records)
    held = records[: int(len(records) * holdout)]
    records = records[len(held):]
    candidates = gather_candidates(retriever, domain, records, pool=8)
    if not candidates:
        raise TrainError(f"no training examples for {domain!r} (QA doc_ids must name documents of the domain)")
    preamble = (section.preamble or config.serving.preamble)
    with tempfile.TemporaryDirectory(prefix="retro-train-") as tmp:
        try:
            result = train_adapter(model_path, candidates, preamble=preamble, settings=settings, output_dir=Path(tmp),
                                   checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                                   device=device)
        except (MethodError, CheckpointError) as exc:
            raise TrainError(str(exc)) from exc
        if result.resumed_from:
            say(f"resumed from the checkpoint at step {result.resumed_from}")
        say(f"trained {method} on {result.examples} examples, {result.steps} steps in {result.seconds:.0f}s; "
            f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
        if output:
            shutil.copytree(tmp, output, dirs_exist_ok=True)
        if not (register or validate):
            return None
        validation = validate_adapter(config, model_path, Path(tmp), retriever, domain, held,
                                      preamble=preamble, limit=validate_max, max_new_tokens=validate_tokens)
        if validation is not None:
            say(f"validation: {validation.summary()}; "
                f"{'better than' if validation.better else 'not better than'} the base model")
        if not register:
            return None
        record, refusal = gate(validation, force=force)
        if refusal:
            raise TrainError(f"not registered: {refusal}")
        try:
            return AdapterRegistry(config.registry_dir).register(
                Path(tmp), base_model_path=model_path, name=section.adapter_name, domain=domain,
                base_model=config.model.name, type=method,
                data_hash=data_hash(candidates), validation=record,
                training={**settings.record(), "examples": result.examples, "steps": result.steps,
                          "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from,
                          "first_loss": result.losses[0], "last_loss": result.losses[-1],
                          "qa": str(qa_path) if qa_path else "derived from corpus",
                          "device": device, "heldout_doc_ids": [r.doc_id for r in held]},
            )
        except AdapterError as exc:
            raise TrainError(f"not registered: {exc}") from exc


def validate_adapter(config, model_path: Path, adapter_dir: Path, retriever, domain: str, held, *, preamble: str,
                     limit: int, max_new_tokens: int):
    """The validation gate's figures on up to `limit` held-out questions; None without any."""
    from retro_vllm.adapters.examples import gather_candidates
    from retro_vllm.adapters.validate import validate

    questions = gather_candidates(retriever, domain, held, pool=8)[:limit]
    if not questions:
        return None
    return validate(model_path, adapter_dir, questions, preamble=preamble, top_k=config.retrieval.top_k,
                    max_new_tokens=max_new_tokens)
