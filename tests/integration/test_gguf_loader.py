"""`--load-format retro-gguf` serves the packaged GGUF as the converted checkpoint does: the same
greedy tokens, in float32, for every prompt."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, server_env

pytestmark = pytest.mark.engine

PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colours are",
    "A haiku about the sea:\n",
    "def fibonacci(n):",
    "The largest planet in the solar system is",
    "To make bread you need flour, water and",
    "TCP differs from UDP because",
    "Once upon a time, in a small village,",
    "The speed of light is approximately",
    "Photosynthesis is the process by which",
    "The French word for cat is",
    "1, 1, 2, 3, 5, 8,",
    "An HTTP 404 status code means",
    "The moon orbits the Earth every",
    "Q: What is 12 times 12?\nA:",
    "Shakespeare wrote the play",
    "SELECT name FROM users WHERE",
    "The best way to learn a language is",
    "Mount Everest is located in",
    "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nGive me a synonym for happy.<|im_end|>\n<|im_start|>assistant\n",
]

# One engine per process: vLLM frees an engine's memory only when its process ends. The engine
# core runs in this process (no multiprocessing) to save the start of a second interpreter.
GENERATE = """
import json, sys
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    model, load_format, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    llm = LLM(model=model, load_format=load_format, dtype="float32", max_model_len=512, seed=0,
              enforce_eager=True)
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True), use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outputs]))
"""


@pytest.fixture(scope="module")
def gguf_folder():
    """Config and tokenizer of the embedded default, written once into the user's cache beside
    the converted checkpoint (`model_path`)."""
    from retro_vllm import envs
    from retro_vllm.models.default_model import ensure_default_gguf_folder

    return ensure_default_gguf_folder(envs.RETRO_VLLM_HOME, progress=False)


def generate(model, load_format: str, home) -> list[list[int]]:
    env = server_env(home)
    env.update(VLLM_PLUGINS="retro", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    run = subprocess.run([sys.executable, "-c", GENERATE, str(model), load_format, json.dumps(PROMPTS)],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    results = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and results, f"{load_format} engine failed:\n{(run.stdout + run.stderr)[-4000:]}"
    return json.loads(results[-1].removeprefix("RESULT "))


def test_gguf_loader_matches_the_converted_checkpoint(model_path, gguf_folder, tmp_path):
    assert not list(gguf_folder.glob("*.safetensors"))  # the weights can only come from the GGUF
    from_gguf = generate(gguf_folder, "retro-gguf", tmp_path)
    converted = generate(model_path, "auto", tmp_path)
    assert len(from_gguf) == len(PROMPTS) and all(len(tokens) == 24 for tokens in from_gguf)
    assert from_gguf == converted
