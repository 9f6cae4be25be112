"""The gate before registration: is the trained adapter better than the base model on the
questions held out of training?

Both sides answer the same prompts, laid out as serving lays them out (preamble, numbered
passages, question; built like the training examples, top-ranked distractors), with peft and
transformers in float32, greedy. Three figures per side:
  loss             mean token cross-entropy of the reference target (answer + its [n] marker)
  f1               SQuAD-style token F1 of the generated answer against the reference answer
  valid_citations  share of answers with at least one [n] marker, every marker naming a
                   passage of the prompt
The adapter is better when its loss is lower AND its f1 + valid_citations is not lower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from retro_vllm.adapters.examples import Candidates, build_example
from retro_vllm.decoding.markers import MARKER
from retro_vllm.scoring import token_f1

RULE = "adapter loss < base loss and adapter f1 + valid_citations >= base f1 + valid_citations"


@dataclass(frozen=True)
class Figures:
    loss: float
    f1: float
    valid_citations: float


@dataclass(frozen=True)
class Validation:
    adapter: Figures
    base: Figures
    n: int
    max_new_tokens: int

    @property
    def better(self) -> bool:
        return is_better(self.adapter, self.base)

    def summary(self) -> str:
        a, b = self.adapter, self.base
        return (f"held-out loss {a.loss:.4f} vs base {b.loss:.4f}, answer F1 {a.f1:.3f} vs {b.f1:.3f}, "
                f"valid citations {a.valid_citations:.3f} vs {b.valid_citations:.3f} (n={self.n})")

    def record(self, *, forced: bool = False) -> dict[str, Any]:
        """The manifest's `validation` field."""
        return {"n": self.n, "max_new_tokens": self.max_new_tokens, "adapter": asdict(self.adapter),
                "base": asdict(self.base), "rule": RULE, "better": self.better, "forced": forced}


def is_better(adapter: Figures, base: Figures) -> bool:
    return adapter.loss < base.loss and adapter.f1 + adapter.valid_citations >= base.f1 + base.valid_citations


def gate(validation: Validation | None, *, force: bool) -> tuple[dict[str, Any], str | None]:
    """(the manifest's validation record, why registration is refused or None). Without
    held-out questions nothing says the adapter is better, so that too needs --force."""
    if validation is None:
        if force:
            return {"n": 0, "rule": RULE, "better": None, "forced": True}, None
        return {}, "no held-out questions to validate on (--holdout); --force registers it unvalidated"
    if validation.better:
        return validation.record(), None
    if force:
        return validation.record(forced=True), None
    return {}, f"the adapter is not better than the base model: {validation.summary()}; --force registers it anyway"


def citation_valid(answer: str, passages: int) -> bool:
    """At least one [n] marker, and every marker names one of the prompt's `passages`."""
    numbers = [int(n) for n in MARKER.findall(answer)]
    return bool(numbers) and all(1 <= n <= passages for n in numbers)


def passage_count(candidates: Candidates, top_k: int) -> int:
    """Passages in the prompt build_example lays out: the gold one and up to top_k - 1 others."""
    return 1 + min(top_k - 1, len(candidates.distractors))


def measure(model, tokenizer, candidates: list[Candidates], *, preamble: str, top_k: int, max_new_tokens: int,
            label: str, progress: bool = True) -> Figures:
    """The three figures of `model` (plain or peft) on the held-out prompts, one at a time."""
    import torch

    from retro_vllm.adapters.train_lora import encode

    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss_sum, tokens, f1_sum, valid = 0.0, 0, 0.0, 0
    for c in tqdm(candidates, desc=f"Validating {label}", unit="question", disable=not progress):
        messages, target = build_example(c, preamble=preamble, top_k=top_k, rng=None)
        ids, labels = encode(tokenizer, messages, target)
        prompt_len = labels.count(-100)
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            targets = len(labels) - prompt_len
            loss_sum += float(out.loss) * targets
            tokens += targets
            prompt = torch.tensor([ids[:prompt_len]])
            generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                       max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        answer = tokenizer.decode(generated[0, prompt_len:], skip_special_tokens=True)
        f1_sum += token_f1(answer, c.record.answer)
        valid += citation_valid(answer, passage_count(c, top_k))
    n = len(candidates)
    return Figures(loss=loss_sum / max(tokens, 1), f1=f1_sum / n, valid_citations=valid / n)


def validate(model_path: Path, adapter_dir: Path, candidates: list[Candidates], *, preamble: str, top_k: int,
             max_new_tokens: int = 64, progress: bool = True) -> Validation:
    """Measure the base model, then the same model with the adapter on top (peft, unmerged)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not candidates:
        raise ValueError("no held-out questions to validate on")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    kwargs = dict(preamble=preamble, top_k=top_k, max_new_tokens=max_new_tokens, progress=progress)
    base = measure(model, tokenizer, candidates, label="base model", **kwargs)
    adapted = PeftModel.from_pretrained(model, str(adapter_dir))
    adapter = measure(adapted, tokenizer, candidates, label="adapter", **kwargs)
    return Validation(adapter=adapter, base=base, n=len(candidates), max_new_tokens=max_new_tokens)
