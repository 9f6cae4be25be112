"""Prometheus series the plugin adds to vLLM's `/metrics` (same registry, same endpoint).

Prefix-cache hit rate per domain and adapter:
    rate(retro_prompt_cached_tokens_total[5m]) / rate(retro_prompt_tokens_total[5m])
Cached tokens come from vLLM's `usage.prompt_tokens_details` (`retro-vllm serve` turns on
`--enable-prompt-tokens-details`); streams count when the client asks for usage.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

_LABELS = ("domain", "adapter")

REQUESTS = Counter("retro_requests", "Generation requests answered, by domain, adapter and route.",
                   ("domain", "adapter", "route"))
PROMPT_TOKENS = Counter("retro_prompt_tokens", "Prompt tokens of answered requests.", _LABELS)
CACHED_TOKENS = Counter("retro_prompt_cached_tokens", "Prompt tokens served from vLLM's prefix cache.", _LABELS)


def record(summary: dict[str, Any], usage: dict[str, Any] | None, *, count_request: bool = True) -> None:
    domain = summary.get("domain") or "none"
    adapter = summary.get("adapter") or "base"
    if count_request:
        REQUESTS.labels(domain, adapter, summary.get("route") or "none").inc()
    if not usage or not isinstance(usage.get("prompt_tokens"), int):
        return
    PROMPT_TOKENS.labels(domain, adapter).inc(usage["prompt_tokens"])
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int):
        CACHED_TOKENS.labels(domain, adapter).inc(cached)
