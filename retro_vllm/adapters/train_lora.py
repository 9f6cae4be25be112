"""Adapter fine-tuning with peft on retrieval-augmented examples (CPU, seeded, resumable).

Every method (methods/) trains on the same examples with the same loop; a method adds its
own steps through its hooks (`AdapterMethod.after_step`, `trainer_state`). A run is a function
of its settings and data: the examples of epoch e are drawn from Random(seed * 1000 + e) and
the initialisation from torch's seeded RNG, so the same seed and data give bitwise-identical
weights. With a checkpoint folder the loop saves the adapter, optimizer, step, torch RNG state
and the method's own state (AdaLoRA's rank allocator) every N steps; resuming restores them and
continues on the batch where the run stopped, ending with the weights an uninterrupted run has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retro_vllm.adapters.examples import Candidates, build_example
from retro_vllm.adapters.methods import METHODS, TrainingConfig, build_peft_config

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.pt"
KEEP_CHECKPOINTS = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this run (other settings or data, unreadable)."""


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    examples: int = 0
    resumed_from: int = 0


def data_hash(candidates: list[Candidates]) -> str:
    digest = hashlib.sha256()
    for c in candidates:
        digest.update(json.dumps([c.record.question, c.record.answer, c.record.doc_id]).encode())
    return digest.hexdigest()[:16]


def encode(tokenizer, messages: list[dict], target: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # eos and pad are the same token in SmolLM2: labels come from lengths, never from pad ids.
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def epoch_batches(tokenizer, candidates: list[Candidates], *, preamble: str, settings: TrainingConfig,
                  epoch: int) -> list[list[tuple[list[int], list[int]]]]:
    """The batches of one epoch, in order: a function of (seed, epoch) only, which is what lets
    a resumed run pick up mid-epoch."""
    rng = random.Random(settings.seed * 1000 + epoch)
    encoded = [encode(tokenizer, *build_example(c, preamble=preamble, top_k=settings.top_k, rng=rng))
               for c in candidates]
    rng.shuffle(encoded)
    return [encoded[i:i + settings.batch_size] for i in range(0, len(encoded), settings.batch_size)]


def steps_per_epoch(examples: int, settings: TrainingConfig) -> int:
    return (examples + settings.batch_size - 1) // settings.batch_size


def total_steps(examples: int, settings: TrainingConfig) -> int:
    return min(steps_per_epoch(examples, settings) * settings.epochs, settings.max_steps or 10**9)


def _fingerprint(settings: TrainingConfig, candidates: list[Candidates], total: int) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it. The step budget may grow (train
    2 steps, resume to 4), unless the method says otherwise (AdaLoRA, whose pruning schedule is
    laid out over it)."""
    out = {**settings.record(), "data": data_hash(candidates)}
    del out["max_steps"], out["epochs"]
    out.update(METHODS[settings.method].fingerprint(total))
    return out


def train_adapter(model_path: Path, candidates: list[Candidates], *, preamble: str, settings: TrainingConfig,
                  output_dir: Path, progress: bool = True, checkpoint_dir: Path | None = None,
                  checkpoint_every: int = 50, resume: bool = False, device: str = "cpu") -> TrainResult:
    """Train `settings.method` on `device` (a torch device: "cpu", "cuda", "cuda:1") and save
    the peft adapter folder to `output_dir`. Raises MethodError for a method setting that
    cannot be served, CheckpointError for a checkpoint that does not belong to this run.
    The same seed and data give the same weights on one device type; CPU and CUDA kernels
    round differently, so a CUDA run is not bitwise the CPU run."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    total = total_steps(len(candidates), settings)
    model_config = json.loads((Path(model_path) / "config.json").read_text())
    peft_config = build_peft_config(settings, total_steps=total, model_config=model_config)
    fingerprint = _fingerprint(settings, candidates, total)
    state = None
    if resume:
        if checkpoint_dir is None:
            raise CheckpointError("resuming needs a checkpoint folder")
        state = load_checkpoint(checkpoint_dir, fingerprint, total)

    torch_device = torch.device(device)
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(torch_device)
    model = get_peft_model(model, peft_config)
    model.train()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=settings.learning_rate)
    method = METHODS[settings.method]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    result = TrainResult(examples=len(candidates))
    if state is not None:
        with torch.no_grad():
            for name, tensor in state["params"].items():
                trainable[name].copy_(tensor.to(torch_device))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        method.restore_trainer_state(model, state["adalora"])
        result.losses = list(state["losses"])
        result.steps = result.resumed_from = int(state["step"])

    per_epoch = steps_per_epoch(len(candidates), settings)
    batches, batches_epoch = [], -1
    start = time.perf_counter()
    with tqdm(total=total, initial=result.steps, desc=f"Training {settings.method}", unit="step",
              disable=not progress) as bar:
        while result.steps < total:
            epoch, index = divmod(result.steps, per_epoch)
            if epoch != batches_epoch:
                batches = epoch_batches(tokenizer, candidates, preamble=preamble, settings=settings, epoch=epoch)
                batches_epoch = epoch
            batch = batches[index]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=torch_device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=torch_device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=torch_device)
            with torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=settings.bf16):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            method.after_step(model, result.steps)  # before zero_grad: AdaLoRA reads the gradients
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            result.losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{result.losses[-1]:.3f}")
            if checkpoint_dir is not None and (result.steps % checkpoint_every == 0 or result.steps == total):
                save_checkpoint(checkpoint_dir, model, {
                    "step": result.steps, "fingerprint": fingerprint, "losses": result.losses,
                    "params": {name: p.detach().clone() for name, p in trainable.items()},
                    "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                    # the method's own state; the key keeps the name checkpoints were first written with
                    "adalora": method.trainer_state(model),
                })
    result.seconds = time.perf_counter() - start
    model.save_pretrained(str(output_dir), safe_serialization=True)
    return result


# -- checkpoints ------------------------------------------------------------------------
def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint appears by rename, so it is whole)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def save_checkpoint(folder: Path, model, state: dict[str, Any]) -> Path:
    """Write `<folder>/step-NNNNNNNN/` (the peft adapter, usable as is, and the trainer state)
    into a temporary folder, rename it into place, then drop all but the newest few."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{CHECKPOINT_PREFIX}{state['step']:08d}"
    if final.exists():  # a resumed run that had nothing left to do: same step, same state
        return final
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        model.save_pretrained(str(staging / "adapter"), safe_serialization=True)
        torch.save(state, staging / STATE_FILE)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in checkpoints(folder)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, fingerprint: dict[str, Any], total: int) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when the folder has none (a fresh start)."""
    import torch

    found = checkpoints(folder)
    if not found:
        logger.info("no checkpoint in %s; training from step 0", folder)
        return None
    path = found[-1] / STATE_FILE
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from None
    if state.get("fingerprint") != fingerprint:
        theirs = state.get("fingerprint") or {}
        differ = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        raise CheckpointError(f"checkpoint {found[-1]} belongs to another run (differs in: {', '.join(differ)}); "
                              "use another --checkpoint-dir or the same settings and data")
    if state["step"] > total:
        raise CheckpointError(f"checkpoint {found[-1]} is at step {state['step']}, beyond the {total} steps "
                              "this run trains")
    return state
