"""Multi-LoRA throughput: generated tokens/s of one vLLM engine batch whose requests use 1, 4, 8
and 32 distinct LoRA adapters (request i uses adapter i % k), as ratios to the single-adapter
batch and to the base model on an engine without LoRA; and the cost of serving an IA3 adapter as
an exact LoRA (rank 192 on k_proj/v_proj, which needs --max-lora-rank 256) against a rank-8 adapter
on the same modules. All in one run, about 3.5 minutes on 2 cores.

Three engines, one process each (vLLM frees an engine's memory only when its process ends), the
same flags but for LoRA: bfloat16 as `retro-vllm serve` runs the model, eager mode, prefix
caching off (each setting sends the same batch again), greedy, `ignore_eos`, so every request
generates exactly its `max_tokens`:

    base     no --enable-lora                                    -> the base-model rows
    rank8    --max-lora-rank 8, --max-loras 32, max_cpu_loras 33 -> 1/4/8/32 adapters; k/v rank 8
    rank256  --max-lora-rank 256, --max-loras 2                  -> k/v rank 192; k/v rank 8

The rank-cost rows use a smaller batch (`--rank-prompts` x `--rank-max-tokens`): vLLM's CPU LoRA
path pads every adapter to --max-lora-rank, and at 256 a pass is several times slower.

Adapter loading is timed apart: one 1-token request per adapter, then one untimed short pass per
setting, before the timed rounds. Timed rounds cycle through the settings of one batch shape, so
drift on a shared machine hits all of them; ratios inside an engine are medians of ratios paired
by round, ratios across engines are ratios of medians. A timed pass whose engine got under 80% of
its usual CPU share (another process on the machine) is run again, at most twice.

The adapters are synthetic: peft `LoraConfig(init_lora_weights=False)`, seeded random non-zero
weights, saved with `save_pretrained` into a temporary folder. Throughput depends on the
adapters' shapes, not on what their weights say.

    python -m bench.multi_lora [--prompts 32] [--max-tokens 16] [--rounds 3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.driver import main
from bench.harness.results import REPO

ADAPTER_COUNTS = (1, 4, 8, 32)
QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
KV = ["k_proj", "v_proj"]
IA3_RANK = 192  # SmolLM2-135M's k_proj/v_proj output size: IA3 there is an exact LoRA of this rank
TARGETS = {8: 0.9, 32: 0.8}  # issue 8: >= 0.9x at 8 adapters, >= 0.8x at 32, against 1 adapter
TOPICS = ["the tides", "compilers", "bread", "volcanoes", "the printing press", "jazz", "glaciers",
          "public-key cryptography", "honeybees", "the Roman roads", "photosynthesis", "chess openings",
          "lighthouses", "vaccines", "sailing knots", "the metric system"]

# One engine per process. The engine core runs in this process (no multiprocessing) to save the
# start of a second interpreter. Lines starting with PROGRESS / RESULT are read by the parent.
ENGINE = r"""
import json, os, sys, time

def say(*parts):
    print("PROGRESS", *parts, flush=True)

