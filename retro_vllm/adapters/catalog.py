"""The registry as the API server sees it: names -> verified adapters, cached."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from retro_vllm.adapters.registry import AdapterError, AdapterManifest, AdapterRegistry

logger = logging.getLogger(__name__)


class AdapterCatalog:
    """Verifies an adapter (checksums, base model, rank, targets) once per version and
    file state, so requests do not hash weights every time."""

    def __init__(self, registry: AdapterRegistry, *, base_model: str, max_rank: int | None):
        self.registry = registry
        self.base_model = base_model
        self.max_rank = max_rank
        self._verified: dict[tuple[str, int], tuple[tuple, Path]] = {}
        self._lock = threading.Lock()

    def _file_state(self, manifest: AdapterManifest) -> tuple:
        folder = self.registry.folder(manifest.name, manifest.version)
        state = []
        for name in sorted(manifest.files):
            try:
                stat = (folder / name).stat()
                state.append((name, stat.st_size, stat.st_mtime_ns))
            except FileNotFoundError:
                state.append((name, None, None))
        return tuple(state)

    def lookup(self, requested: str) -> tuple[AdapterManifest, Path]:
        """`name` or `name@version` -> (manifest, folder); AdapterError says why not."""
        manifest = self.registry.resolve(requested)
        key = (manifest.name, manifest.version)
        state = self._file_state(manifest)
        with self._lock:
            cached = self._verified.get(key)
            if cached and cached[0] == state:
                return manifest, cached[1]
        folder = self.registry.verify(manifest, base_model=self.base_model, max_rank=self.max_rank)
        with self._lock:
            self._verified[key] = (state, folder)
        return manifest, folder

    def for_domain(self, adapter_name: str) -> AdapterManifest | None:
        """The domain's current adapter, or None (absent or refused: the base model answers)."""
        try:
            return self.lookup(adapter_name)[0]
        except AdapterError as exc:
            if exc.kind != "not_found":
                logger.warning("retro: not serving adapter %s: %s", adapter_name, exc)
            return None
