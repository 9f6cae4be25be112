"""Step 2 of the adapter recipe sweep (README.md here): train and compare LoRA recipes for the
demo domains with the product's own training loop, on a CUDA GPU (works on CPU, slowly).

Selection is by 2-fold cross-validation INSIDE the 48 training records of each domain (train
on 36, ask the other 12 with serving-layout prompts, transformers + peft, greedy); the 12
held-out questions per domain are used once, for the recipe chosen on CV (and for the shipped
adapters, as calibration against the server's figures).

    python scripts/gpu_recipes/sweep.py --data data.json --model MODEL_DIR --out OUT [--final-only RECIPE]
"""

import argparse
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from retro_vllm.adapters.examples import Candidates, QARecord
from retro_vllm.adapters.methods import TrainingConfig
from retro_vllm.adapters.train_lora import train_adapter
from retro_vllm.decoding.markers import MARKER
from retro_vllm.evaluation.citations import words
from retro_vllm.retrieval.types import Chunk, ScoredChunk
from retro_vllm.scoring import token_f1

RECIPES = {
    "base": {},
    "ep8": {"epochs": 8},
    "corpus": {"corpus": True},
    "ep3": {"epochs": 3},
    "drop10": {"dropout": 0.1},
    "lr2e-3": {"learning_rate": 2e-3},
    "r8": {"rank": 8, "alpha": 16},
    "lr5e-4_ep8": {"learning_rate": 5e-4, "epochs": 8},
}


def cand(raw):
    sc = lambda d: ScoredChunk(Chunk(**d["chunk"]), d["score"])
    return Candidates(QARecord(**raw["record"]), sc(raw["gold"]), [sc(d) for d in raw["distractors"]])


def attributed(answer, passages):
    """The passage sharing the most of the answer's words (markers removed)."""
    ws = words(answer)
    if not ws:
        return None
    shares = [sum(w in set(words(p)) for w in ws) / len(ws) for p in passages]
    return max(range(len(shares)), key=shares.__getitem__) + 1


