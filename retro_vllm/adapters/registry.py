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
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from retro_vllm.fsutil import folder_lock, replace_text

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_-]{0,62})(?:@(?P<version>[1-9][0-9]{0,8}))?$")
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
        if max_rank is not None and manifest.rank > max_rank:
            raise AdapterError("rejected", f"adapter {label} has rank {manifest.rank}, above this server's "
                                           f"--max-lora-rank {max_rank}")
        if not any(name.endswith(WEIGHT_SUFFIXES) for name in manifest.files):
            raise AdapterError("rejected", f"adapter {label}: the manifest lists no weight file")
        for name, expected in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise AdapterError("rejected", f"adapter {label}: {name} is missing")
            if sha256_file(path) != expected:
                raise AdapterError("rejected", f"adapter {label}: {name} does not match its checksum (corrupt or altered)")
        try:
            config = json.loads((folder / "adapter_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise AdapterError("rejected", f"adapter {label}: adapter_config.json unreadable ({exc})") from None
        if int(config.get("r", -1)) != manifest.rank or sorted(config.get("target_modules") or []) != sorted(manifest.targets):
            raise AdapterError("rejected", f"adapter {label}: adapter_config.json does not match the manifest "
                                           "(rank or target modules)")
        return folder

    # -- writing ------------------------------------------------------------------
    def register(self, source: Path, **fields: Any) -> AdapterManifest:
        """Copy a peft adapter folder in as the next version of `fields['name']` and make
        it current."""
        name = fields["name"]
        if not NAME.match(name):
            raise AdapterError("invalid", f"{name!r} is not a valid adapter name")
        config = json.loads((source / "adapter_config.json").read_text())
        with folder_lock(self.root / name):
            folder = self.root / name
            for stale in folder.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
            try:
                files = {}
                for path in sorted(source.iterdir()):
                    if path.is_file() and path.name != MANIFEST and (path.suffix in WEIGHT_SUFFIXES or path.suffix == ".json"):
                        shutil.copy2(path, staging / path.name)
                        files[path.name] = sha256_file(staging / path.name)
                version = (self.versions(name) or [0])[-1] + 1
                manifest = AdapterManifest(
                    version=version,
                    rank=int(config["r"]),
                    alpha=int(config.get("lora_alpha", config["r"])),
                    targets=sorted(config.get("target_modules") or []),
                    files=files,
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    **{k: v for k, v in fields.items() if k not in {"version", "files", "created"}},
                )
                (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
                os.chmod(staging, 0o755)
                staging.rename(folder / str(version))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            replace_text(self.root / name / CURRENT, f"{version}\n")
        return manifest


def seed_registry(registry: AdapterRegistry, seeds: list[tuple[str, str, Path]], *, base_model: str) -> list[AdapterManifest]:
    """Import shipped adapters `(name, domain, folder)` whose name has no version yet. A
    seed's own manifest.json, if present, contributes its training and validation records."""
    imported = []
    for name, domain, folder in seeds:
        if registry.versions(name):
            continue
        extra: dict[str, Any] = {}
        if (folder / MANIFEST).is_file():
            shipped = json.loads((folder / MANIFEST).read_text())
            extra = {k: shipped[k] for k in ("data_hash", "training", "validation") if k in shipped}
        imported.append(registry.register(folder, name=name, domain=domain, base_model=base_model, **extra))
    return imported
