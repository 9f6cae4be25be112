"""How often answers from a running server cite, and cite the passage holding the answer.

Questions come from QA JSONL files (`{"question", "answer", "doc_id"}`), one per domain.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from retro_vllm.decoding.attribution import words
from retro_vllm.decoding.markers import MARKER
from retro_vllm.scoring import token_f1


@dataclass
class Outcome:
    domain: str
    has_marker: bool
    valid_marker: bool
    gold_retrieved: bool
    gold_cited: bool
    latency_s: float
    completion_tokens: int
    routed_domain: str | None = None
    adapter: str | None = None
    markers: int = 0  # [n] in the raw text
    invalid_markers: int = 0  # of those, naming no supplied passage
    answer_f1: float | None = None  # token F1 against the reference answer, markers removed
    cited_overlap: float | None = None  # share of the answer's tokens found in the passages it cites


def overlap(answer: str, sources: list[str]) -> float | None:
    answer_words = words(answer)
    if not answer_words or not sources:
        return None
    vocabulary = set(words(" ".join(sources)))
    return sum(w in vocabulary for w in answer_words) / len(answer_words)


def ask(base_url: str, model: str, domain: str, record: dict, *, max_tokens: int, pass_domain: bool,
        bias: float | None = None) -> Outcome:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": record["question"]}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    retro = {"domain": domain} if pass_domain else {}
    if bias is not None:
        retro["bias"] = bias
    if retro:
        body["retro"] = retro
    start = time.perf_counter()
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=600)
    latency = time.perf_counter() - start
    response.raise_for_status()
    data = response.json()
    message = data["choices"][0]["message"]
    passages = data["retro"]["passages"]
    content = message.get("content") or ""
    cited_ranks = _cited_ranks(message, passages)
    cited = {passages[a_rank - 1]["id"].split("#")[0] for a_rank in cited_ranks}
    gold = record.get("doc_id")
    gold_retrieved = gold is not None and any(p["id"].split("#")[0] == gold for p in passages)
    raw_markers = MARKER.findall(content)
    return Outcome(
        domain=domain,
        has_marker=bool(raw_markers),
        valid_marker=bool(message.get("annotations")),
        gold_retrieved=gold_retrieved,
        gold_cited=gold is not None and gold in cited,
        routed_domain=data["retro"].get("domain"),
        adapter=data["retro"].get("adapter"),
        latency_s=latency,
        completion_tokens=data["usage"]["completion_tokens"],
        markers=len(raw_markers),
        invalid_markers=sum(not 1 <= int(n) <= len(passages) for n in raw_markers),
        answer_f1=token_f1(content, record["answer"]) if record.get("answer") else None,
        cited_overlap=overlap(content, [passages[r - 1]["text"] for r in sorted(set(cited_ranks))]),
    )


def _cited_ranks(message: dict, passages: list[dict]) -> list[int]:
    content = message.get("content") or ""
    ranks = []
    for annotation in message.get("annotations") or []:
        span = annotation["url_citation"]
        ranks.append(int(content[span["start_index"] + 1 : span["end_index"] - 1]))
    return [r for r in ranks if 1 <= r <= len(passages)]


def evaluate(
    base_url: str, qa_files: dict[str, Path], *, model: str, limit: int | None, max_tokens: int,
    pass_domain: bool, concurrency: int, only_doc_ids: set[str] | None = None, bias: float | None = None,
) -> list[Outcome]:
    """`qa_files` maps a domain to a JSONL of questions; `doc_id` (the passage holding the
    answer) is optional, and records may name their own `domain`."""
    jobs = []
    for domain, path in qa_files.items():
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if only_doc_ids is not None:
            records = [r for r in records if r.get("doc_id") in only_doc_ids]
        jobs += [(r.get("domain", domain), r) for r in records[:limit]]
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(jobs), desc="Asking", unit="q") as bar:
        futures = [pool.submit(ask, base_url, model, d, r, max_tokens=max_tokens, pass_domain=pass_domain, bias=bias) for d, r in jobs]
        outcomes = []
        for future in futures:
            outcomes.append(future.result())
            bar.update()
    return outcomes


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _mean(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.fmean(present):.3f}" if present else "n/a"


def table(outcomes: list[Outcome]) -> str:
    """`valid citation`: answers with at least one marker naming a supplied passage; `markers
    valid`: of all markers in the raw text, the share naming a supplied passage."""
    rows = ["| domain | questions | routed right | any [n] | valid citation | markers valid | gold retrieved "
            "| gold cited (of retrieved) | answer F1 | overlap with cited | p50 latency s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for o in outcomes:
        groups.setdefault(o.domain, []).append(o)
    groups["all"] = outcomes
    for name, group in groups.items():
        n = len(group)
        retrieved = [o for o in group if o.gold_retrieved]
        rows.append(
            f"| {name} | {n} | {sum(o.routed_domain == o.domain for o in group) / n:.1%} | "
            f"{sum(o.has_marker for o in group) / n:.1%} | {sum(o.valid_marker for o in group) / n:.1%} | "
            f"{_share(sum(o.markers - o.invalid_markers for o in group), sum(o.markers for o in group))} | "
            f"{len(retrieved) / n:.1%} | "
            f"{(f'{sum(o.gold_cited for o in retrieved) / len(retrieved):.1%}') if retrieved else 'n/a'} | "
            f"{_mean([o.answer_f1 for o in group])} | {_mean([o.cited_overlap for o in group])} | "
            f"{statistics.median(o.latency_s for o in group):.2f} |"
        )
    return "\n".join(rows)
