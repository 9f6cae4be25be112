"""The multi-LoRA bench's arithmetic: paired ratios, the result's shape, the summary rows (no engine)."""

from __future__ import annotations

import json
import statistics

import pytest

from bench.multi_lora import ADAPTER_COUNTS, IA3_RANK, adapters_name, analyse, paired, summary_rows, table


def fake_runs() -> dict:
    rounds = [1.0, 1.1, 0.9]  # machine drift shared by every setting of a round
    rank8 = {adapters_name(k): [100 * d * (1 - 0.01 * k) for d in rounds] for k in ADAPTER_COUNTS}
    rank8["k/v rank 8"] = [50.0, 52.0, 48.0]
    return {
        "base": {"start_s": 10, "load_s": {}, "rates": {"base model": [200.0, 210.0, 190.0],
                                                        "base model, small batch": [80.0, 82.0, 78.0]}},
        "rank8": {"start_s": 12, "load_s": {adapters_name(32): 3.0}, "rates": rank8},
        "rank256": {"start_s": 11, "load_s": {}, "rates": {f"k/v rank {IA3_RANK}": [5.0, 5.2],
                                                           "k/v rank 8": [5.1, 5.3]}},
    }


def test_paired_ratio_cancels_drift_shared_by_a_round():
    rates = {"a": [10.0, 20.0, 5.0], "b": [9.0, 18.0, 4.5]}
    assert paired(rates, "b", "a") == pytest.approx(0.9)


def test_analyse_ratios():
    result = analyse(fake_runs())
    assert result["adapters"][1]["vs_1_adapter"] == 1.0
    assert result["adapters"][32]["vs_1_adapter"] == pytest.approx(0.68 / 0.99)
    assert result["adapters"][8]["target_vs_1"] == 0.9 and result["adapters"][4]["target_vs_1"] is None
    assert result["adapters"][1]["vs_base"] == pytest.approx(99 / 200)
    rank = result["rank"]
    assert rank["ia3_vs_rank8"] == pytest.approx(5.1 / 50)
    assert rank["rank8_vs_base"] == pytest.approx(50 / 80)
    assert rank["rank8_on_256_vs_ia3"] == pytest.approx(statistics.median([5.1 / 5.0, 5.3 / 5.2]))


def test_summary_rows_read_the_written_json():
    result = analyse(fake_runs())
    result["setup"] = {"prompts": 16, "max_tokens": 16, "rounds": 3, "rank_prompts": 4, "rank_max_tokens": 12,
                       "rank_rounds": 2}
    result["wall_s"] = 180.0
    assert "| 32 |" in table(result)
    reread = json.loads(json.dumps(result))  # bench/__main__ reads the json: integer keys become strings
    rows = summary_rows(reread)
    assert rows == summary_rows(result)
    assert all(len(row) == 5 and row[0] == "multi_lora" for row in rows)
    assert any("target >= 0.8x" in row[4] for row in rows)
    assert any(f"rank-{IA3_RANK}" in row[1] for row in rows)
