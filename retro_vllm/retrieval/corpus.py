"""Reading documents from files: JSONL records, plain text, Markdown, HTML and PDF.

A file that cannot be read (binary, bad encoding, a broken PDF) is skipped with a warning
that names it, and counted; a malformed JSONL record stops the run, since it is the user's
structured data and a silent skip would lose it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from retro_vllm.retrieval.types import Document

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES


class CorpusError(ValueError):
    pass


@dataclass
class SkippedFiles:
    """Files passed over while reading, with why."""

    items: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        logger.warning("skipping %s: %s", path, reason)
        self.items.append((path, reason))

    def __len__(self) -> int:
        return len(self.items)


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, the root it was found under) for every supported file under `paths`."""
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED):
                yield file, path
        elif path.is_file():
            yield path, path.parent
        else:
            raise CorpusError(f"corpus path not found: {path}")


def document_id(file: Path, root: Path) -> str:
    """The path below its root without suffix (`guides/intro`), so two `intro.md` in
    different folders stay two documents."""
    return file.relative_to(root).with_suffix("").as_posix().replace("#", "_")


def read_documents(paths: list[Path], *, domain: str, tenant: str | None = None,
                   skipped: SkippedFiles | None = None) -> Iterator[Document]:
    skipped = skipped if skipped is not None else SkippedFiles()
    for path, root in iter_files(paths):
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(path, domain=domain, tenant=tenant)
            continue
        if suffix not in SUPPORTED:
            skipped.add(path, f"unsupported file type {suffix!r}")
            continue
        try:
            title, text = _read_text_file(path, suffix)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            skipped.add(path, f"unreadable ({type(exc).__name__}: {exc})")
            continue
        if not text.strip():
            skipped.add(path, "no text")
            continue
        yield Document(id=document_id(path, root), text=text, domain=domain, title=title or path.stem,
                       url=path.resolve().as_uri(), tenant=tenant)


def _read_text_file(path: Path, suffix: str) -> tuple[str, str]:
    if suffix in PDF_SUFFIXES:
        return _read_pdf(path)
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        raise ValueError("binary content")
    text = raw.decode("utf-8")
    if suffix in HTML_SUFFIXES:
        parser = _HTMLText()
        parser.feed(text)
        return parser.title.strip(), parser.text()
    title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), "")
    return title, text


def _read_pdf(path: Path) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
        title = (reader.metadata.title if reader.metadata else None) or ""
    except PdfReadError as exc:
        raise ValueError(f"not a readable PDF: {exc}") from None
    return str(title), text


class _HTMLText(HTMLParser):
    """Visible text of a page: scripts, styles and navigation left out."""

    SKIP = {"script", "style", "nav", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "section", "article", "li", "br", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "pre", "dd", "dt"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        return "".join(self.parts)


def _read_jsonl(path: Path, *, domain: str, tenant: str | None) -> Iterator[Document]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{line_no}: not JSON ({exc})") from None
            try:
                yield document_from_record(record, domain=domain, tenant=tenant)
            except CorpusError as exc:
                raise CorpusError(f"{path}:{line_no}: {exc}") from None


def document_from_record(record: object, *, domain: str, tenant: str | None) -> Document:
    """A `{"id", "text", "title"?, "url"?, "metadata"?}` record (JSONL line or HTTP body item)."""
    if not isinstance(record, dict):
        raise CorpusError("expected a JSON object with 'id' and 'text'")
    doc_id, text = record.get("id"), record.get("text")
    if not isinstance(doc_id, str) or not doc_id or "#" in doc_id or len(doc_id) > 512:
        raise CorpusError("'id' must be a non-empty string of at most 512 characters without '#'")
    if not isinstance(text, str):
        raise CorpusError("'text' must be a string")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorpusError("'metadata' must be an object")
    url = record.get("url") or None
    if url is not None and not isinstance(url, str):
        raise CorpusError("'url' must be a string")
    return Document(id=doc_id, text=text, domain=domain, title=str(record.get("title") or doc_id), url=url,
                    tenant=tenant, metadata=dict(metadata))
