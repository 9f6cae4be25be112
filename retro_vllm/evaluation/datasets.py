"""Retrieval evaluation sets built from text nobody on the team wrote.

The Python FAQ, as Debian packages it (`python3.X-doc`, the HTML that `python3-doc` depends on):
each FAQ question is a query, the section under it is its gold document, and every section of
the rest of the documentation (library reference, tutorial, HOWTOs, ...) is a distractor.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import re
import tarfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

# Sections shorter than this are headings over sub-sections, "New in version" stubs and the like:
# they would fill the distractor set without being anything a retriever could confuse with an answer.
MIN_DISTRACTOR_WORDS = 20

# Split at h1/h2/h3, about one topic per section; h4 and below are sub-points of their h3 and
# stay in its text, heading included, rather than becoming fragments on their own.
SECTION_DEPTH = 3

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = _HEADINGS | {"p", "div", "pre", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr",
                       "blockquote", "figcaption", "br", "hr", "section"}
# The in-page "Contents" box and toctrees are <nav>/toctree-wrapper; headerlink is the pilcrow,
# section-number the "4.1. " before tutorial headings (every number in the 3.11 build sits in one).
_DROPPED_TAGS = {"nav", "script", "style"}
_DROPPED_CLASSES = {"headerlink", "section-number", "toctree-wrapper"}
# Index pages are lists of links; search and genindex are generated; contents is the whole toctree.
_NOT_CONTENT = re.compile(r"(^|/)(index|genindex(-.*)?|py-modindex|search|contents)\.html$")
_VERSION = re.compile(r"Python (\d+\.\d+)[.\w]* documentation")
_SPACE = re.compile(r"\s+")


@dataclass
class RetrievalDataset:
    """Documents in the corpus JSONL record shape, and queries naming their gold documents."""

    name: str
    source: Path
    documents: list[dict]
    queries: list[dict]

    @property
    def gold_by_query(self) -> dict[str, list[str]]:
        return {query["id"]: query["gold"] for query in self.queries}

    def write_jsonl(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        corpus, queries = folder / "corpus.jsonl", folder / "queries.jsonl"
        for target, records in ((corpus, self.documents), (queries, self.queries)):
            with target.open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        return corpus, queries


def load_python_faq(path: Path, *, max_distractor_docs: int | None = None) -> RetrievalDataset:
    """Read the Python documentation from a python3.X-doc .deb, the folder it was extracted to,
    or its html folder, and turn it into queries, gold answers and distractors.

    `max_distractor_docs` keeps that many distractors, picked by a hash of their ids: the same on
    every run, spread over the whole documentation, and each smaller pick a subset of a larger one.
    """
    pages = _read_pages(Path(path))
    answers: list[dict] = []
    distractors: list[dict] = []
    questions: dict[str, dict] = {}
    version = "3"
    for relpath in sorted(pages):
        if _NOT_CONTENT.search(relpath):
            continue
        parser = _PageParser()
        parser.feed(pages[relpath])
        parser.close()
        version = next(iter(_VERSION.findall(parser.title)), version)
        # The packaged pages name file:///usr/share/doc/... as canonical, which exists only where
        # the package is installed; docs.python.org serves the same pages.
        base = f"https://docs.python.org/{version}/{relpath}"
        stem = relpath.removesuffix(".html")
        if stem.startswith("faq/"):
            page = stem.removeprefix("faq/")
            for section in parser.sections:
                if section.level < 2 or section.has_children or not section.text:
                    continue  # the page's own heading, a group heading, or an empty one
                doc_id = f"faq-{page}-{section.anchor}"
                # The title is where the question sits (page and group), not the question itself:
                # ingest embeds "title\ntext", so a question as title would put the query verbatim
                # into its gold document and make retrieval a string match.
                answers.append({"id": doc_id, "text": section.text, "title": " › ".join(section.trail),
                                "url": f"{base}#{section.anchor}"})
                key = _SPACE.sub(" ", section.heading).casefold()
                # The same question on two pages ("What is Python?") is one query with both answers gold.
                query = questions.setdefault(key, {"id": f"q-{page}-{section.anchor}",
                                                   "question": section.heading, "gold": []})
                query["gold"].append(doc_id)
        else:
            for section in parser.sections:
                if len(section.text.split()) < MIN_DISTRACTOR_WORDS:
                    continue
                distractors.append({"id": f"{stem.replace('/', '-')}-{section.anchor}", "text": section.text,
                                    "title": " › ".join((*section.trail, section.heading)),
                                    "url": f"{base}#{section.anchor}"})
    if not answers:
        raise ValueError(f"{path}: no FAQ questions found in its faq/ pages")
    ids = [d["id"] for d in answers + distractors]
    if len(set(ids)) != len(ids):
        # Page paths become ids with '/' turned to '-'; two pages could in principle meet that way.
        raise ValueError(f"{path}: document ids collide after flattening page paths")
    if max_distractor_docs is not None:
        keep = set(sorted((d["id"] for d in distractors), key=_stable_hash)[:max_distractor_docs])
        distractors = [d for d in distractors if d["id"] in keep]
    return RetrievalDataset(name=f"python-faq-{version}", source=Path(path),
                            documents=answers + distractors, queries=list(questions.values()))


def _stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# --- reading the pages ---------------------------------------------------------------------------


def _read_pages(path: Path) -> dict[str, str]:
    """HTML pages under the documentation's html folder, keyed by their path inside it."""
    if path.is_file() and path.suffix == ".deb":
        files = _deb_html_files(path)
    elif path.is_dir():
        files = {p.relative_to(path).as_posix(): p for p in path.rglob("*.html") if p.is_file()}
    else:
        raise ValueError(f"{path}: expected a python3.X-doc .deb or a folder holding its HTML")
    faq_dirs = sorted({PurePosixPath(name).parent for name in files if PurePosixPath(name).parent.name == "faq"})
    if not faq_dirs:
        raise ValueError(f"{path}: no faq/ folder of HTML pages (python3-doc itself holds only links; "
                         "the pages are in the python3.X-doc package it depends on)")
    root = faq_dirs[0].parent
    pages = {}
    for name, content in files.items():
        if not PurePosixPath(name).is_relative_to(root):
            continue
        relative = PurePosixPath(name).relative_to(root)
        # _static, _sources and the like are Sphinx's build support, not documentation.
        if not any(part.startswith("_") for part in relative.parts):
            data = content.read_bytes() if isinstance(content, Path) else content
            pages[relative.as_posix()] = data.decode("utf-8")
    return pages


