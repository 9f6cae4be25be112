"""Routing accuracy on held-out questions, with per-domain confusion and latencies."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from retro_vllm.retrieval.embedder import Embedder
from retro_vllm.routing.router import DomainRouter


def load_questions(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def evaluate(router: DomainRouter, embedder: Embedder, questions: list[dict]) -> str:
    embed_ms, route_ms, rows = [], [], []
    for q in questions:
        start = time.perf_counter()
        vector = embedder.embed_query(q["question"])
        mid = time.perf_counter()
        decision = router.route(vector)
        end = time.perf_counter()
        embed_ms.append((mid - start) * 1000)
        route_ms.append((end - mid) * 1000)
        rows.append((q, decision))

    n = len(rows)
    top1 = sum(d.best == q["domain"] for q, d in rows) / n
    routed_right = sum(d.domain == q["domain"] for q, d in rows) / n
    below = sum(d.domain is None for _, d in rows) / n
    wrong = sum(d.domain is not None and d.domain != q["domain"] for q, d in rows) / n
    hidden = [(q, d) for q, d in rows if q.get("no_domain_word")]
    lines = [
        f"questions: {n}  threshold: {router.threshold}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy (argmax) | {top1:.1%} |",
        f"| routed to the right domain (>= threshold) | {routed_right:.1%} |",
        f"| below threshold (base model) | {below:.1%} |",
        f"| routed to a wrong domain | {wrong:.1%} |",
    ]
    if hidden:
        lines.append(f"| top-1 accuracy, questions naming no domain word ({len(hidden)}) | "
                     f"{sum(d.best == q['domain'] for q, d in hidden) / len(hidden):.1%} |")
    lines += [
        f"| classifier p50 / p95 (ms, given the embedding) | {statistics.median(route_ms):.3f} / "
        f"{sorted(route_ms)[int(0.95 * (n - 1))]:.3f} |",
        f"| query embedding p50 (ms) | {statistics.median(embed_ms):.1f} |",
        "",
        "Confusion (rows: gold domain, columns: routed; `none` = below threshold)",
        "",
    ]
    columns = [*router.domains, "none"]
    lines.append("| gold \\ routed | " + " | ".join(columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for gold in router.domains:
        counts = Counter((d.domain or "none") for q, d in rows if q["domain"] == gold)
        lines.append(f"| {gold} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    return "\n".join(lines)