def cpu_seconds():
    t = os.times()
    return t.user + t.system

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    start = time.perf_counter()
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=spec["model"], seed=0, enforce_eager=True, max_model_len=256, enable_prefix_caching=False,
              max_num_seqs=max(64, *(len(b["prompts"]) for b in spec["batches"].values())), **spec["engine"])
    started = time.perf_counter() - start
    say(f"engine started in {started:.0f} s")
    ids = {}  # adapter path -> LoRA int id, stable for the engine's life

    def lora(path):
        ids.setdefault(path, len(ids) + 1)
        return LoRARequest(f"a{ids[path]}", ids[path], path)

    def batch(setting, max_tokens=None):
        # (generated tokens/s, CPU share: this process's CPU seconds over wall seconds)
        prompts, n = spec["batches"][setting["batch"]]["prompts"], spec["batches"][setting["batch"]]["max_tokens"]
        n = max_tokens or n
        paths = setting["adapters"]
        loras = [lora(paths[i % len(paths)]) for i in range(len(prompts))] if paths else None
        cpu, begin = cpu_seconds(), time.perf_counter()
        outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True),
                               lora_request=loras, use_tqdm=False)
        seconds = time.perf_counter() - begin
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        assert tokens == n * len(prompts), tokens
        return tokens / seconds, (cpu_seconds() - cpu) / seconds

    settings = spec["settings"]
    begin = time.perf_counter()
    batch({**next(iter(settings.values())), "adapters": []}, max_tokens=2)  # untimed: one-off first-pass costs
    say(f"warm-up pass {time.perf_counter() - begin:.1f} s")
    loads, rates, shares, retried = {}, {name: [] for name in settings}, {name: [] for name in settings}, 0
    usual = 0.0  # the highest CPU share of a timed pass so far: what the engine gets on a quiet machine
    # Settings are measured in groups of one batch shape, all adapters of a group loaded first (so
    # no slot is evicted inside a group), the rounds cycling through the group's settings.
    for group in dict.fromkeys(s["batch"] for s in settings.values()):
        members = {name: s for name, s in settings.items() if s["batch"] == group}
        for name, setting in members.items():  # one 1-token request per adapter loads them: timed apart
            unique = list(dict.fromkeys(setting["adapters"]))
            if unique:
                begin = time.perf_counter()
                prompts = spec["batches"][group]["prompts"]
                llm.generate([prompts[i % len(prompts)] for i in range(len(unique))],
                             SamplingParams(temperature=0, max_tokens=1), lora_request=[lora(p) for p in unique],
                             use_tqdm=False)
                loads[name] = time.perf_counter() - begin
                batch(setting, max_tokens=2)  # untimed: first pass through this setting's LoRA path
                say(f"{name}: {len(unique)} adapter(s) loaded in {loads[name]:.1f} s")
        for r in range(spec["rounds"]):
            for name, setting in members.items():
                for attempt in range(3):  # a pass that got far less CPU than usual was disturbed: again
                    rate, share = batch(setting)
                    usual = max(usual, share)
                    if share >= 0.8 * usual or attempt == 2:
                        break
                    retried += 1
                    say(f"{name}: {rate:.1f} tok/s with CPU share {share:.2f} (usual {usual:.2f}): disturbed, again")
                rates[name].append(rate)
                shares[name].append(share)
                say(f"round {r + 1}/{spec['rounds']} {name}: {rate:.1f} tok/s")
    print("RESULT " + json.dumps({"start_s": started, "load_s": loads, "rates": rates, "cpu_share": shares,
                                  "retried": retried, "usual_cpu_share": usual}), flush=True)
"""


def make_adapters(model_path: Path, dest: Path, progress) -> dict[str, Path]:
    """Synthetic rank-8 q/k/v/o adapters qkvo8-0..31, and k/v adapters of rank 8 and 192, each with
    seeded random non-zero weights: peft's `init_lora_weights=False` leaves lora_A and lora_B at
    torch's default Linear initialisation, redrawn here under each adapter's own seed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    shapes = {"qkvo8": (8, QKVO, range(max(ADAPTER_COUNTS))), "kv8": (8, KV, [None]),
              f"kv{IA3_RANK}": (IA3_RANK, KV, [None])}
    paths, seed = {}, 0
    for shape, (rank, modules, copies) in shapes.items():
        model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=rank, target_modules=modules,
                                                init_lora_weights=False, task_type="CAUSAL_LM"))
        for copy in copies:
            torch.manual_seed(seed)
            seed += 1
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and (".lora_A." in name or ".lora_B." in name):
                    module.reset_parameters()
            name = shape if copy is None else f"{shape}-{copy}"
            model.save_pretrained(dest / name)
            paths[name] = dest / name
        base = model.unload()  # drops the LoRA layers, unmerged: the next shape starts clean
    progress(f"{len(paths)} synthetic adapters written in {dest}")
    return paths


