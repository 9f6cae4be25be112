"""The adapter registry: one folder per adapter version, each with a manifest.

    <root>/<name>/<version>/{adapter_model.safetensors, adapter_config.json, manifest.json}
    <root>/<name>/CURRENT            the version that `<name>` means

`<name>@<version>` names one version; `<name>` its current one. Writes go to a temporary
folder that is renamed into place, and CURRENT is swapped atomically, so a reader never
sees a half-written adapter. Names are validated and never joined into a path unchecked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from retro_vllm.adapters.convert import (
    CONFIG, VLLM_MAX_RANK, WEIGHTS, ConversionError, LoraAdapter, peft_type, read_tensors,
)
from retro_vllm.adapters.methods import PEFT_TYPES
from retro_vllm.adapters.methods.prefix import PREFIX_TUNING_DOC
from retro_vllm.fsutil import folder_lock, replace_text

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?$")
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# The linear layers vLLM's LoRA slots serve in llama-family models; embeddings and lm_head are
# refused (vLLM 0.32 serves no embedding LoRA for them, and a tied lm_head would change both).
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# peft_type -> manifest type (the method that was trained)
TYPES = {"LORA": "lora", "ADALORA": "adalora", "IA3": "ia3", "PROMPT_TUNING": "prompt", "PREFIX_TUNING": "prefix"}
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
LAYER = re.compile(r"\.layers\.(\d+)\.")


class AdapterError(Exception):
    """`kind` is 'invalid' (bad name), 'not_found' or 'rejected' (corrupt or mismatched)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class AdapterManifest(BaseModel):
    name: str
    version: int
    type: str = "lora"
    domain: str | None = None
    base_model: str = Field(description="Served name of the base model the adapter was trained on.")
    rank: int
    alpha: int
    targets: list[str]
    data_hash: str = ""
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of every weight and config file.")
    validation: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    method: dict[str, Any] = Field(
        default_factory=dict,
        description="The trained method's own facts (peft_type, how it is served, whether exactly; for a prompt "
                    "adapter num_virtual_tokens and token_dim).")
    created: str = ""

    @property
    def served_name(self) -> str:
        return f"{self.name}@{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_name(requested: str) -> tuple[str, int | None]:
    match = VERSIONED.match(requested or "")
    if not match:
        raise AdapterError("invalid", f"{requested!r} is not an adapter name (lowercase name, optionally @version)")
    version = match.group("version")
    return match.group("name"), int(version) if version else None


class AdapterRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading ------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not NAME.match(name) or not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def current(self, name: str) -> int | None:
        try:
            return int((self.root / name / CURRENT).read_text().strip())
        except (FileNotFoundError, ValueError):
            versions = self.versions(name)
            return versions[-1] if versions else None

    def folder(self, name: str, version: int) -> Path:
        return self.root / name / str(version)

    def manifest(self, name: str, version: int) -> AdapterManifest:
        path = self.folder(name, version) / MANIFEST
        try:
            return AdapterManifest.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise AdapterError("not_found", f"adapter {name}@{version} does not exist") from None
        except ValueError as exc:
            raise AdapterError("rejected", f"adapter {name}@{version}: manifest is unreadable ({exc})") from None

    def resolve(self, requested: str) -> AdapterManifest:
        """`name` or `name@version` -> its manifest (not yet verified)."""
        name, version = parse_name(requested)
        if version is None:
            version = self.current(name)
            if version is None:
                raise AdapterError("not_found", f"no adapter named {name!r}")
        return self.manifest(name, version)

    def all_current(self) -> list[AdapterManifest]:
        out = []
        for name in self.names():
            version = self.current(name)
            if version is not None:
                with contextlib.suppress(AdapterError):
                    out.append(self.manifest(name, version))
        return out

    def verify(self, manifest: AdapterManifest, *, base_model: str | None = None, max_rank: int | None = None) -> Path:
        """The adapter's folder if its files match the manifest and it fits this server."""
        folder = self.folder(manifest.name, manifest.version)
        label = manifest.served_name
        if base_model is not None and manifest.base_model != base_model:
            raise AdapterError("rejected", f"adapter {label} was trained for {manifest.base_model!r}, "
                                           f"this server serves {base_model!r}")
        prompt = manifest.type == "prompt"
        if not prompt and max_rank is not None and manifest.rank > max_rank:
            raise AdapterError("rejected", f"adapter {label} has rank {manifest.rank}, above this server's "
                                           f"--max-lora-rank {max_rank}")
        unsupported = sorted(set(manifest.targets) - set(SUPPORTED_TARGETS))
        if unsupported:
            raise AdapterError("rejected", f"adapter {label} targets {', '.join(unsupported)}, which vLLM's LoRA "
                                           f"does not serve for this model (supported: {', '.join(SUPPORTED_TARGETS)})")
        if not any(name.endswith(WEIGHT_SUFFIXES) for name in manifest.files):
            raise AdapterError("rejected", f"adapter {label}: the manifest lists no weight file")
        for name, expected in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise AdapterError("rejected", f"adapter {label}: {name} is missing")
            if sha256_file(path) != expected:
                raise AdapterError("rejected", f"adapter {label}: {name} does not match its checksum (corrupt or altered)")
        try:
            config = json.loads((folder / CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise AdapterError("rejected", f"adapter {label}: adapter_config.json unreadable ({exc})") from None
        if prompt:
            facts = {k: config.get(k) for k in ("num_virtual_tokens", "token_dim")}
            if peft_type(config) != "PROMPT_TUNING" or any(manifest.method.get(k) != v for k, v in facts.items()):
                raise AdapterError("rejected", f"adapter {label}: adapter_config.json does not match the manifest "
                                               "(peft_type, num_virtual_tokens or token_dim)")
            return folder
        if (peft_type(config) != "LORA" or served_rank(config) != manifest.rank
                or sorted(config.get("target_modules") or []) != sorted(manifest.targets)):
            raise AdapterError("rejected", f"adapter {label}: adapter_config.json does not match the manifest "
                                           "(rank or target modules)")
        return folder

    # -- writing ------------------------------------------------------------------
    def register(self, source: Path, *, base_model_path: Path | None = None, max_rank: int | None = None,
                 **fields: Any) -> AdapterManifest:
        """Check the peft adapter folder `source` and copy it in (AdaLoRA and IA3 converted to
        their exact LoRA) as the next version of `fields['name']`, and make it current.

        `fields` are manifest fields (name, domain, base_model, data_hash, training, ...). A
        `type` given there must agree with adapter_config.json's peft_type. With
        `base_model_path` (the base model's folder) the weights' shapes are checked against its
        config.json, and IA3 can be converted (it needs the base weights). With `max_rank` (the
        server's --max-lora-rank) a LoRA that server would refuse is refused now. Nothing is
        written unless every check passes."""
        source = Path(source)
        name = fields.get("name", "")
        if not NAME.match(name):
            raise AdapterError("invalid", f"{name!r} is not a valid adapter name")
        try:
            prepared = prepare(source, base_model_path, claimed_type=fields.get("type"))
            if max_rank is not None and prepared.type != "prompt" and prepared.rank > max_rank:
                raise ValueError(f"it is served as a LoRA of rank {prepared.rank}, above the server's --max-lora-rank "
                                 f"{max_rank} (adapters.max_lora_rank in the config; vLLM allows 1, 8, 16, 32, 64, "
                                 "128, 256, 320 or 512)")
        except (ConversionError, ValueError, OSError) as exc:
            raise AdapterError("rejected", f"cannot register {name} from {source}: {exc}") from None
        derived = {"type", "rank", "alpha", "targets", "version", "files", "created"}
        method = {**(fields.get("method") or {}), **prepared.method}
        with folder_lock(self.root / name):
            folder = self.root / name
            for stale in folder.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
            try:
                if prepared.converted is not None:
                    prepared.converted.write(staging)
                else:
                    for path in prepared.copy:
                        shutil.copy2(path, staging / path.name)
                files = {path.name: sha256_file(path) for path in sorted(staging.iterdir()) if path.is_file()}
                version = (self.versions(name) or [0])[-1] + 1
                manifest = AdapterManifest(
                    version=version,
                    type=prepared.type,
                    rank=prepared.rank,
                    alpha=prepared.alpha,
                    targets=prepared.targets,
                    files=files,
                    method=method,
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    **{k: v for k, v in fields.items() if k not in derived | {"method"}},
                )
                (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
                os.chmod(staging, 0o755)
                staging.rename(folder / str(version))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            replace_text(self.root / name / CURRENT, f"{version}\n")
        return manifest


# -- what an adapter folder must hold --------------------------------------------------
@dataclass
class Prepared:
    """A checked adapter, ready to be written: files to copy as they are, or a converted LoRA."""

    type: str
    rank: int
    alpha: int
    targets: list[str]
    method: dict[str, Any]
    copy: list[Path] = field(default_factory=list)
    converted: LoraAdapter | None = None


class BaseModelShape(BaseModel):
    """The layer sizes an adapter must fit, from the base model folder's config.json."""

    layers: int
    hidden_size: int
    shapes: dict[str, tuple[int, int]]  # module -> (out, in), as nn.Linear weights

    @classmethod
    def read(cls, folder: Path) -> "BaseModelShape":
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            kv = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or hidden // heads)
            inter = int(config["intermediate_size"])
            layers = int(config["num_hidden_layers"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the base model's config.json in {folder} ({exc!r})") from None
        return cls(layers=layers, hidden_size=hidden, shapes={
            "q_proj": (heads * head_dim, hidden), "k_proj": (kv * head_dim, hidden), "v_proj": (kv * head_dim, hidden),
            "o_proj": (hidden, heads * head_dim), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter),
        })


def _pattern_value(pattern: dict[str, Any], module: str) -> Any:
    # vLLM's and peft's rule: a key matches a suffix of the module name at a "." boundary.
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def served_rank(config: dict[str, Any]) -> int:
    """The rank vLLM checks against --max-lora-rank: the largest of r and rank_pattern."""
    return max([int(config.get("r", -1)), *(int(v) for v in (config.get("rank_pattern") or {}).values())])


def _read_weights(source: Path) -> dict[str, Any]:
    path = source / WEIGHTS
    if not path.is_file():
        pickled = [p.name for p in source.glob("*.bin")]
        hint = f" ({', '.join(pickled)} is a pickle: save with safetensors)" if pickled else ""
        raise ValueError(f"no {WEIGHTS}{hint}")
    try:
        tensors = read_tensors(path)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise ValueError(f"{WEIGHTS} is not a readable safetensors file, truncated or corrupt ({exc})") from None
    if not tensors:
        raise ValueError(f"{WEIGHTS} holds no tensors")
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all()))
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ValueError(f"{WEIGHTS} holds NaN or infinite values in {bad[0]}{more}")
    return tensors


def check_lora(tensors: dict[str, Any], config: dict[str, Any], base: BaseModelShape | None) -> tuple[int, list[str]]:
    """(served rank, target modules) of a plain peft LoRA that vLLM can load for this base model."""
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets:
        raise ValueError("adapter_config.json must list target_modules by name (a regex is not accepted)")
    unsupported = sorted(set(targets) - set(SUPPORTED_TARGETS))
    if unsupported:
        raise ValueError(f"target module(s) {', '.join(unsupported)} are not served by vLLM's LoRA for this model "
                         f"(supported: {', '.join(SUPPORTED_TARGETS)})")
    rank = served_rank(config)
    if not 1 <= rank <= VLLM_MAX_RANK:
        raise ValueError(f"rank {rank} is outside vLLM's LoRA ranks 1..{VLLM_MAX_RANK}")
    if config.get("use_dora") or config.get("lora_bias") or str(config.get("bias", "none")) != "none":
        raise ValueError("DoRA and trained biases are not served by vLLM's LoRA slots")
    for key, tensor in tensors.items():
        match = LORA_KEY.match(key)
        if not match:
            what = "an embedding LoRA" if "lora_embedding" in key else "a tensor that is no LoRA factor"
            raise ValueError(f"{WEIGHTS} holds {what} ({key}), which vLLM's LoRA does not serve for this model")
        module = match.group("module")
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in targets:
            raise ValueError(f"{WEIGHTS} holds weights for {leaf} ({key}), which adapter_config.json does not target")
        if base is None:
            continue
        layer = LAYER.search(f".{module}.")
        if layer and int(layer.group(1)) >= base.layers:
            raise ValueError(f"{key} is for layer {layer.group(1)}, the base model has {base.layers} layers "
                             "(trained for another model)")
        out_dim, in_dim = base.shapes[leaf]
        r = _pattern_value(config.get("rank_pattern") or {}, module) or int(config["r"])
        expected = (int(r), in_dim) if match.group("part") == "lora_A" else (out_dim, int(r))
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{key} has shape {tuple(tensor.shape)}, expected {expected} for rank {r} on this base "
                             "model (the weights do not match adapter_config.json, or the adapter is for another model)")
    return rank, sorted(targets)


def check_prompt(tensors: dict[str, Any], config: dict[str, Any], base: BaseModelShape | None) -> dict[str, Any]:
    tokens, dim = int(config.get("num_virtual_tokens") or 0), int(config.get("token_dim") or 0)
    rows = tokens * int(config.get("num_transformer_submodules") or 1)
    embeddings = tensors.get("prompt_embeddings")
    if set(tensors) != {"prompt_embeddings"} or embeddings is None or tuple(embeddings.shape) != (rows, dim):
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        raise ValueError(f"a prompt-tuning adapter holds one tensor prompt_embeddings of shape ({rows}, {dim}); "
                         f"this one holds {shapes}")
    if base is not None and dim != base.hidden_size:
        raise ValueError(f"prompt embeddings are {dim} wide, the base model's hidden size is {base.hidden_size} "
                         "(trained for another model)")
    return {"num_virtual_tokens": tokens, "token_dim": dim}


def prepare(source: Path, base_model_path: Path | None, *, claimed_type: str | None = None) -> Prepared:
    """Every registration check, with nothing written: the folder's method, its weights against
    its config and (with `base_model_path`) against the base model, and the conversion."""
    if not source.is_dir():
        raise ValueError("not a folder")
    try:
        config = json.loads((source / CONFIG).read_text())
    except FileNotFoundError:
        raise ValueError(f"no {CONFIG}") from None
    except ValueError as exc:
        raise ValueError(f"{CONFIG} is not valid JSON ({exc})") from None
    kind = peft_type(config)
    method_type = TYPES.get(kind)
    if method_type is None:
        raise ValueError(f"peft_type {kind} is not served (served: LORA, ADALORA, IA3, PROMPT_TUNING)")
    if claimed_type is not None and claimed_type != method_type:
        raise ValueError(f"registered as type {claimed_type!r}, but {CONFIG} says peft_type {kind} ({method_type!r})")
    if kind == "PREFIX_TUNING":
        raise ValueError("prefix tuning has no faithful vLLM serving path: prompt embeddings enter at the first layer "
                         f"only, prefix tuning sets keys and values at every layer (see {PREFIX_TUNING_DOC})")
    base = BaseModelShape.read(base_model_path) if base_model_path is not None else None
    tensors = _read_weights(source)
    facts: dict[str, Any] = {"peft_type": kind, "source_sha256": sha256_file(source / WEIGHTS)}
    if kind == "PROMPT_TUNING":
        facts.update(served_as="prompt_embeds", exact=True, **check_prompt(tensors, config, base))
        return Prepared(type="prompt", rank=0, alpha=0, targets=[], method=facts, copy=[source / CONFIG, source / WEIGHTS])
    if kind == "LORA":
        rank, targets = check_lora(tensors, config, base)
        facts.update(served_as="lora", exact=True)
        copy = [p for p in sorted(source.iterdir()) if p.is_file() and p.name != MANIFEST
                and (p.name == WEIGHTS or p.suffix == ".json")]
        return Prepared(type="lora", rank=rank, alpha=int(config.get("lora_alpha", rank)), targets=targets,
                        method=facts, copy=copy)
    unsupported = sorted(set(config.get("target_modules") or []) - set(SUPPORTED_TARGETS)) \
        if isinstance(config.get("target_modules"), list) else []
    if unsupported:
        raise ValueError(f"target module(s) {', '.join(unsupported)} are not served by vLLM's LoRA for this model "
                         f"(supported: {', '.join(SUPPORTED_TARGETS)})")
    converted = PEFT_TYPES[kind].to_lora(config, tensors, base_model_path)
    rank, targets = check_lora(converted.tensors, converted.config, base)
    facts.update(converted.method)
    return Prepared(type=method_type, rank=rank, alpha=int(converted.config["lora_alpha"]), targets=targets,
                    method=facts, converted=converted)


def seed_registry(registry: AdapterRegistry, seeds: list[tuple[str, str, Path]], *, base_model: str,
                  base_model_path: Path | None = None) -> list[AdapterManifest]:
    """Import shipped adapters `(name, domain, folder)` whose name has no version yet. A
    seed's own manifest.json, if present, contributes its training and validation records."""
    imported = []
    for name, domain, folder in seeds:
        if registry.versions(name):
            continue
        extra: dict[str, Any] = {}
        if (folder / MANIFEST).is_file():
            shipped = json.loads((folder / MANIFEST).read_text())
            extra = {k: shipped[k] for k in ("data_hash", "training", "validation", "method") if k in shipped}
        imported.append(registry.register(folder, name=name, domain=domain, base_model=base_model,
                                          base_model_path=base_model_path, **extra))
    return imported
