"""Step 1 of the adapter recipe sweep (README.md here), in retro-vllm's own environment
(retrieval needs FAISS and the embedder): per domain the training candidates as
`retro-vllm train` gathers them, corpus-derived candidates for the training documents,
serving-layout eval prompts (top-k retrieval, no forced gold) for every QA record, and the
token ids of one encoded training example, which the sweep checks its tokenizer against.
Same split as `retro-vllm train` (Random(0).shuffle, first 20% held out).

    python scripts/gpu_recipes/prepare.py data.json
"""

import json
import random
import sys
from dataclasses import asdict
from pathlib import Path

from retro_vllm.adapters.examples import (
    build_example,
    gather_candidates,
    qa_from_corpus,
    read_qa,
)
from retro_vllm.adapters.train_lora import encode
from retro_vllm.config import load_config
from retro_vllm.prepare import prepare_index, prepare_model
from retro_vllm.rag.layout import assemble_messages, order_passages
from retro_vllm.retrieval.retriever import Retriever


def cand_json(c):
    return {"record": asdict(c.record), "gold": {"chunk": asdict(c.gold.chunk), "score": c.gold.score},
            "distractors": [{"chunk": asdict(d.chunk), "score": d.score} for d in c.distractors]}


def main(out: Path):
    config = load_config(None)
    model_path = prepare_model(config)
    embedder, version = prepare_index(config)
    retriever = Retriever(config, embedder, version)
    top_k = config.retrieval.top_k
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = {"model_path": str(model_path), "top_k": top_k, "domains": {}}
    for domain in config.domain_names:
        section = config.domain(domain)
        records = read_qa(section.qa)
        rng = random.Random(0)
        rng.shuffle(records)
        held = records[: int(len(records) * 0.2)]
        train = records[len(held):]
        train_docs = {r.doc_id for r in train}
        corpus = [r for r in qa_from_corpus([c for c in retriever.store.chunks() if c.domain == domain])
                  if r.doc_id in train_docs]
        preamble = section.preamble or config.serving.preamble
        evals = {}
        for r in records:
            hits = retriever.search(r.question, top_k=top_k, domain=domain)
            passages = order_passages(hits)
            messages = assemble_messages([{"role": "user", "content": r.question}], preamble, passages)
            gold = [p.rank for p in passages if p.chunk.doc_id == r.doc_id]
            evals[r.doc_id] = {"messages": messages, "gold_rank": gold[0] if gold else None,
                               "passages": [p.chunk.text for p in passages], "answer": r.answer,
                               "question": r.question}
        train_candidates = gather_candidates(retriever, domain, train, pool=8)
        data["domains"][domain] = {
            "preamble": preamble,
            "expected_ids": encode(tokenizer, *build_example(train_candidates[0], preamble=preamble, top_k=top_k,
                                                             rng=None))[0],
            "train": [cand_json(c) for c in train_candidates],
            "corpus": [cand_json(c) for c in gather_candidates(retriever, domain, corpus, pool=8)],
            "heldout": [r.doc_id for r in held],
            "evals": evals,
        }
        print(domain, len(train), len(held), len(corpus), file=sys.stderr)
    out.write_text(json.dumps(data))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
