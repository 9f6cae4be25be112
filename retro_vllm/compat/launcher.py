"""vLLM's OpenAI-compatible API server entry point, wherever this vLLM keeps it."""

from __future__ import annotations

import importlib.util


def run_api_server() -> None:
    """Run vLLM's API server on `sys.argv`, as `python -m vllm.entrypoints.openai.api_server` does."""
    if importlib.util.find_spec("vllm.entrypoints.launchers.api_server.entry") is None:
        import runpy  # a vLLM that keeps the server in its older module

        runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
        return
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    serve()
