"""Training every method on the real model (a step or a few each), what peft and the registry
make of the result, seeded and resumed runs ending bitwise equal, and the validation gate
refusing an adapter that equals the base model (then registering it with --force)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from retro_vllm.adapters.examples import Candidates, QARecord
from retro_vllm.adapters.methods import METHODS, TrainingConfig
from retro_vllm.adapters.registry import AdapterError, AdapterRegistry
from retro_vllm.adapters.train_lora import checkpoints, train_adapter
from retro_vllm.cli import app
from retro_vllm.retrieval.types import Chunk, ScoredChunk

PREAMBLE = "Answer from the sources and cite them."


def scored(doc: str, text: str) -> ScoredChunk:
    return ScoredChunk(Chunk(id=f"{doc}#0", doc_id=doc, text=text, domain="cooking", title=doc.title()), 0.5)


CANDIDATES = [
    Candidates(QARecord("At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius",
                        "boiling"), scored("boiling", "At sea level water boils at 100 degrees Celsius."),
               [scored("salt", "Salt lowers the freezing point of water.")]),
    Candidates(QARecord("What makes bread rise?", "Yeast makes bread rise by producing carbon dioxide", "yeast"),
               scored("yeast", "Yeast ferments sugars and produces carbon dioxide, which makes dough rise."),
               [scored("oven", "Ovens bake bread at around 220 degrees Celsius.")]),
]


def train(model_path, output: Path, **settings):
    options = {key: settings.pop(key) for key in ("checkpoint_dir", "checkpoint_every", "resume") if key in settings}
    config = TrainingConfig(**{"batch_size": 1, "top_k": 2, "seed": 0, "learning_rate": 3e-3, **settings})
    return train_adapter(model_path, CANDIDATES, preamble=PREAMBLE, settings=config, output_dir=output,
                         progress=False, **options)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_loads_back_and_registers(method, model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(model_path, tmp_path / "adapter", method=method, max_steps=1, virtual_tokens=4)
    assert result.steps == 1 and math.isfinite(result.losses[0])
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == {"lora": "LORA", "adalora": "ADALORA", "ia3": "IA3", "prompt": "PROMPT_TUNING",
                                  "prefix": "PREFIX_TUNING"}[method]

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 504, 3458, 314, 4649, 30]])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] == base.config.vocab_size and bool(logits.isfinite().all())

    registry = AdapterRegistry(tmp_path / "registry")
    if method == "prefix":
        with pytest.raises(AdapterError, match="prefix tuning has no faithful vLLM serving path"):
            registry.register(tmp_path / "adapter", base_model_path=model_path, name="cooking", domain="cooking",
                              base_model="SmolLM2-135M-Instruct", type=method)
        return
    manifest = registry.register(tmp_path / "adapter", base_model_path=model_path, name="cooking", domain="cooking",
                                 base_model="SmolLM2-135M-Instruct", type=method)
    assert manifest.type == method
    if method == "ia3":
        assert manifest.rank == 192  # k_proj/v_proj as an exact LoRA: rank = their output size


def test_lora_same_seed_same_weights_and_resume_equals_uninterrupted(model_path, tmp_path):
    checkpoint_dir = tmp_path / "checkpoints"
    full = train(model_path, tmp_path / "full", max_steps=4, checkpoint_dir=checkpoint_dir, checkpoint_every=2)
    assert [p.name for p in checkpoints(checkpoint_dir)] == ["step-00000002", "step-00000004"]

    two = train(model_path, tmp_path / "two", max_steps=2)  # a fresh run, same seed and data
    assert_identical(weights(tmp_path / "two"), weights(checkpoint_dir / "step-00000002" / "adapter"))
    assert two.losses == full.losses[:2]

    shutil.rmtree(checkpoint_dir / "step-00000004")  # as if the run had stopped after step 2
    resumed = train(model_path, tmp_path / "resumed", max_steps=4, checkpoint_dir=checkpoint_dir, resume=True)
    assert resumed.resumed_from == 2 and resumed.steps == 4 and resumed.losses == full.losses
    assert_identical(weights(tmp_path / "resumed"), weights(tmp_path / "full"))
    assert not torch.equal(*(weights(tmp_path / name)["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
                             for name in ("two", "full"))), "steps 3-4 changed nothing: the comparison proves nothing"


def test_adalora_resume_restores_the_rank_allocator(model_path, tmp_path):
    """AdaLoRA prunes by importance scores accumulated over steps: a resume without them would
    prune differently."""
    checkpoint_dir = tmp_path / "checkpoints"
    full = train(model_path, tmp_path / "full", method="adalora", max_steps=4, checkpoint_dir=checkpoint_dir,
                 checkpoint_every=2)
    shutil.rmtree(checkpoint_dir / "step-00000004")
    resumed = train(model_path, tmp_path / "resumed", method="adalora", max_steps=4, checkpoint_dir=checkpoint_dir,
                    resume=True)
    assert resumed.resumed_from == 2 and resumed.losses == full.losses
    assert_identical(weights(tmp_path / "resumed"), weights(tmp_path / "full"))
    configs = [json.loads((tmp_path / n / "adapter_config.json").read_text()) for n in ("full", "resumed")]
    assert configs[0]["rank_pattern"] and configs[0]["rank_pattern"] == configs[1]["rank_pattern"]
    # Pruned as it was (some matrices down to rank 0), it still registers as its plain LoRA.
    manifest = AdapterRegistry(tmp_path / "registry").register(
        tmp_path / "resumed", base_model_path=model_path, name="cooking", domain="cooking",
        base_model="SmolLM2-135M-Instruct", type="adalora")
    assert manifest.type == "adalora" and 1 <= manifest.rank <= 12


def test_resume_with_other_settings_is_refused(model_path, tmp_path):
    from retro_vllm.adapters.train_lora import CheckpointError

    checkpoint_dir = tmp_path / "checkpoints"
    train(model_path, tmp_path / "a", max_steps=1, checkpoint_dir=checkpoint_dir)
    with pytest.raises(CheckpointError, match="differs in: learning_rate"):
        train(model_path, tmp_path / "b", max_steps=2, learning_rate=1e-2, checkpoint_dir=checkpoint_dir, resume=True)


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory, model_path) -> Path:
    """The demo config in a fresh home, two passages per prompt to keep steps short."""
    from retro_vllm.config import write_demo_config

    path = write_demo_config(tmp_path_factory.mktemp("train-home"), model_path)
    raw = yaml.safe_load(path.read_text())
    raw["retrieval"]["top_k"] = 2
    path.write_text(yaml.safe_dump(raw))
    return path


def test_gate_refuses_an_adapter_no_better_than_the_base_model(demo_config):
    """An adapter trained at learning rate 0 is the base model (LoRA B stays zero): the same
    held-out loss, F1 and citations, so not better: refused, and registered with --force."""
    runner = CliRunner()
    args = ["train", "-c", str(demo_config), "-d", "cooking", "--max-steps", "1", "--batch-size", "1",
            "--learning-rate", "0", "--validate-max", "2", "--validate-tokens", "8"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    line = next(line for line in refused.output.splitlines() if "not registered" in line)
    assert "not better than the base model" in line and "--force" in line and "(n=2)" in line
    registry = AdapterRegistry(demo_config.parent / "adapters")
    assert registry.versions("cooking") == []

    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    manifest = registry.resolve("cooking")
    validation = manifest.validation
    assert validation["forced"] is True and validation["better"] is False and validation["n"] == 2
    assert validation["adapter"] == validation["base"]  # bitwise the base model, so the figures agree exactly
    assert manifest.type == "lora" and manifest.training["learning_rate"] == 0

    shown = runner.invoke(app, ["adapters", "show", "cooking", "-c", str(demo_config)])
    assert shown.exit_code == 0 and "validation: forced (not better than the base model)" in shown.output
    assert any(line.split()[:1] == ["loss"] for line in shown.output.splitlines())
