"""Where a request's time went before (and after) vLLM, as a standard `Server-Timing` header:
`retro-route`, `retro-embed`, `retro-search`, `retro-prompt` and, on non-streamed answers,
`retro-cite` (milliseconds). Benches split the plugin's added latency with it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Timings:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, (time.perf_counter() - start) * 1000)

    def record(self, name: str, ms: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + ms

    def header(self) -> dict[str, str]:
        if not self.ms:
            return {}
        return {"Server-Timing": ", ".join(f"retro-{name};dur={ms:.3f}" for name, ms in self.ms.items())}
