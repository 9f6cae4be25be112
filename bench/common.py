"""Shared pieces of the benches: a server on loopback, streamed requests with timings, tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def evict_cached_libraries(*environments: Path) -> int:
    """Drop the page cache of the shared libraries under each environment (posix_fadvise
    DONTNEED; pages some running process maps stay). Why: a process's RSS also counts the pages
    of its mapped libraries that it faulted in, and the kernel maps already-cached neighbours of
    each page it touches. An environment pip has just written is entirely in the page cache, so a
    server started from it counted about 130 MB more library pages (libtorch_cpu.so 102 against
    51 MB resident) than the same server from an environment left cold. Evicting both environments
    before their servers start compares the processes, not the page cache. Returns files evicted."""
    evicted = 0
    for environment in environments:
        for path in Path(environment).rglob("*.so*"):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                evicted += 1
            finally:
                os.close(descriptor)
    return evicted


class PeakMemory:
    """Peak RSS (the kernel's VmHWM) and peak anonymous RSS (RssAnon + RssShmem, sampled every
    `interval` s) of processes. Anonymous memory is what a process allocated itself; the rest of
    RSS is mapped files, shared with other processes and dropped by the kernel under pressure, and
    its resident size depends on the page cache (see `evict_cached_libraries`)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25):
        self.pids = pids
        self.interval = interval
        self.anon_kb = dict.fromkeys(pids, 0)
        self._stop = None
        self._thread = None

    @staticmethod
    def _status(pid: int) -> dict[str, int]:
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssShmem"):
                fields[key] = int(value.split()[0])
        return fields

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, ValueError):
                status = self._status(pid)
                self.anon_kb[name] = max(self.anon_kb[name], status["RssAnon"] + status.get("RssShmem", 0))

    def __enter__(self) -> "PeakMemory":
        import threading

        self._stop = threading.Event()

        def run():
            while not self._stop.wait(self.interval):
                self.sample()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def result(self) -> dict[str, dict[str, float]]:
        """MB per process: {"rss": peak RSS, "anon": peak anonymous RSS}."""
        return {name: {"rss": self._status(pid)["VmHWM"] / 1024, "anon": self.anon_kb[name] / 1024}
                for name, pid in self.pids.items()}


def clustered(rng, centres, count: int):
    """`count` unit vectors scattered around `centres` (rows), as embeddings of texts cluster by
    topic; random centres in many dimensions are nearly orthogonal to each other and to any real
    query."""
    import numpy as np

    labels = rng.integers(0, len(centres), count)
    vectors = centres[labels] + 0.6 * rng.standard_normal((count, centres.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def demo_config(home: Path, **sections: dict) -> Path:
    """The bundled demo with absolute paths, a fresh home and the already-converted model;
    `sections` are merged into the config's top-level sections. The home starts with the demo
    index and the embedder's ONNX export already made (see `prepared_demo`)."""
    import yaml

    from retro_vllm import envs
    from retro_vllm.config import write_demo_config
    from retro_vllm.models.default_model import ensure_default_model

    model = ensure_default_model(envs.RETRO_VLLM_HOME, progress=True)
    shared = prepared_demo(model)
    path = write_demo_config(home, model)
    (home / "embedders").symlink_to(shared / "embedders", target_is_directory=True)
    shutil.copytree(shared / "home" / "index", home / "index")
    if sections:
        raw = yaml.safe_load(path.read_text())
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        path.write_text(yaml.safe_dump(raw))
    return path


def prepared_demo(model: Path) -> Path:
    """A folder under RETRO_VLLM_HOME with the demo index (`home/index`) and the embedder's ONNX
    export (`embedders`), made once and then only checked. Why: every bench starts its servers
    on a fresh home, and each would otherwise load torch, embed the corpus and export the
    embedder again (about 25 s a server on 2 cores) before serving; a restarted server skips the
    same work. The index is checked the way a server checks it (corpus, chunking, backend and
    embedder), in a separate process so that this one never maps torch."""
    from retro_vllm import envs
    from retro_vllm.config import write_demo_config

    shared = envs.RETRO_VLLM_HOME / "bench-demo"
    (shared / "embedders").mkdir(parents=True, exist_ok=True)
    isolated(_prepare_demo, write_demo_config(shared / "home", model), shared / "embedders")
    return shared


def _prepare_demo(config_path: Path, embedders: Path) -> None:
    from retro_vllm.config import load_config
    from retro_vllm.retrieval.embedder import Embedder
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.onnx_embedder import ensure_export

    config = load_config(config_path)
    embedder = Embedder(config.embedder.path)
    ensure_index(config, embedder, progress=False)
    ensure_export(embedder.path, embedders)


def isolated(function, *args):
    """`function(*args)` in a fresh interpreter, returning its result: for work that loads
    libraries (torch, faiss) this process must not keep mapped or cached while servers it
    measures run."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


class ServerProcess:
    """A server command on a free loopback port, ready when /health answers; stopped on exit."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen([*command, "--port", str(self.port)], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=cwd)

    def __enter__(self):
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited while starting; log: {self.log_path}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"server not ready; log: {self.log_path}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@contextlib.contextmanager
def running(*servers: ServerProcess):
    """Wait for servers that were all launched already (each starts in its constructor), so
    their start-ups overlap; every one is stopped on exit, also when another failed to start."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.callback(server.__exit__, None, None, None)
        for server in servers:
            server.__enter__()
        yield servers


def final_messages(preamble: str, question: str, passages: list[dict]) -> list[dict]:
    """What retro-vllm sends vLLM: preamble, passages in canonical (id) order, the question."""
    ordered = sorted(passages, key=lambda p: p["id"])
    sources = "\n\n".join(f"[{n}] {p['title']}\n{p['text']}" for n, p in enumerate(ordered, 1))
    return [{"role": "system", "content": f"{preamble}\n\nSources:\n\n{sources}"}, {"role": "user", "content": question}]


class RetroServer(ServerProcess):
    """`retro-vllm serve` with the given config."""

    def __init__(self, config: Path, extra: list[str] = (), log: Path | None = None):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="2")
        command = [sys.executable, "-m", "retro_vllm.cli", "serve", "--config", str(config),
                   "--max-model-len", "2048", "--seed", "0", *extra]
        super().__init__(command, env, log or config.parent / "server.log")


def pyplot():
    """matplotlib's pyplot without a display, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (bash scripts/setup.sh --bench): no plot")
        return None
    return plt


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


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_se(values: list[float], resamples: int = 2000) -> float:
    """Standard error of the median, by bootstrap (fixed seed): how far a p50 of this many
    samples would move between runs."""
    import numpy as np

    if len(values) < 2:
        return float("nan")
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(0).integers(0, len(data), size=(resamples, len(data)))
    return float(np.median(data[picks], axis=1).std())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_result(name: str, markdown: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{stamp} on {machine()}\n\n{markdown}\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"when": stamp, "machine": machine(), **data}, indent=2) + "\n")
    return RESULTS / f"{name}.md"