def _deb_html_files(path: Path) -> dict[str, bytes]:
    """Regular .html files in a .deb's data archive (an `ar` archive holding a tarball), so that
    neither dpkg nor an extraction to disk is needed."""
    decompress = {".xz": lzma.decompress, ".gz": gzip.decompress, ".bz2": bz2.decompress, ".tar": bytes}
    with path.open("rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise ValueError(f"{path}: not a .deb (ar) archive")
        while header := handle.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            data = handle.read(size)
            handle.read(size % 2)  # members are padded to an even offset
            if name.startswith("data.tar"):
                suffix = PurePosixPath(name).suffix
                if suffix not in decompress:
                    raise ValueError(f"{path}: cannot read {name}; extract it with dpkg-deb -x and pass the folder")
                with tarfile.open(fileobj=io.BytesIO(decompress[suffix](data)), mode="r:") as archive:
                    return {member.name.removeprefix("./"): archive.extractfile(member).read()
                            for member in archive if member.isfile() and member.name.endswith(".html")}
    raise ValueError(f"{path}: no data.tar member")


# --- parsing one page ----------------------------------------------------------------------------


@dataclass
class _Section:
    anchor: str
    level: int
    trail: tuple[str, ...]  # headings of the enclosing sections, page title first
    heading: str = ""
    text: str = ""
    has_children: bool = False


class _PageParser(HTMLParser):
    """Sections of the main body of a Sphinx page (docutils >= 0.18 `<section>` markup).

    Everything outside `div[role=main]` is navigation, sidebar or footer and is never read.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections: list[_Section] = []
        self._in_title = False
        self._main_divs = 0  # open <div>s counting the main one; 0 = outside the body
        self._skip: list = []  # [tag, depth] while inside a dropped element
        # Open <section>s; None for one deeper than SECTION_DEPTH, whose text goes to its parent.
        self._stack: list[tuple[_Section, list[str]] | None] = []
        self._heading: list[str] | None = None
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            self._skip[1] += tag == self._skip[0]
            return
        attributes = dict(attrs)
        if tag == "title":
            self._in_title = True
        if not self._main_divs:
            self._main_divs = int(tag == "div" and attributes.get("role") == "main")
            return
        if tag in _DROPPED_TAGS or _DROPPED_CLASSES & set((attributes.get("class") or "").split()):
            self._skip = [tag, 1]
            return
        if tag == "div":
            self._main_divs += 1
        if tag == "section":
            self._open_section(attributes.get("id") or "")
        elif tag in _HEADINGS and self._stack and self._stack[-1] is not None and not self._stack[-1][0].heading:
            self._heading = []
            return
        if tag == "pre":
            self._pre += 1
        if tag in _BLOCKS:
            self._write("\n")
        elif tag in ("td", "th"):
            self._write(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            self._skip[1] -= tag == self._skip[0]
            if not self._skip[1]:
                self._skip = []
            return
        if tag == "title":
            self._in_title = False
        if not self._main_divs:
            return
        if tag == "div":
            self._main_divs -= 1
        if tag == "section" and self._stack:
            self._close_section()
        elif tag in _HEADINGS and self._heading is not None:
            self._stack[-1][0].heading = _SPACE.sub(" ", "".join(self._heading)).strip()
            self._heading = None
            return
        if tag == "pre":
            self._pre -= 1
        if tag in _BLOCKS:
            self._write("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title += data
        if not self._main_divs:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._write(data if self._pre else _SPACE.sub(" ", data))

    def _open_section(self, anchor: str) -> None:
        if len(self._stack) >= SECTION_DEPTH:
            self._stack.append(None)
            return
        real = [entry for entry in self._stack if entry is not None]
        if real:
            real[-1][0].has_children = True
        section = _Section(anchor=anchor, level=len(self._stack) + 1, trail=tuple(s.heading for s, _ in real))
        self.sections.append(section)  # in document order, though filled in as the page goes on
        self._stack.append((section, []))

    def _close_section(self) -> None:
        entry = self._stack.pop()
        if entry is not None:
            section, parts = entry
            lines = (line.rstrip() for line in "".join(parts).split("\n"))
            section.text = "\n".join(line for line in lines if line.strip())

    def _write(self, text: str) -> None:
        target = next((entry[1] for entry in reversed(self._stack) if entry is not None), None)
        if target is None:
            return
        if not self._pre and (not target or target[-1].endswith("\n")):
            text = text.lstrip(" ")  # source line breaks between tags are not indentation
        if text:
            target.append(text)
