"""KV-cache-aware prompt layout vs a naive one, on one server, in one run.

Workload: questions from the demo's QA files, each asked in three wordings (the first is
"cold", the two others repeat it and usually retrieve the same passages). retro-vllm's layout
puts preamble and passages (canonical order) first, so a repeat reuses their K/V from vLLM's
prefix cache; the naive layout (what a client-side RAG chain typically sends: question first,
then passages by score) is built here from the same retrieval (`/v1/retro/search`) and sent
with `retro.retrieval: false`, so both go through the same engine, model and adapter.

    python -m bench.kv_layout [--per-domain 3] [--model SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from bench.harness.client import chat, sdk
from bench.harness.config import demo_config
from bench.harness.driver import main
from bench.harness.servers import RetroServer
from bench.harness.stats import p50

WORDINGS = ("{q}", "Briefly: {q}", "{q} Please explain.")


def naive_messages(preamble: str, question: str, passages: list[dict]) -> list[dict]:
    by_score = sorted(passages, key=lambda p: -p["score"])
    sources = "\n\n".join(f"[{n}] {p['title']}\n{p['text']}" for n, p in enumerate(by_score, 1))
    return [{"role": "system", "content": preamble}, {"role": "user", "content": f"{question}\n\nSources:\n\n{sources}"}]


async def measure(url: str, *, model: str, per_domain: int, preamble: str, qa_dir: Path, max_tokens: int = 8) -> dict:
    jobs = []
    for path in sorted(qa_dir.glob("*.jsonl")):
        domain = path.stem
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:per_domain]
        jobs += [(domain, r["question"]) for r in records]
    rows = {"retro": {"cold": [], "repeat": []}, "naive": {"cold": [], "repeat": []}}
    same_set = 0
    client = sdk(url)
    async with httpx.AsyncClient(timeout=60) as http:
        for domain, question in tqdm(jobs, desc="kv layout", unit="question"):
            first_ids = None
            for n, wording in enumerate(WORDINGS):
                text = wording.format(q=question)
                part = "cold" if n == 0 else "repeat"
                body = {"model": model, "temperature": 0, "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": text}], "retro": {"domain": domain}}
                rows["retro"][part].append(await chat(client, body))
                search = await http.post(f"{url}/v1/retro/search", json={"query": text, "domain": domain})
                passages = search.json()["passages"]
                ids = sorted(p["id"] for p in passages)
                if n == 0:
                    first_ids = ids
                elif ids == first_ids:
                    same_set += 1
                naive = {"model": model, "temperature": 0, "max_tokens": max_tokens,
                         "messages": naive_messages(preamble, text, passages), "retro": {"retrieval": False}}
                rows["naive"][part].append(await chat(client, naive))
    return {"rows": rows, "questions": len(jobs), "repeats": len(jobs) * (len(WORDINGS) - 1), "same_set": same_set}


def summarise(measured: dict) -> dict:
    """Per layout: TTFT p50 of cold and repeated questions, the prefix-cache share and the prompt
    tokens p50 of the repeats; the repeats' TTFT ratio; the counts the table states."""
    summary = {}
    for layout, parts in measured["rows"].items():
        cold = p50([t.ttft_s for t in parts["cold"]]) * 1000
        repeat = p50([t.ttft_s for t in parts["repeat"]]) * 1000
        cached = sum(t.cached_tokens for t in parts["repeat"]) / max(1, sum(t.prompt_tokens for t in parts["repeat"]))
        tokens = p50([t.prompt_tokens for t in parts["repeat"]])
        summary[layout] = {"ttft_p50_cold_ms": cold, "ttft_p50_repeat_ms": repeat, "cached_share_repeat": cached,
                           "prompt_tokens_p50_repeat": tokens}
    ratio = summary["naive"]["ttft_p50_repeat_ms"] / summary["retro"]["ttft_p50_repeat_ms"]
    summary["repeat_ttft_ratio_naive_over_retro"] = ratio
    return {**summary, **{key: measured[key] for key in ("questions", "repeats", "same_set")}}


def table(result: dict) -> str:
    lines = [f"Model: `{result['model']}`.", "",
             "| layout | TTFT p50 cold ms | TTFT p50 repeat ms | cached share of prompt, repeats | prompt tokens p50 |",
             "|---|---|---|---|---|"]
    for layout in ("retro", "naive"):
        row = result[layout]
        lines.append(f"| {layout} | {row['ttft_p50_cold_ms']:.0f} | {row['ttft_p50_repeat_ms']:.0f} | "
                     f"{row['cached_share_repeat']:.1%} | {row['prompt_tokens_p50_repeat']:.0f} |")
    lines.append("")
    ratio = result["repeat_ttft_ratio_naive_over_retro"]
    lines.append(f"Repeated part: naive TTFT p50 / retro TTFT p50 = **{ratio:.2f}x** (target >= 4x). "
                 f"{result['questions']} questions x {len(WORDINGS)} wordings; {result['same_set']} of "
                 f"{result['repeats']} repeats retrieved the same passage set as the first wording.")
    return "\n".join(lines)


def options(parser) -> None:
    parser.add_argument("--per-domain", type=int, default=3,
                        help="Questions per demo domain (each asked in 3 wordings, in both layouts).")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct",
                        help="Served model or adapter name, the same for both layouts.")
    parser.add_argument("--url", default=None, help="Use a running retro-vllm server instead of starting one.")


def run(args) -> dict:
    from retro_vllm.config import DEMO_CONFIG, load_config

    preamble = load_config(DEMO_CONFIG).serving.preamble
    qa_dir = DEMO_CONFIG.parent / "qa"
    if args.url:
        measured = asyncio.run(measure(args.url, model=args.model, per_domain=args.per_domain, preamble=preamble,
                                       qa_dir=qa_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp, \
                RetroServer(demo_config(Path(tmp) / "home")) as server:
            measured = asyncio.run(measure(server.url, model=args.model, per_domain=args.per_domain,
                                           preamble=preamble, qa_dir=qa_dir))
    return {"model": args.model, **summarise(measured)}


if __name__ == "__main__":
    main(sys.modules[__name__])
