"""Generated tokens/s with retro-vllm's logits processor active on every request, against stock
vLLM from an environment without retro-vllm, given the identical final prompt, in one run.

Both servers run the same engine arguments. Each request generates exactly `--max-tokens`
tokens (`ignore_eos`), so throughput compares like with like. Rounds alternate between the
servers so that drift on a shared machine hits both.

    python -m bench.processor_overhead [--questions 16] [--concurrency 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.common import RetroServer, demo_config, load, sdk, write_result
from bench.stock import StockServer

MODEL = "SmolLM2-135M-Instruct"
NO_CACHE = ["--no-enable-prefix-caching"]


def final_messages(preamble: str, question: str, passages: list[dict]) -> list[dict]:
    """What retro-vllm sends vLLM: preamble, passages in canonical (id) order, the question."""
    ordered = sorted(passages, key=lambda p: p["id"])
    sources = "\n\n".join(f"[{n}] {p['title']}\n{p['text']}" for n, p in enumerate(ordered, 1))
    return [{"role": "system", "content": f"{preamble}\n\nSources:\n\n{sources}"}, {"role": "user", "content": question}]


async def burst(url: str, bodies: list[dict], concurrency: int) -> tuple[float, int, list[int]]:
    """Wall seconds, completion tokens, prompt token counts."""
    wall, results = await load(sdk(url), bodies, concurrency)
    return wall, sum(r.completion_tokens for r in results), [r.prompt_tokens for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bias", type=float, default=1.0, help="retro.bias of the 'constraint + bias' rows.")
    args = parser.parse_args()
    from retro_vllm.config import DEMO_CONFIG, load_config

    config = load_config(DEMO_CONFIG)
    questions = []
    for path in sorted((DEMO_CONFIG.parent / "qa").glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        questions += [(path.stem, r["question"]) for r in records]
    questions = questions[:: max(1, len(questions) // args.questions)][: args.questions]
    common = {"model": MODEL, "temperature": 0, "max_tokens": args.max_tokens, "ignore_eos": True}

    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp:
        home = Path(tmp) / "home"
        config_path = demo_config(home)
        model_path = Path(load_config(config_path).model.path)
        # Prefix caching off on both: the variants send the same prompts one after another.
        with RetroServer(config_path, NO_CACHE) as retro, \
                StockServer(model_path, MODEL, Path(tmp) / "stock.log", extra=NO_CACHE) as stock:
            with httpx.Client(timeout=60) as client:
                passages = [client.post(f"{retro.url}/v1/retro/search", json={"query": q, "domain": d}).json()["passages"]
                            for d, q in questions]
            variants = {
                "stock vLLM (no retro-vllm installed)": (stock.url, [
                    {**common, "messages": final_messages(config.serving.preamble, q, ps)}
                    for (_, q), ps in zip(questions, passages)]),
                "retro-vllm, citation constraint": (retro.url, [
                    {**common, "messages": [{"role": "user", "content": q}], "retro": {"domain": d, "bias": 0}}
                    for d, q in questions]),
                f"retro-vllm, constraint + bias {args.bias:g}": (retro.url, [
                    {**common, "messages": [{"role": "user", "content": q}], "retro": {"domain": d, "bias": args.bias}}
                    for d, q in questions]),
            }
            rates: dict[str, list[float]] = {name: [] for name in variants}
            prompt_tokens: dict[str, list[int]] = {}

            async def measure() -> None:
                for url, bodies in variants.values():  # warm-up
                    await burst(url, bodies[:2], 2)
                for _ in range(args.rounds):
                    for name, (url, bodies) in variants.items():
                        wall, tokens, prompts = await burst(url, bodies, args.concurrency)
                        rates[name].append(tokens / wall)
                        prompt_tokens[name] = prompts

            asyncio.run(measure())
    # Paired ratios: each round's burst against the stock burst of the same round, so slow
    # phases of a shared machine cancel out.
    stock_rates = rates[next(iter(rates))]
    lines = ["| server | generated tok/s (median of rounds) | ratio to stock (median of paired rounds) "
             "| prompt tokens, same as stock |", "|---|---|---|---|"]
    stock_prompts = prompt_tokens[next(iter(prompt_tokens))]
    summary = {}
    for name, values in rates.items():
        rate = statistics.median(values)
        ratio = statistics.median(v / s for v, s in zip(values, stock_rates))
        same = sum(a == b for a, b in zip(prompt_tokens[name], stock_prompts))
        summary[name] = {"tokens_per_s": rate, "ratio": ratio, "rounds": values}
        lines.append(f"| {name} | {rate:.1f} | {ratio:.3f}x | {same}/{len(stock_prompts)} |")
    lines.append("")
    lines.append(f"{len(questions)} questions x {args.rounds} rounds, concurrency {args.concurrency}, "
                 f"{args.max_tokens} tokens each (ignore_eos), greedy. Target: >= 0.97x.")
    markdown = "\n".join(lines)
    print(markdown)
    print(f"\nwritten: {write_result('processor_overhead', markdown, summary)}")


if __name__ == "__main__":
    main()
