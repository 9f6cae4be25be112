"""Reading documents from files: JSONL records and plain text / Markdown."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

from retro_vllm.retrieval.types import Document

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}


class CorpusError(ValueError):
    pass


def iter_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise CorpusError(f"corpus path not found: {path}")


def read_documents(paths: list[Path], *, domain: str, tenant: str | None = None) -> Iterator[Document]:
    for path in iter_files(paths):
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(path, domain=domain, tenant=tenant)
        elif suffix in TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8", errors="strict")
            title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), path.stem)
            yield Document(id=path.stem, text=text, domain=domain, title=title, url=path.resolve().as_uri(), tenant=tenant)
        else:
            logger.warning("skipping %s: unsupported file type %r", path, suffix)


def _read_jsonl(path: Path, *, domain: str, tenant: str | None) -> Iterator[Document]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id, text = record["id"], record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(f"{path}:{line_no}: expected a JSON object with 'id' and 'text' ({exc})") from None
            if not isinstance(doc_id, str) or not doc_id or "#" in doc_id or not isinstance(text, str):
                raise CorpusError(f"{path}:{line_no}: 'id' must be a non-empty string without '#', 'text' a string")
            yield Document(
                id=doc_id,
                text=text,
                domain=domain,
                title=str(record.get("title") or doc_id),
                url=record.get("url") or None,
                tenant=tenant,
                metadata=dict(record.get("metadata") or {}),
            )
