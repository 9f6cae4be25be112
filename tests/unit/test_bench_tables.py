"""Benches whose tables state their settings: the table is drawn from the written result alone
(re-read from JSON, integer keys turned to strings), and bench/__main__'s summary still reads it."""

from __future__ import annotations

import json

import pytest

import bench.__main__ as summary
from bench import adapter_validation, client_rag, kv_layout
from bench.harness.client import Timed


def reread(result: dict) -> dict:
    return json.loads(json.dumps(result))


def test_kv_layout_table_from_the_summarised_measurement():
    def timed(ttft: float, cached: int) -> Timed:
        return Timed(ttft, ttft, 200, cached, 8, {})

    measured = {"rows": {"retro": {"cold": [timed(1.0, 0)], "repeat": [timed(0.2, 150), timed(0.2, 150)]},
                         "naive": {"cold": [timed(1.0, 0)], "repeat": [timed(1.0, 0), timed(1.0, 10)]}},
                "questions": 1, "repeats": 2, "same_set": 2}
    result = {"model": "m", **kv_layout.summarise(measured)}
    assert result["repeat_ttft_ratio_naive_over_retro"] == pytest.approx(5.0)
    assert result["retro"]["cached_share_repeat"] == pytest.approx(0.75)
    markdown = kv_layout.table(result)
    assert markdown == kv_layout.table(reread(result))
    assert markdown.startswith("Model: `m`.") and "| retro | 1000 | 200 | 75.0% | 200 |" in markdown
    assert "**5.00x**" in markdown and "2 of 2 repeats" in markdown


def client_rag_result() -> dict:
    row = {"requests_s": 2.0, "tokens_s": 96.0, "ttft_p50": 100.0, "ttft_p95": 150.0, "total_p50": 500.0,
           "total_p95": 600.0}
    return {**{level: {"langchain + stock vLLM": row, "retro-vllm": {**row, "requests_s": 2.5}} for level in (1, 4)},
            "setup": {"max_tokens": 48, "per_level": [6, 12]}}


def test_client_rag_table_states_its_setup_and_only_levels_as_rows():
    result = client_rag_result()
    markdown = client_rag.table(result)
    assert markdown == client_rag.table(reread(result))
    assert "48 generated tokens per answer" in markdown and "questions per level [6, 12]" in markdown
    assert "setup" not in markdown and markdown.count("| retro-vllm |") == 2


def test_the_summary_reads_client_rag_levels_past_the_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    (tmp_path / "client_rag.json").write_text(json.dumps(client_rag_result()))
    rows = summary.summary_rows()
    assert [row[1] for row in rows] == ["requests/s, concurrency 1", "TTFT p50, concurrency 1",
                                        "requests/s, concurrency 4", "TTFT p50, concurrency 4"]


def test_adapter_validation_table_states_its_setup():
    figures = {"loss": 1.0, "f1": 0.5, "valid_citations": 1.0}
    result = {"domains": {"cooking": {"n": 12, "adapter": figures, "base": {**figures, "loss": 2.0}, "better": True,
                                      "rule": "adapter loss < base loss", "seconds": 90.0}},
              "setup": {"max_new_tokens": 64, "top_k": 4}}
    markdown = adapter_validation.table(result)
    assert markdown == adapter_validation.table(reread(result))
    assert "| cooking (demo LoRA) | 12 | 1.000 / 2.000 |" in markdown and "| better |" in markdown
    assert "64 new tokens, top_k 4 passages" in markdown
