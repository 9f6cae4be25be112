"""Plugin overhead: retro-vllm against stock vLLM (its own environment, no retro-vllm) given the
identical final prompt, at 1k, 10k and 100k indexed chunks, in one run.

- Added TTFT: retro-vllm gets the bare question and does embedding, search and prompt assembly
  itself; stock vLLM gets the prompt retro-vllm would build (preamble, passages in canonical order,
  question; checked by equal prompt token counts). Requests alternate between the two servers,
  and which goes first alternates too. The split comes from retro-vllm's `Server-Timing` header;
  routing is timed on separate `model: "retro"` requests.
- Added API-side time: the same pairs, each request's TTFT less the time vLLM's engine core spent
  on it before its first token (queue + prefill, from each server's own Prometheus histograms).
  What is left is the API-server process's work (HTTP, rendering, tokenization, and for
  retro-vllm retrieval), which is where most of the plugin runs. The raw TTFT difference also
  carries the prefill's run-to-run spread: ~2 s prefills that vary by ~1% leave a p50 of 12
  paired differences too coarse to judge a 10 ms target (the table gives each p50's standard
  error). The plugin's engine-side work, its logits processor's set-up and first step, lies
  inside the engine's span: the table shows that span's paired difference too (as noisy as the
  raw one), and the throughput rows below measure the processor per token.
- Throughput: generated tokens/s at concurrency 16 (16 requests in flight: the questions are
  cycled up to the concurrency; fixed length, `ignore_eos`), at 10k chunks:
  retro-vllm as configured (its logits processor keeps citations valid on every request) and
  with retrieval-aware decoding on (`retro.bias`), each against stock vLLM in paired rounds.
  This is also the logits-processor bench: the same servers, so no second pair is started.
- Memory: peak RSS (VmHWM) of each API-server process after the 100k run, and peak anonymous RSS
  (sampled; what the process allocated, without mapped library files). Both environments'
  shared libraries are evicted from the page cache before the servers start and after every
  publish, and the index work (embedding the demo, publishing) runs in a separate process that
  exits, so this process never holds our environment's libraries (torch, faiss) in the page
  cache. Otherwise retro-vllm's server would count more library pages than stock vLLM's only
  because the bench itself used them.

Scale: the demo's 180 real chunks (real embeddings) plus filler chunks, published as new index
versions that the running server picks up without a restart. Filler vectors are clustered around
random centres, as real embeddings cluster by topic (uniform random vectors are the worst case
for an HNSW build, which no corpus is). Random centres are far from real questions, so filler
is rarely retrieved (the table counts any that was: 1 passage of 48 at 100k in the committed
run), so prompts stay nearly the same at every scale while the search pays for the whole index.
At each scale both servers get the same prompt (the "same final prompt" column checks it).
Prefix caching is off on both servers so that every request pays its prefill and the comparison
isolates the plugin.

    python -m bench.overhead [--scales 1000 10000 100000] [--questions 12]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from tqdm.auto import tqdm

from bench.harness.client import EngineSpan, chat, load, sdk
from bench.harness.config import demo_config
from bench.harness.driver import main
from bench.harness.memory import PeakMemory, evict_cached_libraries, isolated
from bench.harness.servers import STOCK_VENV, RetroServer, StockServer, running
from bench.harness.stats import median_se, p, p50
from bench.harness.workload import clustered, final_messages

MODEL = "SmolLM2-135M-Instruct"
ENGINE = ["--no-enable-prefix-caching"]


def publish_scaled(config_path: Path, total: int, real: tuple[list, np.ndarray]) -> None:
    from retro_vllm.config import load_config
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.index import SOURCE_CONFIG, DocumentEntry, IndexWriter, corpus_fingerprint
    from retro_vllm.retrieval.ingest import embedder_id
    from retro_vllm.retrieval.types import Chunk

    config = load_config(config_path)
    chunks, vectors = real
    embedder = Embedder(config.embedder.path)
    domains = config.domain_names
    rng = np.random.default_rng(0)
    filler = total - len(chunks)
    centres = rng.standard_normal((max(filler // 100, 8), vectors.shape[1])).astype(np.float32)
    with IndexWriter(config, dimension=vectors.shape[1], embedder_id=embedder_id(embedder), fresh=True) as writer:
        writer.store.upsert(chunks, vectors)
        for start in range(0, filler, 20000):
            count = min(20000, filler - start)
            part = [Chunk(id=f"filler-{i}#0", doc_id=f"filler-{i}", text=f"Filler passage {i}.",
                          domain=domains[i % len(domains)]) for i in range(start, start + count)]
            writer.store.upsert(part, clustered(rng, centres, count))
        for chunk in chunks:
            writer.manifest.documents.setdefault(chunk.doc_id, DocumentEntry(chunk.domain, SOURCE_CONFIG, "", 0))
        writer.config_fingerprint = corpus_fingerprint(config)
        writer.commit()


def real_chunks(config_path: Path) -> tuple[list, np.ndarray]:
    from retro_vllm.config import load_config
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.index import open_store

    config = load_config(config_path)
    embedder = Embedder(config.embedder.path)
    version = ensure_index(config, embedder, progress=False)
    store = open_store(config, version, lambda: embedder.dimension)
    chunks = list(store.chunks())
    return chunks, store.vectors([c.id for c in chunks])


async def measure(retro_url: str, stock_url: str, config_path: Path, real, questions: list[str], preamble: str,
                  args, results: dict) -> None:
    retro, stock = sdk(retro_url), sdk(stock_url)
    clients = {"retro": retro, "stock": stock}
    async with httpx.AsyncClient(timeout=600) as http:
        spans = {"retro": EngineSpan(http, retro_url), "stock": EngineSpan(http, stock_url)}

        async def search(question: str) -> list[dict]:
            return (await http.post(f"{retro_url}/v1/retro/search", json={"query": question})).json()["passages"]

        for scale in args.scales:
            isolated(publish_scaled, config_path, scale, real)
            evict_cached_libraries(Path(sys.prefix), STOCK_VENV)
            await search("warm-up")  # the first search after a publish loads the new version
            base = {"model": MODEL, "temperature": 0, "max_tokens": 4}
            # Stock's prompts are fetched before the timed pairs, so no search of the bench's own
            # warms retro-vllm's embedder just before its request (its caches are off: the same
            # question is searched again, in full, inside the request).
            passages_of = {q: await search(q) for q in questions}
            filler = sum(p["id"].startswith("filler-") for ps in passages_of.values() for p in ps)
            for client in (retro, stock):  # one untimed request each after the eviction
                await chat(client, {**base, "messages": [{"role": "user", "content": "warm-up"}]})
            rows = {"retro": [], "stock": []}
            api = {"retro": [], "stock": []}  # ms before and after the engine's queue + prefill
            for n, question in enumerate(tqdm(questions, desc=f"TTFT at {scale} chunks", unit="q")):
                bodies = {"retro": {**base, "messages": [{"role": "user", "content": question}]},
                          "stock": {**base, "messages": final_messages(preamble, question, passages_of[question])}}
                for name in (("retro", "stock") if n % 2 == 0 else ("stock", "retro")):  # who goes first alternates
                    before = await spans[name].totals()
                    timed = await chat(clients[name], bodies[name])
                    rows[name].append(timed)
                    api[name].append((timed.ttft_s - await spans[name].since(before)) * 1000)
            # Routing runs only for `model: "retro"`; timed on its own, retrieval off.
            routes = [(await chat(retro, {"model": "retro", "max_tokens": 1, "retro": {"retrieval": False},
                                          "messages": [{"role": "user", "content": q}]})).server_timing.get("route", 0.0)
                      for q in questions[:10]]
            added = [(r.ttft_s - s.ttft_s) * 1000 for r, s in zip(rows["retro"], rows["stock"])]
            added_api = [r - s for r, s in zip(api["retro"], api["stock"])]
            added_engine = [t - a for t, a in zip(added, added_api)]  # the queue + prefill difference
            split = {name: p50([t.server_timing.get(name, 0.0) for t in rows["retro"]])
                     for name in ("embed", "search", "prompt")}
            split["route"] = p50(routes)
            results["scales"][scale] = {
                "ttft_p50_ms": {k: p50([t.ttft_s for t in v]) * 1000 for k, v in rows.items()},
                "added_ttft_ms": {"p50": p50(added), "p95": p(added, 0.95), "se": median_se(added), "pairs": added},
                "api_side_p50_ms": {k: p50(v) for k, v in api.items()},
                "added_api_side_ms": {"p50": p50(added_api), "p95": p(added_api, 0.95), "se": median_se(added_api),
                                      "pairs": added_api},
                "added_engine_side_ms": {"p50": p50(added_engine), "se": median_se(added_engine)},
                "split_p50_ms": split, "questions": len(questions), "filler_retrieved": filler,
                "same_prompt": sum(r.prompt_tokens == s.prompt_tokens for r, s in zip(rows["retro"], rows["stock"])),
            }
            if scale == args.throughput_scale:
                body = {"model": MODEL, "temperature": 0, "max_tokens": args.max_tokens, "ignore_eos": True}
                # At least `concurrency` requests, so that many are in flight at once.
                load_questions = [questions[i % len(questions)] for i in range(max(args.concurrency, len(questions)))]
                bare = [{**body, "messages": [{"role": "user", "content": q}]} for q in load_questions]
                variants = {
                    "stock": (stock, [{**body, "messages": final_messages(preamble, q, passages_of[q])}
                                      for q in load_questions]),
                    "retro": (retro, bare),
                    "retro_bias": (retro, [{**b, "retro": {"bias": args.bias}} for b in bare]),
                }
                rates: dict[str, list[float]] = {name: [] for name in variants}
                prompts: dict[str, list[int]] = {}
                for _ in range(args.rounds):  # paired rounds: drift on a shared machine hits all
                    for name, (client, bodies) in variants.items():
                        wall, done = await load(client, bodies, args.concurrency)
                        rates[name].append(sum(x.completion_tokens for x in done) / wall)
                        prompts[name] = [x.prompt_tokens for x in done]

                def against_stock(name: str) -> dict:
                    return {"tokens_per_s": statistics.median(rates[name]), "rounds": rates[name],
                            "ratio": statistics.median(r / s for r, s in zip(rates[name], rates["stock"])),
                            "same_prompt": sum(a == b for a, b in zip(prompts[name], prompts["stock"]))}

                results["throughput"] = {"scale": scale, "concurrency": args.concurrency, "questions": len(load_questions),
                                         "max_tokens": args.max_tokens, "rounds": args.rounds,
                                         "retro_tok_s": statistics.median(rates["retro"]),
                                         "stock_tok_s": statistics.median(rates["stock"]),
                                         "ratio": against_stock("retro")["ratio"]}
                results["processor"] = {"stock": {"tokens_per_s": statistics.median(rates["stock"]),
                                                  "rounds": rates["stock"]},
                                        "constraint": against_stock("retro"), "bias": args.bias,
                                        "constraint_bias": against_stock("retro_bias")}


def options(parser) -> None:
    parser.add_argument("--scales", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--throughput-scale", type=int, default=10000)
    parser.add_argument("--max-tokens", type=int, default=32, help="Tokens per request in the throughput rounds.")
    parser.add_argument("--rounds", type=int, default=2, help="Paired throughput rounds (median).")
    parser.add_argument("--bias", type=float, default=1.0, help="retro.bias of the retrieval-aware decoding rows.")


def run(args) -> dict:
    from retro_vllm.config import DEMO_CONFIG, load_config

    preamble = load_config(DEMO_CONFIG).serving.preamble
    questions = []
    for path in sorted((DEMO_CONFIG.parent / "qa").glob("*.jsonl")):
        questions += [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    questions = questions[:: max(1, len(questions) // args.questions)][: args.questions]

    results: dict = {"scales": {}}
    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp:
        # Caches off: the retrieval path is measured in full, not a repeated query's cache hit.
        config_path = demo_config(Path(tmp) / "home", retrieval={"cache": {"results": 0, "embeddings": 0}})
        model_path = Path(load_config(config_path).model.path)
        real = isolated(real_chunks, config_path)
        evict_cached_libraries(Path(sys.prefix), STOCK_VENV)
        with running(RetroServer(config_path, ENGINE),
                     StockServer(model_path, MODEL, Path(tmp) / "stock.log", extra=ENGINE)) as (retro, stock):
            with PeakMemory({"retro": retro.process.pid, "stock": stock.process.pid}) as memory:
                asyncio.run(measure(retro.url, stock.url, config_path, real, questions, preamble, args, results))
            peaks = memory.result()
            results["memory_mb"] = {"retro": peaks["retro"]["rss"], "stock": peaks["stock"]["rss"],
                                    "retro_anon": peaks["retro"]["anon"], "stock_anon": peaks["stock"]["anon"],
                                    "scale": max(args.scales)}
    return results


def table(results: dict) -> str:
    lines = ["| indexed chunks | TTFT p50 stock ms | TTFT p50 retro ms | added TTFT p50 ± SE ms | added TTFT p95 ms "
             "| API-side p50 stock / retro ms | added API-side p50 ± SE ms | added API-side p95 ms "
             "| added engine-side p50 ± SE ms "
             "| embed p50 ms | search p50 ms | prompt p50 ms | route p50 ms | same final prompt | filler passages retrieved |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale, row in results["scales"].items():
        s, api = row["split_p50_ms"], row["api_side_p50_ms"]
        lines.append(f"| {scale:,} | {row['ttft_p50_ms']['stock']:.0f} | {row['ttft_p50_ms']['retro']:.0f} | "
                     f"{row['added_ttft_ms']['p50']:.1f} ± {row['added_ttft_ms']['se']:.1f} | "
                     f"{row['added_ttft_ms']['p95']:.1f} | {api['stock']:.1f} / {api['retro']:.1f} | "
                     f"**{row['added_api_side_ms']['p50']:.1f}** ± {row['added_api_side_ms']['se']:.1f} | "
                     f"{row['added_api_side_ms']['p95']:.1f} | {engine(row)} | {s['embed']:.1f} | "
                     f"{s['search']:.2f} | {s['prompt']:.1f} | {s['route']:.2f} | {row['same_prompt']}/{row['questions']} | "
                     f"{row.get('filler_retrieved', '-')} |")
    lines.append("")
    if "throughput" in results:
        t = results["throughput"]
        lines.append(f"Throughput at {t['scale']:,} chunks, concurrency {t['concurrency']}: retro-vllm "
                     f"{t['retro_tok_s']:.1f} vs stock {t['stock_tok_s']:.1f} generated tok/s = **{t['ratio']:.3f}x** "
                     "(target >= 0.95x).")
        lines.append("")
        lines.append(processor_table(results["processor"], t))
        lines.append("")
    m = results["memory_mb"]
    lines.append(f"Peak RSS of the API-server process at {m['scale']:,} chunks: retro-vllm {m['retro']:.0f} MB, "
                 f"stock {m['stock']:.0f} MB, **+{m['retro'] - m['stock']:.0f} MB** (target <= +300 MB). "
                 f"Peak anonymous RSS (allocated by the process; without mapped library files): retro-vllm "
                 f"{m['retro_anon']:.0f} MB, stock {m['stock_anon']:.0f} MB, +{m['retro_anon'] - m['stock_anon']:.0f} MB.")
    lines.append("Target: added TTFT p50 <= 10 ms at 10k chunks. The added API-side column is that measure with "
                 "the engine's queue and prefill taken out of both sides of each pair (see the bench's docstring); "
                 "the engine-side column is the rest of each pair's TTFT difference (the plugin's logits processor "
                 "works there, and the prefill's spread lands there). SE is the standard error of the p50 "
                 "(bootstrap over the pairs). The split parts "
                 "are retro-vllm's own work; its prompt part includes vLLM's chat rendering and tokenization, which "
                 "vLLM then skips (it is given the token ids). Prefix caching off on both servers; citation work "
                 "happens after the answer (not in TTFT); its time is in the `retro-cite` Server-Timing part.")
    return "\n".join(lines)


def engine(row: dict) -> str:
    measure = row.get("added_engine_side_ms")
    return f"{measure['p50']:.1f} ± {measure['se']:.1f}" if measure else "-"


def processor_table(proc: dict, t: dict) -> str:
    lines = ["| server | generated tok/s (median of rounds) | ratio to stock (median of paired rounds) "
             "| prompt tokens, same as stock |", "|---|---|---|---|",
             f"| stock vLLM (no retro-vllm installed) | {proc['stock']['tokens_per_s']:.1f} | 1.000x | |"]
    for label, key in (("retro-vllm, citation constraint", "constraint"),
                       (f"retro-vllm, constraint + bias {proc['bias']:g}", "constraint_bias")):
        row = proc[key]
        lines.append(f"| {label} | {row['tokens_per_s']:.1f} | {row['ratio']:.3f}x | {row['same_prompt']}/{t['questions']} |")
    lines.append(f"\nLogits processor: {t['questions']} requests (the questions, cycled) x {t['rounds']} rounds, concurrency {t['concurrency']}, "
                 f"{t['max_tokens']} tokens each (ignore_eos), greedy. Target: >= 0.97x.")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    scales = list(results["scales"])
    parts = ("embed", "search", "prompt", "route")
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = np.zeros(len(scales))
    for part in parts:
        values = np.array([results["scales"][s]["split_p50_ms"][part] for s in scales])
        ax.bar([f"{s:,}" for s in scales], values, bottom=bottom, label=part)
        bottom += values
    ax.plot([f"{s:,}" for s in scales], [results["scales"][s]["added_ttft_ms"]["p50"] for s in scales], "k.-",
            label="added TTFT p50")
    ax.plot([f"{s:,}" for s in scales], [results["scales"][s]["added_api_side_ms"]["p50"] for s in scales], "rs-",
            label="added API-side p50")
    ax.set_xlabel("indexed chunks")
    ax.set_ylabel("ms")
    ax.set_title("retro-vllm added latency vs stock vLLM")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main(sys.modules[__name__])
