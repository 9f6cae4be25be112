"""Memory as the benches measure it: peak RSS of server processes, the page cache evicted so
both sides start equal, and work run in a fresh interpreter so this process never maps what the
measured servers map."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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


def isolated(function, *args):
    """`function(*args)` in a fresh interpreter, returning its result: for work that loads
    libraries (torch, faiss) this process must not keep mapped or cached while servers it
    measures run."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