def run_engine(name: str, spec: dict, log: Path, progress) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_PLUGINS="retro", PYTHONUNBUFFERED="1")
    progress(f"engine {name}: {spec['engine']}")
    result = None
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", ENGINE, json.dumps(spec)], env=env, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            out.write(line)
            if line.startswith("PROGRESS "):
                progress(f"  {name}: {line.removeprefix('PROGRESS ').strip()}")
            elif line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
        process.wait()
    if process.returncode or result is None:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"engine {name} failed ({process.returncode}); log {log}:\n{tail}")
    return result


def paired(rates: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of this round's rate over the baseline's rate in the same round."""
    return statistics.median(a / b for a, b in zip(rates[name], rates[baseline]))


def adapters_name(k: int) -> str:
    return f"{k} adapter" + ("s" if k > 1 else "")


def analyse(runs: dict[str, dict]) -> dict:
    """Medians and ratios from the three engines' raw rates (pure: unit-tested)."""
    a, b, c = runs["base"]["rates"], runs["rank8"]["rates"], runs["rank256"]["rates"]
    base, base_small = statistics.median(a["base model"]), statistics.median(a["base model, small batch"])
    adapters = {}
    for k in ADAPTER_COUNTS:
        rate = statistics.median(b[adapters_name(k)])
        adapters[k] = {"tokens_per_s": rate, "vs_1_adapter": paired(b, adapters_name(k), adapters_name(1)),
                       "vs_base": rate / base, "target_vs_1": TARGETS.get(k), "rounds": b[adapters_name(k)]}
    kv8, ia3 = statistics.median(b["k/v rank 8"]), statistics.median(c[f"k/v rank {IA3_RANK}"])
    kv8_on_256 = statistics.median(c["k/v rank 8"])
    return {
        "base_tokens_per_s": base, "base_rounds": a["base model"], "adapters": adapters,
        "rank": {"base_tokens_per_s": base_small, "rank8_tokens_per_s": kv8, "ia3_tokens_per_s": ia3,
                 "ia3_rank": IA3_RANK, "ia3_vs_rank8": ia3 / kv8, "rank8_vs_base": kv8 / base_small,
                 "ia3_vs_base": ia3 / base_small, "rank8_on_256_tokens_per_s": kv8_on_256,
                 "rank8_on_256_vs_ia3": paired(c, "k/v rank 8", f"k/v rank {IA3_RANK}"),
                 "rounds": {"base model": a["base model, small batch"], "k/v rank 8, --max-lora-rank 8": b["k/v rank 8"],
                            **{f"{k}, --max-lora-rank 256": v for k, v in c.items()}}},
        "engines": {name: {key: run.get(key) for key in ("start_s", "load_s", "cpu_share", "usual_cpu_share", "retried")}
                    for name, run in runs.items()},
    }


def table(result: dict) -> str:
    s, r = result["setup"], result["rank"]
    lines = [f"Batch of {s['prompts']} requests x {s['max_tokens']} generated tokens, request i on adapter i % k:", "",
             "| distinct adapters in the batch | generated tok/s (median) | vs 1 adapter (paired median) "
             "| vs base model | target |", "|---|---|---|---|---|",
             f"| none (base model, engine without --enable-lora) | {result['base_tokens_per_s']:.1f} | | 1.000x | |"]
    for k, row in result["adapters"].items():
        target = row["target_vs_1"]
        verdict = "" if target is None else f">= {target}x: {'met' if row['vs_1_adapter'] >= target else 'MISSED'}"
        lines.append(f"| {k} | {row['tokens_per_s']:.1f} | {row['vs_1_adapter']:.3f}x | {row['vs_base']:.3f}x "
                     f"| {verdict} |")
    lines += ["", f"Rank cost, batch of {s['rank_prompts']} requests x {s['rank_max_tokens']} generated tokens "
              "(smaller: the rank-256 engine is slow), one adapter on k_proj/v_proj:", "",
              "| adapter | engine | generated tok/s (median) | vs rank 8 on --max-lora-rank 8 | vs base model |",
              "|---|---|---|---|---|",
              f"| none (base model) | no --enable-lora | {r['base_tokens_per_s']:.1f} | | 1.000x |",
              f"| rank 8 | --max-lora-rank 8 | {r['rank8_tokens_per_s']:.1f} | 1.000x | {r['rank8_vs_base']:.3f}x |",
              f"| rank {r['ia3_rank']} (IA3 as exact LoRA) | --max-lora-rank 256 | {r['ia3_tokens_per_s']:.1f} "
              f"| **{r['ia3_vs_rank8']:.3f}x** | {r['ia3_vs_base']:.3f}x |",
              f"| rank 8 | --max-lora-rank 256 | {r['rank8_on_256_tokens_per_s']:.1f} "
              f"| {r['rank8_on_256_tokens_per_s'] / r['rank8_tokens_per_s']:.3f}x "
              f"| {r['rank8_on_256_tokens_per_s'] / r['base_tokens_per_s']:.3f}x |", ""]
    loads = result["engines"]["rank8"]["load_s"]
    starts = ", ".join(f"{name} {e['start_s']:.0f} s" for name, e in result["engines"].items())
    retried = sum(e.get("retried") or 0 for e in result["engines"].values())
    lines.append(
        f"Offline `LLM.generate`, one batch per measurement, greedy, `ignore_eos`; {s['rounds']} timed rounds per "
        f"setting ({s['rank_rounds']} on the rank-256 engine), rounds cycling through an engine's settings. "
        f"bfloat16 (as served), eager, prefix caching off; adapter rows on one engine with --max-lora-rank 8, "
        f"--max-loras 32, max_cpu_loras 33. Synthetic adapters (peft `init_lora_weights=False`, seeded random "
        f"weights; throughput depends on shapes, not values). Loading the 32 adapters (untimed for throughput): "
        f"{loads.get(adapters_name(32), float('nan')):.1f} s. Engine starts: {starts}. On the rank-256 engine the "
        f"rank-8 adapter runs at {r['rank8_on_256_vs_ia3']:.3f}x of the rank-{r['ia3_rank']} one: vLLM pads every "
        f"adapter to --max-lora-rank, so the server's limit, not the adapter's rank, sets the cost, for every "
        f"LoRA request on that server. Timed passes that got under 80% of the engine's usual CPU share (another "
        f"process on the machine) were run again, at most twice: {retried} repeated. Whole bench "
        f"{result['wall_s']:.0f} s.")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    ks = list(result["adapters"])
    left.plot([str(k) for k in ks], [result["adapters"][k]["vs_1_adapter"] for k in ks], "o-", label="vs 1 adapter")
    left.plot([str(k) for k in ks], [result["adapters"][k]["vs_base"] for k in ks], "s--", label="vs base model")
    for k, target in TARGETS.items():
        left.plot(str(k), target, "rv", label="targets" if k == min(TARGETS) else None)
    left.set_ylim(0, 1.15)
    left.set_xlabel("distinct adapters in the batch")
    left.set_ylabel("throughput ratio")
    left.set_title("multi-LoRA batch, rank 8")
    left.legend(fontsize=8)
    r = result["rank"]
    labels = ["base", "rank 8\n(max 8)", f"rank {r['ia3_rank']}\n(max 256)", "rank 8\n(max 256)"]
    values = [r["base_tokens_per_s"], r["rank8_tokens_per_s"], r["ia3_tokens_per_s"], r["rank8_on_256_tokens_per_s"]]
    bars = right.bar(labels, values, color=["grey", "C0", "C1", "C2"])
    right.bar_label(bars, fmt="%.1f", fontsize=8)
    right.set_ylabel("generated tok/s")
    right.set_title("one k/v adapter: the rank cost")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary_rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(bench, measure, retro-vllm, baseline, ratio / target) for bench/__main__.py's table."""
    rows = []
    one = result["adapters"].get("1") or result["adapters"].get(1)
    for k, row in result["adapters"].items():
        if int(k) == 1:
            continue
        target = row.get("target_vs_1")
        rows.append(("multi_lora", f"generated tok/s, {k} distinct adapters in one batch", f"{row['tokens_per_s']:.1f}",
                     f"{one['tokens_per_s']:.1f} (1 adapter)",
                     f"{row['vs_1_adapter']:.3f}x" + (f" (target >= {target}x)" if target else "")
                     + f"; {row['vs_base']:.3f}x of the base model"))
    rows.append(("multi_lora", "generated tok/s, 1 adapter vs no LoRA", f"{one['tokens_per_s']:.1f}",
                 f"{result['base_tokens_per_s']:.1f} (base model, no --enable-lora)", f"{one['vs_base']:.3f}x"))
    r = result["rank"]
    rows.append(("multi_lora", f"generated tok/s, IA3 as rank-{r['ia3_rank']} LoRA (--max-lora-rank 256)",
                 f"{r['ia3_tokens_per_s']:.1f}", f"{r['rank8_tokens_per_s']:.1f} (rank 8, --max-lora-rank 8)",
                 f"{r['ia3_vs_rank8']:.3f}x"))
    return rows


def options(parser) -> None:
    parser.add_argument("--prompts", type=int, default=32, help="requests in the multi-adapter batch")
    parser.add_argument("--max-tokens", type=int, default=16, help="generated tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (median)")
    parser.add_argument("--rank-prompts", type=int, default=4, help="requests in the rank-cost batch")
    parser.add_argument("--rank-max-tokens", type=int, default=12, help="generated tokens per rank-cost request")
    parser.add_argument("--rank-rounds", type=int, default=2, help="timed rounds on the rank-256 engine")


def run(args) -> dict:
    began = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {message}", flush=True)

    from retro_vllm import envs
    from retro_vllm.models.default_model import ensure_default_model

    model = ensure_default_model(envs.RETRO_VLLM_HOME, progress=True)
    # Short plain prompts: every prompt token also goes through the LoRA kernels, so generated
    # tokens dominate the work as they do in chat answers.
    prompts = [f"A few facts about {TOPICS[i % len(TOPICS)]}:" for i in range(max(args.prompts, args.rank_prompts))]
    batches = {"main": {"prompts": prompts[: args.prompts], "max_tokens": args.max_tokens},
               "small": {"prompts": prompts[: args.rank_prompts], "max_tokens": args.rank_max_tokens}}
    with tempfile.TemporaryDirectory(prefix="retro-bench-lora-") as tmp:
        tmp = Path(tmp)
        paths = {name: str(path) for name, path in make_adapters(model, tmp / "adapters", progress).items()}
        qkvo = [paths[f"qkvo8-{i}"] for i in range(max(ADAPTER_COUNTS))]
        kv8, ia3 = {"adapters": [paths["kv8"]], "batch": "small"}, {"adapters": [paths[f"kv{IA3_RANK}"]], "batch": "small"}
        specs = {
            "base": {"engine": {}, "rounds": args.rounds,
                     "settings": {"base model": {"adapters": [], "batch": "main"},
                                  "base model, small batch": {"adapters": [], "batch": "small"}}},
            "rank8": {"engine": {"enable_lora": True, "max_lora_rank": 8, "max_loras": max(ADAPTER_COUNTS),
                                 "max_cpu_loras": max(ADAPTER_COUNTS) + 1}, "rounds": args.rounds,
                      "settings": {**{adapters_name(k): {"adapters": qkvo[:k], "batch": "main"} for k in ADAPTER_COUNTS},
                                   "k/v rank 8": kv8}},
            "rank256": {"engine": {"enable_lora": True, "max_lora_rank": 256, "max_loras": 2, "max_cpu_loras": 2},
                        "rounds": args.rank_rounds, "settings": {f"k/v rank {IA3_RANK}": ia3, "k/v rank 8": kv8}},
        }
        runs = {name: run_engine(name, {"model": str(model), "batches": batches, **spec}, tmp / f"{name}.log", progress)
                for name, spec in specs.items()}
    result = analyse(runs)
    result["setup"] = {"prompts": args.prompts, "max_tokens": args.max_tokens, "rounds": args.rounds,
                       "rank_prompts": args.rank_prompts, "rank_max_tokens": args.rank_max_tokens,
                       "rank_rounds": args.rank_rounds, "dtype": "bfloat16 (the checkpoint's, as served)",
                       "adapters": "synthetic, seeded random weights"}
    result["wall_s"] = time.perf_counter() - began
    return result


if __name__ == "__main__":
    main(sys.modules[__name__])
