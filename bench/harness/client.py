"""Requests as the benches send them: one streamed chat through the OpenAI SDK with its timings,
many at a concurrency, and the engine's own queue + prefill time read from a server's metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx


@dataclass
class Timed:
    ttft_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    server_timing: dict[str, float]  # retro-vllm's Server-Timing parts, ms (empty for stock vLLM)


_SDK_KEYS = {"model", "messages", "temperature", "max_tokens"}


async def chat(client, body: dict) -> Timed:
    """One streamed chat request through the OpenAI SDK (AsyncOpenAI): time to the first token,
    usage, and the Server-Timing header. Non-OpenAI keys (`retro`, `ignore_eos`) go as extra_body."""
    extra = {k: v for k, v in body.items() if k not in _SDK_KEYS}
    start = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        **{k: v for k, v in body.items() if k in _SDK_KEYS}, stream=True,
        stream_options={"include_usage": True}, extra_body=extra or None)
    timing = {}
    for part in raw.headers.get("Server-Timing", "").split(","):
        if ";dur=" in part:
            name, ms = part.strip().split(";dur=")
            timing[name.removeprefix("retro-")] = float(ms)
    ttft, usage = None, None
    async for chunk in raw.parse():  # the legacy raw response parses synchronously to an AsyncStream
        if ttft is None and chunk.choices:
            ttft = time.perf_counter() - start
        usage = chunk.usage or usage
    total = time.perf_counter() - start
    cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage and usage.prompt_tokens_details else 0
    return Timed(ttft if ttft is not None else total, total, usage.prompt_tokens if usage else 0, cached,
                 usage.completion_tokens if usage else 0, timing)


class EngineSpan:
    """How long one finished request spent in vLLM's engine core before its first token (queued,
    then prefilled), from the server's own Prometheus histograms (`vllm:request_queue_time_seconds`,
    `vllm:request_prefill_time_seconds`), read before and after the request. The time to the first
    token minus this span is what the API-server process added: HTTP, rendering, tokenization and,
    for retro-vllm, retrieval. The span holds the engine-side part of retro-vllm's work too (its
    logits processor's set-up and first step), so benches report the span's difference as well."""

    NAMES = {"vllm:request_queue_time_seconds": "queue", "vllm:request_prefill_time_seconds": "prefill"}

    def __init__(self, http: httpx.AsyncClient, url: str):
        self.http, self.url = http, url

    async def totals(self) -> dict[str, float]:
        """Sums (seconds) and counts (requests) of both histograms, over all label sets."""
        from prometheus_client.parser import text_string_to_metric_families

        text = (await self.http.get(f"{self.url}/metrics")).text
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            name = self.NAMES.get(family.name)
            for sample in family.samples if name else ():
                for suffix in ("_sum", "_count"):
                    if sample.name.endswith(suffix):
                        totals[name + suffix] = totals.get(name + suffix, 0.0) + sample.value
        return totals

    async def since(self, before: dict[str, float], timeout_s: float = 10.0) -> float:
        """Queue + prefill seconds of the one request finished since `before`. The histograms are
        updated just after the response ends, so this waits for both counts to move by one."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = await self.totals()
            moved = {name: now.get(f"{name}_count", 0) - before.get(f"{name}_count", 0) for name in self.NAMES.values()}
            if all(n == 1 for n in moved.values()):
                return sum(now[f"{name}_sum"] - before.get(f"{name}_sum", 0.0) for name in self.NAMES.values())
            if any(n > 1 for n in moved.values()):
                raise RuntimeError(f"{self.url}: expected one finished request, saw {moved}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url}: vLLM's request metrics did not move (stats logging off?)")
            await asyncio.sleep(0.005)


async def load(client, bodies: list[dict], concurrency: int) -> tuple[float, list[Timed]]:
    """All bodies with at most `concurrency` in flight: (wall seconds, results in order)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(body):
        async with gate:
            return await chat(client, body)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - start, list(results)


def sdk(url: str):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
