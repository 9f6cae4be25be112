"""Training examples laid out exactly like serving prompts: preamble, numbered passages
(canonical order), the question; the target answers and cites the gold passage `[n]`."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from retro_vllm.rag.layout import assemble_messages, order_passages
from retro_vllm.retrieval.retriever import Retriever
from retro_vllm.retrieval.types import Chunk, ScoredChunk

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class QARecord:
    question: str
    answer: str
    doc_id: str


@dataclass(frozen=True)
class Candidates:
    """What retrieval offers for one question: the gold chunk and ranked distractors."""

    record: QARecord
    gold: ScoredChunk
    distractors: list[ScoredChunk]


def read_qa(path: Path) -> list[QARecord]:
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            records.append(QARecord(str(raw["question"]), str(raw["answer"]), str(raw["doc_id"])))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}:{line_no}: expected {{'question', 'answer', 'doc_id'}} ({exc})") from None
    return records


def qa_from_corpus(chunks: list[Chunk]) -> list[QARecord]:
    """Without a QA file: ask about each document's title; the answer is its first sentence."""
    records, seen = [], set()
    for chunk in chunks:
        if chunk.doc_id in seen or not chunk.title:
            continue
        seen.add(chunk.doc_id)
        first = _SENTENCE.split(chunk.text.strip(), maxsplit=1)[0]
        records.append(QARecord(f"What should I know about {chunk.title}?", first, chunk.doc_id))
    return records


def gather_candidates(retriever: Retriever, domain: str, records: list[QARecord], *, pool: int) -> list[Candidates]:
    """Retrieve like the server would; the gold chunk is forced in when retrieval missed it."""
    by_doc: dict[str, Chunk] = {}
    for chunk in retriever.store.chunks():
        if chunk.domain == domain and chunk.id.endswith("#0"):
            by_doc[chunk.doc_id] = chunk
    out = []
    for record in records:
        gold_chunk = by_doc.get(record.doc_id)
        if gold_chunk is None:
            continue
        hits = retriever.search(record.question, top_k=pool + 1, domain=domain)
        gold = next((h for h in hits if h.chunk.doc_id == record.doc_id), ScoredChunk(gold_chunk, 0.0))
        out.append(Candidates(record, gold, [h for h in hits if h.chunk.doc_id != record.doc_id][:pool]))
    return out


def build_example(candidates: Candidates, *, preamble: str, top_k: int, rng: random.Random | None) -> tuple[list[dict], str]:
    """(messages, target). With an rng, distractors are redrawn from the pool (so the gold
    passage lands at varying positions); without, the top-ranked ones are used."""
    pool = candidates.distractors
    chosen = rng.sample(pool, min(top_k - 1, len(pool))) if rng else pool[: top_k - 1]
    passages = order_passages([candidates.gold, *chosen])
    rank = next(p.rank for p in passages if p.chunk.doc_id == candidates.record.doc_id)
    messages = assemble_messages([{"role": "user", "content": candidates.record.question}], preamble, passages)
    answer = candidates.record.answer.rstrip()
    if answer.endswith("."):
        answer = answer[:-1]
    return messages, f"{answer} [{rank}]."
