"""The bench harness without a server: every bench module keeps the contract the driver runs,
the driver writes what `make bench` expects, and importing the benches maps no engine library."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from bench.__main__ import BENCHES
from bench.harness import driver, results
from bench.harness.stats import median_se, p, p50

REPO = Path(__file__).resolve().parents[2]
MODULES = [*BENCHES.values(), "bench.adapter_validation"]


@pytest.mark.parametrize("module", MODULES)
def test_every_bench_keeps_the_contract(module, capsys):
    bench = importlib.import_module(module)
    assert callable(bench.options) and callable(bench.run) and callable(bench.table)
    with pytest.raises(SystemExit) as exit_:
        driver.main(bench, ["--help"])
    assert exit_.value.code == 0
    assert bench.__doc__.splitlines()[0] in capsys.readouterr().out


def test_benches_run_by_name_are_the_modules_of_that_name():
    # `python -m bench NAME` runs `python -m bench.NAME`, whose result files are named by the module.
    assert all(module == f"bench.{name}" for name, module in BENCHES.items())


def fake_bench(plotted: list) -> types.ModuleType:
    bench = types.ModuleType("bench.fake", "A fake bench.")
    bench.__spec__ = ModuleSpec("bench.fake", None)
    bench.options = lambda parser: parser.add_argument("--n", type=int, default=2)
    bench.run = lambda args: {"n": args.n, "rows": {1: [0.5] * args.n}}
    bench.table = lambda result: f"| n |\n|---|\n| {result['n']} |"
    bench.plot = lambda result, path: plotted.append((result["n"], path))
    return bench


def test_driver_writes_the_table_the_figures_and_the_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "pyplot", lambda: object())  # as if matplotlib were installed
    plotted = []
    result = driver.main(fake_bench(plotted), ["--n", "3"])
    assert result == {"n": 3, "rows": {1: [0.5] * 3}}
    markdown = (tmp_path / "fake.md").read_text()
    assert markdown.startswith("# fake\n\n") and markdown.endswith("| 3 |\n")
    written = json.loads((tmp_path / "fake.json").read_text())
    assert {"when", "machine"} <= set(written) and written["rows"] == {"1": [0.5] * 3}
    assert plotted == [(3, tmp_path / "fake.png")]
    out = capsys.readouterr().out
    assert "| 3 |" in out and f"written: {tmp_path / 'fake.md'}" in out


def test_driver_skips_the_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(results, "pyplot", lambda: None)
    plotted = []
    driver.main(fake_bench(plotted), [])
    assert plotted == [] and (tmp_path / "fake.json").exists()


def test_importing_the_benches_maps_no_engine_library():
    # The overhead bench compares servers' memory: this process must not map torch, vLLM or faiss.
    code = (f"import sys; import {', '.join(MODULES)}, bench.__main__; "
            "print(sorted(m for m in ('torch', 'vllm', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_percentiles_and_the_median_standard_error():
    values = [float(v) for v in range(1, 102)]
    assert p50(values) == 51.0 and p(values, 0.95) == 96.0 and p(values, 0.0) == 1.0
    assert p([], 0.5) != p([], 0.5) and p50([]) != p50([])  # nan for no samples
    assert median_se([3.0]) != median_se([3.0])
    assert median_se([5.0] * 20) == 0.0 and 0 < median_se(values) < 10
    assert median_se(values) == median_se(values)  # fixed seed: the same table twice
