"""The adapter registry: one folder per adapter version, each with a manifest.

    <root>/<name>/<version>/{adapter_model.safetensors, adapter_config.json, manifest.json}
    <root>/<name>/CURRENT            the version that `<name>` means

`<name>@<version>` names one version; `<name>` its current one. Writes go to a temporary
folder that is renamed into place, and CURRENT is swapped atomically, so a reader never
sees a half-written adapter. Names are validated and never joined into a path unchecked.

This module stores; what a folder must hold and pass is checked by its method (methods/) and
by checks.py, before anything is written and at every load (`verify`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from retro_vllm.adapters.checks import MANIFEST, sha256_file, verify_folder
from retro_vllm.adapters.convert import ConversionError
from retro_vllm.adapters.methods import METHODS, prepare
from retro_vllm.fsutil import folder_lock, replace_text

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?$")
CURRENT = "CURRENT"


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
        """The adapter's folder if its files match the manifest and it fits this server
        (checks.verify_folder, with the checks of the manifest's method)."""
        folder = self.folder(manifest.name, manifest.version)
        try:
            verify_folder(manifest, folder, METHODS.get(manifest.type), base_model=base_model, max_rank=max_rank)
        except ValueError as exc:
            raise AdapterError("rejected", str(exc)) from None
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
            if max_rank is not None and METHODS[prepared.type].uses_lora_slot and prepared.rank > max_rank:
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
