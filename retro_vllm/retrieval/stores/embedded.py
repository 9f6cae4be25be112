"""What the embedded stores (FAISS, Qdrant Edge) share: their folder's `meta.json`, a copy of a
folder that keeps sparse files sparse, and the checks on vectors coming in."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.types import Chunk

META_FILE = "meta.json"
_COPY_BLOCK = 1 << 20


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through `write(temporary path)` and rename it into place, so a crash leaves
    the old file or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    replace_atomically(folder / META_FILE, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))


def read_meta(folder: Path, backend: str) -> dict[str, Any]:
    """The folder's meta.json; StoreError if there is none, it is unreadable or another backend
    wrote it."""
    path = folder / META_FILE
    if not path.is_file():
        raise StoreError(f"no {backend} store at {folder}: {META_FILE} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{backend} store at {folder} is corrupt: {META_FILE}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("backend") != backend:
        found = meta.get("backend") if isinstance(meta, dict) else None
        raise StoreError(f"{folder} does not hold a {backend} store ({META_FILE} names backend {found!r})")
    return meta


def refuse_existing(folder: Path) -> None:
    if (folder / META_FILE).exists():
        raise StoreError(f"{folder} already holds a store; open it or remove it first")


def copy_folder(source: Path, target: Path) -> None:
    """`shutil.copytree` that keeps holes: a Qdrant Edge segment that still takes writes
    preallocates two 32 MiB sparse files, which a plain copy (sendfile) writes out in full, so a
    250 KB store became a 74 MB copy."""
    shutil.copytree(source, target, copy_function=_copy_sparse)


def _copy_sparse(source: str, target: str) -> str:
    with open(source, "rb", buffering=0) as src, open(target, "wb", buffering=0) as dst:
        size = os.fstat(src.fileno()).st_size
        position = 0
        while position < size:
            try:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains up to the end
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            while start < end:
                block = src.read(min(_COPY_BLOCK, end - start))
                dst.write(block)
                start += len(block)
            position = end
        dst.truncate(size)
    shutil.copystat(source, target)
    return target


def checked_rows(chunks: Sequence[Chunk], vectors: np.ndarray, dimension: int) -> np.ndarray:
    """`vectors` as float32 rows, one per chunk; StoreError on a dimension or length mismatch."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if not len(chunks) and not rows.size:
        return rows.reshape(0, dimension)
    if rows.ndim != 2 or rows.shape[1] != dimension:
        got = rows.shape[-1] if rows.ndim else 0
        raise StoreError(f"vector dimension {got} does not match the store's {dimension}")
    if len(rows) != len(chunks):
        raise StoreError(f"{len(chunks)} chunks but {len(rows)} vectors")
    return rows


def checked_query(vector: np.ndarray, dimension: int) -> np.ndarray:
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    if query.shape[1] != dimension:
        raise StoreError(f"query dimension {query.shape[1]} does not match the store's {dimension}")
    return query


def last_rows(chunks: Sequence[Chunk]) -> list[int]:
    """Row numbers keeping only the last occurrence of each chunk id: a batch that names a chunk
    twice stores it once, as an upsert of the two one after the other would."""
    return sorted({chunk.id: row for row, chunk in enumerate(chunks)}.values())
