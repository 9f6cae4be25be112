"""Run every bench, then write bench/results/README.md: one table of ratios, each measured
against its baseline in the same run, with the machine it ran on.

    .venv/bin/python -m bench            # all (about 20 minutes on 2 cores)
    .venv/bin/python -m bench overhead   # some, by name

Benches: overhead (plugin vs stock vLLM, 1k/10k/100k chunks, memory, and the logits processor's
throughput on the same servers), client_rag (server-side RAG vs a LangChain chain on stock vLLM),
kv_layout (prefix-cache-aware prompt layout vs a naive one), store_scale (FAISS exact, FAISS HNSW,
Qdrant Edge at 10k/100k chunks), multi_lora (LoRA slots: 1/4/8/32 distinct adapters in one batch,
and the cost of --max-lora-rank 256 that IA3-as-LoRA needs). Stock vLLM runs from its own environment
(.venv-stock, created on first use) because retro-vllm's logits processor loads in every vLLM of
an environment.

Each bench also runs alone, with its options: `python -m bench.overhead --help`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.harness.results import RESULTS, machine

BENCHES = {
    "overhead": "bench.overhead",
    "client_rag": "bench.client_rag",
    "kv_layout": "bench.kv_layout",
    "store_scale": "bench.store_scale",
    "multi_lora": "bench.multi_lora",
}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"  # bench/harness/driver.py names result files after the bench's module
    return json.loads(path.read_text()) if path.exists() else None


def se(measure: dict) -> str:
    return f" (SE {measure['se']:.1f})" if "se" in measure else ""


def summary_rows() -> list[tuple[str, str, str, str, str]]:
    """(bench, measure, retro-vllm, baseline, ratio / target)."""
    rows = []
    overhead = load("overhead")
    if overhead:
        for scale, row in overhead["scales"].items():
            rows.append(("overhead", f"added TTFT p50 / p95 at {int(scale):,} chunks",
                         f"{row['ttft_p50_ms']['retro']:.0f} ms", f"{row['ttft_p50_ms']['stock']:.0f} ms (stock vLLM)",
                         f"{row['added_ttft_ms']['p50']:+.1f}{se(row['added_ttft_ms'])} / {row['added_ttft_ms']['p95']:+.1f} ms "
                         "(target p50 <= 10 ms at 10k)"))
            if "added_api_side_ms" in row:
                api = row["api_side_p50_ms"]
                rows.append(("overhead", f"added API-side time p50 / p95 at {int(scale):,} chunks (TTFT less the "
                             "engine's queue + prefill)", f"{api['retro']:.1f} ms", f"{api['stock']:.1f} ms (stock vLLM)",
                             f"{row['added_api_side_ms']['p50']:+.1f}{se(row['added_api_side_ms'])} / "
                             f"{row['added_api_side_ms']['p95']:+.1f} ms (target p50 <= 10 ms at 10k)"))
        if "throughput" in overhead:
            t = overhead["throughput"]
            rows.append(("overhead", f"generated tok/s, concurrency {t['concurrency']}", f"{t['retro_tok_s']:.1f}",
                         f"{t['stock_tok_s']:.1f}", f"{t['ratio']:.3f}x (target >= 0.95x)"))
        m = overhead["memory_mb"]
        rows.append(("overhead", f"API-server peak RSS at {m['scale']:,} chunks", f"{m['retro']:.0f} MB",
                     f"{m['stock']:.0f} MB", f"+{m['retro'] - m['stock']:.0f} MB (target <= +300 MB)"))
        if "retro_anon" in m:
            rows.append(("overhead", f"API-server peak anonymous RSS at {m['scale']:,} chunks",
                         f"{m['retro_anon']:.0f} MB", f"{m['stock_anon']:.0f} MB",
                         f"+{m['retro_anon'] - m['stock_anon']:.0f} MB (without mapped library files)"))
    client = load("client_rag")
    if client:
        for level, pair in client.items():
            if not isinstance(pair, dict) or "retro-vllm" not in pair:
                continue
            ours, base = pair["retro-vllm"], pair["langchain + stock vLLM"]
            rows.append(("client_rag", f"requests/s, concurrency {level}", f"{ours['requests_s']:.2f}",
                         f"{base['requests_s']:.2f} (LangChain chain)", f"{ours['requests_s'] / base['requests_s']:.2f}x"))
            rows.append(("client_rag", f"TTFT p50, concurrency {level}", f"{ours['ttft_p50']:.0f} ms",
                         f"{base['ttft_p50']:.0f} ms", f"{base['ttft_p50'] / ours['ttft_p50']:.2f}x (baseline / retro-vllm; > 1 = retro-vllm faster)"))
    processor = (overhead or {}).get("processor")
    if processor:
        stock = processor["stock"]["tokens_per_s"]
        for label, key in (("citation constraint", "constraint"), (f"constraint + bias {processor['bias']:g}",
                                                                   "constraint_bias")):
            row = processor[key]
            rows.append(("processor", f"generated tok/s: retro-vllm, {label}", f"{row['tokens_per_s']:.1f}",
                         f"{stock:.1f} (stock vLLM)", f"{row['ratio']:.3f}x (target >= 0.97x)"))
    kv = load("kv_layout")
    if kv:
        rows.append(("kv_layout", "TTFT p50 of repeated passages", f"{kv['retro']['ttft_p50_repeat_ms']:.0f} ms",
                     f"{kv['naive']['ttft_p50_repeat_ms']:.0f} ms (naive layout)",
                     f"{kv['repeat_ttft_ratio_naive_over_retro']:.2f}x lower (target >= 4x)"))
        rows.append(("kv_layout", "prefix-cache share of repeated prompts", f"{kv['retro']['cached_share_repeat']:.1%}",
                     f"{kv['naive']['cached_share_repeat']:.1%}", ""))
    stores = load("store_scale")
    if stores:
        for scale, by_store in stores["scales"].items():
            exact = by_store["faiss exact"]
            for name, row in by_store.items():
                if name == "faiss exact":
                    continue
                rows.append(("store_scale", f"search p50 / build, {int(scale):,} chunks: {name}",
                             f"{row['p50_ms']:.2f} ms / {row['build_per_s']:,.0f} per s",
                             f"{exact['p50_ms']:.2f} ms / {exact['build_per_s']:,.0f} per s (FAISS exact)",
                             f"{row['search_p50_ratio']:.2f}x faster, build {row['build_ratio']:.2f}x, "
                             f"recall@10 {row['recall@10']:.3f}"))
    multi_lora = load("multi_lora")
    if multi_lora:
        from bench.multi_lora import summary_rows as multi_lora_rows

        rows += multi_lora_rows(multi_lora)
    return rows


def write_summary(seconds: dict[str, float]) -> None:
    rows = summary_rows()
    lines = [f"# Benchmarks: latest results\n", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}\n",
             "Every ratio is against a baseline measured in the same run; details and per-bench tables in the "
             "files beside this one. Reproduce: `make bench` (or `.venv/bin/python -m bench`).\n",
             "| bench | measure | retro-vllm | baseline | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    if seconds:
        lines.append("")
        lines.append("Run time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + ".")
    (RESULTS / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown or "--help" in names or "-h" in names:
        print(__doc__)
        sys.exit(2 if unknown else 0)
    seconds = {}
    for name in names:
        print(f"==> bench {name}", flush=True)
        start = time.perf_counter()
        # Its own interpreter (which runs bench/harness/driver.py's main): no bench inherits another's
        # mapped libraries or engine memory (vLLM frees an engine's memory only when its process ends).
        subprocess.run([sys.executable, "-m", BENCHES[name]], check=True)
        seconds[name] = time.perf_counter() - start
    write_summary(seconds)


if __name__ == "__main__":
    main()
