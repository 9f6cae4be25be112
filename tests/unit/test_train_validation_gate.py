"""The validation gate's figures and rule, and `retro-vllm adapters` printing them (no model)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from retro_vllm.adapters.examples import Candidates, QARecord
from retro_vllm.adapters.validate import Figures, Validation, citation_valid, gate, is_better, passage_count
from retro_vllm.cli import app
from retro_vllm.retrieval.types import Chunk, ScoredChunk
from retro_vllm.scoring import token_f1

DEMO_ADAPTER = Path(__file__).resolve().parents[2] / "retro_vllm" / "demo" / "adapters" / "cooking"


def test_token_f1_is_squad_style():
    assert token_f1("Water boils at 100 degrees [1].", "water boils at 100 degrees") == 1.0
    assert token_f1("The yeast!", "yeast") == 1.0  # case, punctuation and articles do not count
    assert token_f1("bread", "yeast makes bread rise") == pytest.approx(2 * 1 * 0.25 / 1.25)
    assert token_f1("", "yeast") == 0.0 and token_f1("salt", "yeast") == 0.0


@pytest.mark.parametrize("answer, passages, valid", [
    ("It boils at 100 degrees [1].", 2, True),
    ("Both say so [1][2].", 2, True),
    ("It boils [3].", 2, False),  # names a passage the prompt did not have
    ("It boils [1] and [3].", 4, True),
    ("It boils [1] and [5].", 4, False),  # one bad marker spoils the answer
    ("It boils at 100 degrees.", 2, False),  # no marker at all
    ("See [0].", 2, False),
])
def test_citation_validity(answer, passages, valid):
    assert citation_valid(answer, passages) is valid


def test_passage_count_follows_the_prompt_layout():
    chunk = ScoredChunk(Chunk(id="d#0", doc_id="d", text="t", domain="x"), 0.5)
    c = Candidates(QARecord("q", "a", "d"), chunk, [chunk] * 5)
    assert passage_count(c, 4) == 4 and passage_count(c, 1) == 1
    assert passage_count(Candidates(QARecord("q", "a", "d"), chunk, []), 4) == 1


BASE = Figures(loss=2.0, f1=0.30, valid_citations=0.20)


@pytest.mark.parametrize("adapter, better", [
    (Figures(1.0, 0.40, 0.90), True),
    (Figures(1.9, 0.30, 0.20), True),  # lower loss, the rest equal
    (Figures(1.0, 0.10, 0.40), True),  # F1 fell, but F1 + valid citations did not
    (Figures(2.0, 0.90, 1.00), False),  # loss not lower
    (Figures(1.0, 0.20, 0.20), False),  # F1 + valid citations lower
    (BASE, False),  # the base model itself: not better
])
def test_rule(adapter, better):
    assert is_better(adapter, BASE) is better


def test_gate_refuses_unless_forced():
    same = Validation(adapter=BASE, base=BASE, n=3, max_new_tokens=64)
    record, refusal = gate(same, force=False)
    assert refusal and "not better than the base model" in refusal and "--force" in refusal
    assert "loss 2.0000 vs base 2.0000" in refusal and "(n=3)" in refusal and "\n" not in refusal
    record, refusal = gate(same, force=True)
    assert refusal is None and record["forced"] is True and record["better"] is False
    assert record["adapter"] == {"loss": 2.0, "f1": 0.3, "valid_citations": 0.2} and record["n"] == 3

    better = Validation(adapter=Figures(1.0, 0.5, 1.0), base=BASE, n=3, max_new_tokens=64)
    record, refusal = gate(better, force=False)
    assert refusal is None and record["better"] is True and record["forced"] is False


def test_gate_without_heldout_questions():
    assert "no held-out questions" in gate(None, force=False)[1]
    record, refusal = gate(None, force=True)
    assert refusal is None and record["forced"] is True and record["n"] == 0


@pytest.fixture
def registry_config(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "d0", "text": "A passage."}))
    config = tmp_path / "retro.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"),
                                      "domains": [{"name": "cooking", "corpus": [str(corpus)]}]}))
    return config


def test_adapters_show_prints_the_validation_figures(registry_config, tmp_path):
    from retro_vllm.adapters.registry import AdapterRegistry
    from retro_vllm.config import load_config

    source = tmp_path / "adapter"
    shutil.copytree(DEMO_ADAPTER, source)
    validation = Validation(adapter=Figures(0.5, 0.61, 0.95), base=BASE, n=12, max_new_tokens=64).record()
    AdapterRegistry(load_config(registry_config).registry_dir).register(
        source, name="cooking", domain="cooking", base_model="SmolLM2-135M-Instruct", validation=validation,
        training={"method": "lora", "steps": 60, "heldout_doc_ids": ["a", "b"]})

    runner = CliRunner()
    shown = runner.invoke(app, ["adapters", "show", "cooking", "-c", str(registry_config)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert "version: 1" in lines and "type: lora" in lines and "validation: better than the base model" in lines
    assert any(line.split() == ["loss", "0.5000", "2.0000"] for line in lines)
    assert any(line.split() == ["valid_citations", "0.9500", "0.2000"] for line in lines)
    assert "held-out questions: 12" in shown.output and "held out: 2 documents" in shown.output
    assert "peft_type=LORA" in shown.output and "served_as=lora" in shown.output

    listed = runner.invoke(app, ["adapters", "list", "-c", str(registry_config)])
    assert listed.exit_code == 0 and "| cooking@1 | 1 | lora | cooking | 16 | better than the base model |" in listed.output

    as_json = runner.invoke(app, ["adapters", "show", "cooking@1", "--json", "-c", str(registry_config)])
    assert json.loads(as_json.output)["validation"] == validation

    missing = runner.invoke(app, ["adapters", "show", "cooking@7", "-c", str(registry_config)])
    assert missing.exit_code == 2 and "cooking@7 does not exist" in missing.output


def test_train_refuses_bad_options_before_any_work(registry_config):
    runner = CliRunner()
    cases = [
        (["--type", "lokr"], "choose from lora, adalora, ia3, prompt, prefix"),
        (["--type", "prefix"], "prefix tuning trains but cannot be registered"),
        (["--resume"], "--resume needs --checkpoint-dir"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--type", "adalora", "--max-steps", "0"], "--max-steps"),
    ]
    for extra, message in cases:
        out = runner.invoke(app, ["train", "-d", "cooking", "-c", str(registry_config), *extra])
        assert out.exit_code == 2 and message in out.output, (extra, out.output)
