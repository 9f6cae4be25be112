"""LoRA fine-tuning with peft on retrieval-augmented examples (CPU, seeded)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from retro_vllm.adapters.examples import Candidates, build_example

logger = logging.getLogger(__name__)


class LoraTrainingConfig(BaseModel):
    rank: int = Field(16, ge=1, le=512, description="LoRA rank r; the server needs --max-lora-rank >= r.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(4, ge=1)
    top_k: int = Field(4, ge=1, description="Passages per example, as served.")
    seed: int = 0
    max_steps: int | None = Field(None, description="Stop after this many optimizer steps (smoke runs).")
    bf16: bool = Field(True, description="bf16 autocast on CPU (about 1.35x faster where supported).")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    examples: int = 0


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


def train_lora(model_path: Path, candidates: list[Candidates], *, preamble: str, settings: LoraTrainingConfig,
               output_dir: Path, progress: bool = True) -> TrainResult:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.targets), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    per_epoch = (len(candidates) + settings.batch_size - 1) // settings.batch_size
    total = min(per_epoch * settings.epochs, settings.max_steps or 10**9)
    result = TrainResult(examples=len(candidates))
    start = time.perf_counter()
    with tqdm(total=total, desc="Training LoRA", unit="step", disable=not progress) as bar:
        for epoch in range(settings.epochs):
            rng = random.Random(settings.seed * 1000 + epoch)
            encoded = [encode(tokenizer, *build_example(c, preamble=preamble, top_k=settings.top_k, rng=rng))
                       for c in candidates]
            rng.shuffle(encoded)
            for begin in range(0, len(encoded), settings.batch_size):
                batch = encoded[begin:begin + settings.batch_size]
                width = max(len(ids) for ids, _ in batch)
                input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
                labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
                mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
                    loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                result.losses.append(float(loss.detach()))
                result.steps += 1
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{result.losses[-1]:.3f}")
                if result.steps >= total:
                    break
            if result.steps >= total:
                break
    result.seconds = time.perf_counter() - start
    model.save_pretrained(str(output_dir), safe_serialization=True)
    return result
