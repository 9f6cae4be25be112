"""The validation gate's figures for the shipped demo adapters: each adapter against the base
model on the questions it held out of training, on serving-layout prompts (the figures
`retro-vllm train` computes before it registers an adapter). Quality, not speed: not part of
`python -m bench` (about 90 s per domain on 2 cores).

    python -m bench.adapter_validation [--domains astronomy cooking networking] [--max-questions 24]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.config import demo_config
from bench.harness.driver import main


def options(parser) -> None:
    parser.add_argument("--domains", nargs="+", default=["astronomy", "cooking", "networking"])
    parser.add_argument("--max-questions", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)


def run(args) -> dict:
    from retro_vllm.adapters.examples import gather_candidates, read_qa
    from retro_vllm.adapters.validate import validate
    from retro_vllm.config import load_config
    from retro_vllm.prepare import prepare_index, prepare_model
    from retro_vllm.retrieval.retriever import Retriever

    results = {}
    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp:
        config = load_config(demo_config(Path(tmp) / "home"))
        embedder, version = prepare_index(config)
        retriever = Retriever(config, embedder, version)
        model_path = prepare_model(config)
        for domain in args.domains:
            section = config.domain(domain)
            folder = section.adapter_seed
            held = set(json.loads((folder / "manifest.json").read_text())["training"]["heldout_doc_ids"])
            records = [r for r in read_qa(section.qa) if r.doc_id in held]
            questions = gather_candidates(retriever, domain, records, pool=8)[: args.max_questions]
            start = time.perf_counter()
            figures = validate(model_path, folder, questions, preamble=section.preamble or config.serving.preamble,
                               top_k=config.retrieval.top_k, max_new_tokens=args.max_new_tokens, progress=True)
            results[domain] = {**figures.record(), "seconds": round(time.perf_counter() - start, 1)}
            print(domain, figures.summary(), flush=True)
    # The settings the table states beside the figures.
    return {"domains": results, "setup": {"max_new_tokens": args.max_new_tokens, "top_k": config.retrieval.top_k}}


def table(result: dict) -> str:
    results, setup = result["domains"], result["setup"]
    lines = ["| adapter | held-out questions | loss adapter / base | answer F1 adapter / base "
             "| valid citations adapter / base | gate |", "|---|---|---|---|---|---|"]
    for domain, r in results.items():
        a, b = r["adapter"], r["base"]
        lines.append(f"| {domain} (demo LoRA) | {r['n']} | {a['loss']:.3f} / {b['loss']:.3f} | {a['f1']:.3f} / "
                     f"{b['f1']:.3f} | {a['valid_citations']:.2f} / {b['valid_citations']:.2f} | "
                     f"{'better' if r['better'] else 'refused'} |")
    lines.append(f"\nRule: {next(iter(results.values()))['rule']}. Greedy, float32, transformers + peft (no vLLM, no "
                 f"citation constraint), {setup['max_new_tokens']} new tokens, top_k {setup['top_k']} passages "
                 "laid out as served (gold passage included).")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.modules[__name__])