def generate(model, tokenizer, items, device, max_new_tokens, batch=16):
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    answers = []
    for i in range(0, len(items), batch):
        prompts = [tokenizer.apply_chat_template(it["messages"], tokenize=False, add_generation_prompt=True)
                   for it in items[i:i + batch]]
        enc = tokenizer(prompts, add_special_tokens=False, return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def score(items, answers):
    rows = []
    for it, ans in zip(items, answers):
        k = len(it["passages"])
        cited = {int(n) for n in MARKER.findall(ans) if 1 <= int(n) <= k}
        rows.append({"any": bool(MARKER.findall(ans)), "valid": bool(cited), "gold": it["gold_rank"] in cited,
                     "attr": attributed(ans, it["passages"]) == it["gold_rank"],
                     "f1": token_f1(ans, it["answer"]), "answer": ans, "gold_rank": it["gold_rank"],
                     "cited": sorted(cited)})
    n = len(rows) or 1
    return {"n": len(rows), "valid": sum(r["valid"] for r in rows) / n, "gold": sum(r["gold"] for r in rows) / n,
            "attr": sum(r["attr"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n}, rows


def adapted(model_path, adapter_dir, device):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
    return PeftModel.from_pretrained(model, str(adapter_dir)).to(device)


def run(model_path, tokenizer, dom, recipe, train_ids, eval_ids, device, work, max_new_tokens, max_steps=None):
    r = dict(RECIPES[recipe])
    use_corpus = r.pop("corpus", False)
    settings = TrainingConfig(**r, max_steps=max_steps)
    cands = [cand(c) for c in dom["train"] if c["record"]["doc_id"] in train_ids]
    if use_corpus:
        cands += [cand(c) for c in dom["corpus"] if c["record"]["doc_id"] in train_ids]
    out = work / "adapter"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    res = train_adapter(Path(model_path), cands, preamble=dom["preamble"], settings=settings, output_dir=out,
                        progress=False, device=device)
    train_s = time.perf_counter() - t
    model = adapted(model_path, out, device)
    items = [dom["evals"][d] for d in eval_ids]
    t = time.perf_counter()
    summary, rows = score(items, generate(model, tokenizer, items, device, max_new_tokens))
    del model
    return {**summary, "train_s": round(train_s, 1), "eval_s": round(time.perf_counter() - t, 1),
            "loss": [round(res.losses[0], 3), round(res.losses[-1], 3)], "steps": res.steps}, rows, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cv-budget", type=float, default=360)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--domains", default=None)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="eval questions per run (smoke)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--shipped", default="retro_vllm/demo/adapters")
    ap.add_argument("--final-only", default=None, help="skip calibration and CV; train this recipe on all")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = json.loads(Path(args.data).read_text())
    out = Path(args.out)
    work = Path("/tmp/sweep-work")
    work.mkdir(exist_ok=True)
    log = open(out / "results.jsonl", "a")

    def emit(rec):
        print(json.dumps({k: v for k, v in rec.items() if k != "rows"}), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    domains = args.domains.split(",") if args.domains else list(data["domains"])
    # A tokenizer that encodes differently (another eos, another chat template) trains adapters
    # the server cannot use: that happened once (transformers 5.17 read eos = <|im_start|>).
    from retro_vllm.adapters.examples import build_example
    from retro_vllm.adapters.train_lora import encode

    for name in domains:
        dom = data["domains"][name]
        ids, _ = encode(tokenizer, *build_example(cand(dom["train"][0]), preamble=dom["preamble"],
                                                  top_k=data["top_k"], rng=None))
        if ids != dom["expected_ids"]:
            sys.exit(f"{args.model}: its tokenizer encodes {name}'s first example differently from the server's "
                     f"(eos {tokenizer.eos_token!r}); fix the model folder first")
    start = time.perf_counter()
    lim = (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)

    # Calibration: the shipped adapters on the held-out questions (the server's eval said 72.2%).
    for name in domains if not args.final_only else []:
        dom = data["domains"][name]
        items = lim([dom["evals"][d] for d in dom["heldout"]])
        model = adapted(args.model, Path(args.shipped) / name, device)
        summary, rows = score(items, generate(model, tokenizer, items, device, args.max_new_tokens))
        del model
        emit({"stage": "shipped", "domain": name, **summary, "rows": rows})

    # Cross-validation inside the training records.
    cv = {}
    for recipe in args.recipes.split(",") if not args.final_only else []:
        if time.perf_counter() - start > args.cv_budget:
            print(f"cv budget spent before {recipe}", flush=True)
            break
        agg = []
        for name in domains:
            dom = data["domains"][name]
            train_ids = [c["record"]["doc_id"] for c in dom["train"]]
            fold_size = len(train_ids) // 4
            for fold in range(args.folds):
                val = train_ids[fold * fold_size:(fold + 1) * fold_size]
                rest = set(train_ids) - set(val)
                summary, rows, _ = run(args.model, tokenizer, dom, recipe, rest, lim(val), device, work,
                                       args.max_new_tokens, args.max_steps)
                emit({"stage": "cv", "recipe": recipe, "domain": name, "fold": fold, **summary, "rows": rows})
                agg.append(summary)
        n = sum(s["n"] for s in agg)
        cv[recipe] = {k: sum(s[k] * s["n"] for s in agg) / n for k in ("gold", "attr", "valid", "f1")}
        emit({"stage": "cv-total", "recipe": recipe, **cv[recipe], "n": n,
              "elapsed": round(time.perf_counter() - start)})

    if args.final_only:
        finals = [args.final_only]
    else:
        best = max(cv, key=lambda r: (cv[r]["gold"], cv[r]["valid"], cv[r]["f1"]))
        emit({"stage": "chosen", "recipe": best, **cv[best]})
        finals = [best] + (["base"] if best != "base" else [])
    for recipe in finals:
        for name in domains:
            dom = data["domains"][name]
            train_ids = {c["record"]["doc_id"] for c in dom["train"]}
            summary, rows, adapter = run(args.model, tokenizer, dom, recipe, train_ids,
                                         lim(dom["heldout"]), device, work, args.max_new_tokens, args.max_steps)
            emit({"stage": "final", "recipe": recipe, "domain": name, **summary, "rows": rows,
                  "elapsed": round(time.perf_counter() - start)})
            with tarfile.open(out / f"{recipe}-{name}.tar", "w") as tar:
                tar.add(adapter, arcname=name)


if __name__ == "__main__":
    sys.exit(main())
