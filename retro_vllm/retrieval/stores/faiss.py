"""FAISS, the embedded default: exact (flat) or HNSW inner-product search, persisted with payloads.

The folder holds `index.faiss` (an `IndexIDMap2` keyed by int ids over `IndexFlatIP` or an
HNSW graph over 8-bit codes, float16 or float32 vectors), `chunks.sqlite` (each int id with its
chunk's payload and exact float32 vector) and `meta.json`.

Payloads and exact vectors stay on disk: a search reads only the rows of its hits (and, over an
8-bit graph, the vectors of its candidates, to rank them exactly), so a server holds the index
and no per-chunk Python objects (100k chunks of 800 characters took about 160 MB of heap as
objects). A reader opens `chunks.sqlite` read-only. Writes go to a scratch copy,
`chunks.sqlite.tmp`, which `flush()` renames over `chunks.sqlite`: the published file is never
changed in place, and a writer that fails before `flush()` leaves it as it was.

Folders written before `chunks.sqlite` hold `chunks.jsonl` instead: opening one loads it into a
private temporary database (the folder may be served, so it is not touched), and the next
`flush()` writes `chunks.sqlite` and removes `chunks.jsonl`.

Payload filters are evaluated into a set of allowed int ids that FAISS searches within: in SQL
as far as they compare top-level fields with strings or None, the rest in Python (`base.matches`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import namedtuple
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, StoreError, matches
from retro_vllm.retrieval.stores.embedded import (
    META_FILE,
    checked_query,
    checked_rows,
    last_rows,
    read_meta,
    refuse_existing,
    write_meta,
)
from retro_vllm.retrieval.stores.faiss_options import FaissOptions
from retro_vllm.retrieval.types import Chunk, ScoredChunk

BACKEND = "faiss"
_DEFAULTS = FaissOptions()  # the options' defaults are stated once, in FaissOptions
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.sqlite"
SCRATCH_FILE = CHUNKS_FILE + ".tmp"
LEGACY_CHUNKS_FILE = "chunks.jsonl"
INDEX_KINDS = ("auto", "flat", "hnsw")
HNSW_VECTORS = ("sq8", "fp16", "fp32")

RERANK_FACTOR = 4
"""With `hnsw_vectors: sq8` the graph walk compares 8-bit codes and asks for this many times the
hits wanted; those are ranked again by their exact vectors, read from chunks.sqlite. On 100k
clustered vectors (bench/store_scale's) the 8-bit walk alone has recall@10 0.967; re-ranking twice
the hits already gives 1.000, the same as the float16 graph, at half its memory."""

TRAIN_SAMPLE = 16_384
"""Vectors an 8-bit graph learns its value ranges from (evenly spaced over the store; 24 MB at
384 dimensions: a publish through the API server pays it there)."""

REBUILD_BATCH = 16_384
"""Vectors read from chunks.sqlite at a time while a graph is rebuilt."""

EXACT_FILTER_LIMIT = 1024
"""In HNSW mode a filter allowing at most this many chunks is answered by exact scoring of just
those vectors: that costs less than a graph walk that skips nearly every node it visits, and
cannot come back short of matches. Kept small because gathering vectors out of an HNSW index
costs about 2.4 us each (bench/store_scale: 3,300 allowed of 10k took 8 ms this way, against
0.3 ms for the filtered walk)."""

SEARCH_THREADS = 1
"""OpenMP threads a search may use. One query gains nothing from more (FAISS parallelises over
queries; HNSW walks and the flat scan of one query are serial), but FAISS still opens a team of
every core for small steps such as mapping result ids, and its barrier then waits for a core the
engine is generating on: inside the API server a 10k-chunk exact search took 18 ms (p50) with the
default team and 1.2 ms with one thread, a 1k-chunk one 5.5 ms against 0.2 ms."""

FILTER_CACHE_SIZE = 256
"""Allowed-id sets kept per distinct filter: the retriever sends the same domain filter with
every query, and evaluating one reads every row that could match."""

VERDICT_MEMO_SIZE = 4096
"""Distinct (filtered columns, metadata) verdicts kept while evaluating one filter in Python."""

CHUNK_PAGE = 1024
"""Rows per read when `chunks()` walks the store."""

SQL_BATCH = 500
"""Ids bound per `IN (...)` statement, well under SQLite's limit on bound parameters."""

# The top-level payload fields filters may name, with their columns. The columns have no type, so
# SQLite converts nothing: a stored string equals a bound string exactly when Python says so.
_COLUMNS: dict[str, str] = {"id": "chunk_id", "doc_id": "doc_id", "domain": "domain", "tenant": "tenant"}
# `metadata` repeats the payload's, so that a filter on a metadata key parses those few bytes, not
# the text; `payload` is the whole of `Chunk.payload()`, so a hit is one JSON parse. `vectors`
# holds each chunk's exact float32 vector, apart so that filter scans do not read them: an 8-bit
# graph ranks its hits again with them, and rebuilds and copies start from them, not from codes.
_SCHEMA = """
CREATE TABLE chunks (
    int_id INTEGER PRIMARY KEY,
    chunk_id NOT NULL UNIQUE,
    doc_id NOT NULL,
    domain NOT NULL,
    tenant,
    metadata TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE vectors (
    int_id INTEGER PRIMARY KEY,
    vector BLOB NOT NULL
);
CREATE INDEX chunks_doc_id ON chunks (doc_id);
CREATE INDEX chunks_domain ON chunks (domain);
CREATE INDEX chunks_tenant ON chunks (tenant);
"""
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What `base.matches` reads of a chunk, built from the filter columns without parsing the payload.
_FilterView = namedtuple("_FilterView", "id doc_id domain tenant metadata")


@dataclass(frozen=True)
class _Options:
    index: str
    hnsw_above: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    hnsw_vectors: str

    def mode_for(self, count: int) -> str:
        if self.index == "auto":
            return "hnsw" if count >= self.hnsw_above else "flat"
        return self.index


@dataclass(frozen=True)
class _Allowed:
    ids: np.ndarray
    selector: object  # faiss.IDSelectorBatch over `ids`


class _Payloads:
    """The chunk table behind one SQLite connection, shared by the threads that search: every
    call takes the lock, which a search holds only to read its hits (8 rows of 100k: about 30 us
    of SQLite, then 50 us parsing them into chunks, on the 2-core dev box). `scratch` is the file
    of a writable copy, None for a read-only one; `source` the file a read-only one reads."""

    def __init__(self, connection: sqlite3.Connection, *, scratch: Path | None = None, source: Path | None = None):
        self._connection = connection
        self.scratch = scratch
        self.source = source
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> "_Payloads":
        connection = _connect(":memory:")
        connection.executescript(_SCHEMA)
        return cls(connection)

    @classmethod
    def read_only(cls, path: Path) -> "_Payloads":
        connection = _connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        tables = {name for name, in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"chunks", "vectors"} <= tables:
            connection.close()
            raise sqlite3.DatabaseError(f"{path.name} lacks the tables chunks and vectors (found {sorted(tables)})")
        return cls(connection, source=path)

    @classmethod
    def from_jsonl(cls, path: Path, index) -> "_Payloads":
        """A folder written before chunks.sqlite. The rows go to a private temporary database (""
        is one SQLite deletes on close, on disk beyond its page cache), not into the folder; the
        vectors are the ones `index` (then float32 or float16) holds."""
        connection = _connect("")
        connection.executescript(_SCHEMA)

        def rows():
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    record = json.loads(line)
                    int_id = int(record.pop("int_id"))
                    Chunk.from_payload(record)  # a record with unknown or missing fields is corrupt
                    yield (int_id, *_record(record))

        payloads = cls(connection)
        with payloads.transaction():
            payloads.insert(rows())
            ids = payloads.all_ids(locked=True)
            for start in range(0, ids.size, REBUILD_BATCH):
                batch = ids[start:start + REBUILD_BATCH]
                payloads.insert_vectors(batch, index.reconstruct_batch(batch))
        return payloads

    def writable_copy(self, scratch: Path) -> "_Payloads":
        """A copy in the file `scratch` that takes writes, each committed as it is made: the
        file is private until renamed, so no write needs a journal on disk or a sync."""
        scratch.unlink(missing_ok=True)  # left by a writer that failed
        connection = _connect(str(scratch))
        with self._lock:
            self._connection.backup(connection)
        connection.execute("PRAGMA journal_mode = MEMORY")  # rollback of a failed write still works
        connection.execute("PRAGMA synchronous = OFF")
        return _Payloads(connection, scratch=scratch)

    # -- reads --------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def all_ids(self, *, locked: bool = False) -> np.ndarray:
        """`locked`: the caller holds the lock (inside `transaction()`)."""
        with nullcontext() if locked else self._lock:
            rows = self._connection.execute("SELECT int_id FROM chunks ORDER BY int_id")
            return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def vectors_by_id(self, int_ids: np.ndarray, dimension: int) -> np.ndarray:
        """The exact vectors of `int_ids`, in their order."""
        found: dict[int, bytes] = {}
        with self._lock:
            for batch in _batches(np.asarray(int_ids).tolist()):
                found.update(self._connection.execute(
                    f"SELECT int_id, vector FROM vectors WHERE int_id IN ({_marks(batch)})", batch))
        try:
            blob = b"".join(found[int(i)] for i in int_ids)
        except KeyError as exc:
            raise StoreError(f"chunks.sqlite has no vector for int id {exc.args[0]}") from None
        return np.frombuffer(blob, dtype=np.float32).reshape(len(int_ids), dimension).copy()

    def rerank(self, query: np.ndarray, int_ids: Sequence[int], k: int) -> list[tuple[int, float, Chunk]]:
        """The `k` of `int_ids` whose exact vectors score best against `query`, best first, each
        with its chunk: one read of the candidates' vectors and payloads."""
        rows = []
        with self._lock:
            for batch in _batches(list(int_ids)):
                rows += self._connection.execute(
                    "SELECT c.int_id, v.vector, c.payload FROM chunks c JOIN vectors v ON v.int_id = c.int_id"
                    f" WHERE c.int_id IN ({_marks(batch)})", batch).fetchall()
        if len(rows) < len(set(int_ids)):
            raise StoreError("chunks.sqlite lacks the payload or vector of a hit")
        if not rows:  # a filtered walk that met no allowed node: the caller falls back to exact scoring
            return []
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
        scores = vectors @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [(rows[i][0], float(scores[i]), _chunk(rows[i][2])) for i in best]

    def chunks_by_id(self, int_ids: Sequence[int]) -> dict[int, Chunk]:
        rows = []
        with self._lock:
            for batch in _batches(int_ids):
                rows += self._connection.execute(
                    f"SELECT int_id, payload FROM chunks WHERE int_id IN ({_marks(batch)})", batch).fetchall()
        return {int_id: _chunk(payload) for int_id, payload in rows}

    def ids_by_chunk_id(self, chunk_ids: Sequence[str]) -> dict[str, int]:
        return self._lookup("chunk_id", chunk_ids)

    def ids_of_documents(self, doc_ids: Sequence[str]) -> list[int]:
        return sorted(self._lookup("doc_id", doc_ids).values())

    def _lookup(self, column: str, keys: Sequence[Any]) -> dict[Any, int]:
        found: dict[Any, int] = {}
        with self._lock:
            for batch in _batches(list(dict.fromkeys(keys))):
                rows = self._connection.execute(
                    f"SELECT {column}, int_id FROM chunks WHERE {column} IN ({_marks(batch)})", batch)
                if column == "chunk_id":
                    found.update(rows)
                else:  # many chunks per document
                    found.update((int_id, int_id) for _key, int_id in rows)
        return found

    def matching_ids(self, filters: Filters) -> np.ndarray:
        """Sorted int ids of the chunks matching `filters`, as `base.matches` decides."""
        where, params, exact = _sql_filter(filters)
        with self._lock:
            if exact:
                rows = self._connection.execute(f"SELECT int_id FROM chunks WHERE {where} ORDER BY int_id", params)
                return np.fromiter((row[0] for row in rows), dtype=np.int64)
            # `matches` reads only the filtered keys, so its verdict depends only on the row's
            # columns for the top-level ones and on its metadata: chunks of one document share both.
            keys = [key for key in filters if key in _COLUMNS]
            rows = self._connection.execute(
                f"SELECT int_id, {', '.join([_COLUMNS[key] for key in keys] + ['metadata'])} FROM chunks"
                f" WHERE {where} ORDER BY int_id", params)
            verdicts: dict[tuple, bool] = {}
            found = []
            for int_id, *seen in rows:
                verdict = verdicts.get(tuple(seen))
                if verdict is None:
                    if len(verdicts) >= VERDICT_MEMO_SIZE:
                        verdicts.clear()
                    fields = {**dict.fromkeys(_COLUMNS), **dict(zip(keys, seen))}
                    view = _FilterView(**fields, metadata=json.loads(seen[-1]))
                    verdict = verdicts[tuple(seen)] = matches(view, filters)
                if verdict:
                    found.append(int_id)
            return np.asarray(found, dtype=np.int64)

    def chunk_page(self, filters: Filters | None, *, after: int, limit: int) -> tuple[int | None, list[Chunk]]:
        """Up to `limit` rows with int ids above `after`, in id order, and the last id read
        (None when there were none); of those, the chunks matching `filters`."""
        where, params, _exact = _sql_filter(filters or {})
        with self._lock:
            rows = self._connection.execute(
                f"SELECT int_id, payload FROM chunks WHERE int_id > ? AND {where} ORDER BY int_id LIMIT ?",
                [after, *params, limit]).fetchall()
        if not rows:
            return None, []
        chunks = (_chunk(payload) for _int_id, payload in rows)
        return rows[-1][0], [chunk for chunk in chunks if matches(chunk, filters)]

    # -- writes (only on a writable copy) -----------------------------------------
    @contextmanager
    def transaction(self):
        with self._lock:
            self._connection.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def insert(self, rows: Iterable[tuple]) -> None:
        """Inside `transaction()`."""
        self._connection.executemany(
            "INSERT INTO chunks (int_id, chunk_id, doc_id, domain, tenant, metadata, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def insert_vectors(self, int_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Inside `transaction()`."""
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        self._connection.executemany("INSERT INTO vectors (int_id, vector) VALUES (?, ?)",
                                     ((int(i), row.tobytes()) for i, row in zip(int_ids, rows)))

    def delete(self, int_ids: Sequence[int]) -> None:
        """Inside `transaction()`."""
        for batch in _batches(int_ids):
            for table in ("chunks", "vectors"):
                self._connection.execute(f"DELETE FROM {table} WHERE int_id IN ({_marks(batch)})", batch)

    def compact(self) -> None:
        """Drop the free pages deletes left, when they are a quarter of the file or more: copies
        of the folder would carry them."""
        with self._lock:
            free = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
            total = self._connection.execute("PRAGMA page_count").fetchone()[0]
            if free and free * 4 >= total:
                self._connection.execute("VACUUM")

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _connect(database: str, *, uri: bool = False) -> sqlite3.Connection:
    # Autocommit: transactions are explicit (`_Payloads.transaction`); searches run on several
    # threads, serialised by `_Payloads._lock`.
    return sqlite3.connect(database, uri=uri, isolation_level=None, check_same_thread=False)


def _record(payload: dict[str, Any]) -> tuple:
    """The columns after int_id for a chunk's payload. The filter columns must hold the payload's
    own values for SQL to filter as `base.matches` does, so types other than the declared ones are
    refused."""
    chunk_id, doc_id, domain, tenant = (payload.get(key) for key in ("id", "doc_id", "domain", "tenant"))
    if not all(isinstance(v, str) for v in (chunk_id, doc_id, domain)) or not isinstance(tenant, (str, type(None))):
        raise StoreError(f"chunk {chunk_id!r}: id, doc_id and domain must be strings and tenant a string or None")
    return chunk_id, doc_id, domain, tenant, _json(payload.get("metadata", {})), _json(payload)


def _chunk(payload: str) -> Chunk:
    return Chunk.from_payload(json.loads(payload))


def _sql_filter(filters: Filters) -> tuple[str, list, bool]:
    """A WHERE clause for the part of `filters` SQL decides exactly as `base.matches` does, its
    parameters, and whether that is all of `filters`. Exact: a top-level field compared with
    strings or None (columns hold only strings and NULL, see `_record`). The rest (metadata keys,
    other value types) is left to `matches` over the rows the clause lets through."""
    clauses: list[str] = []
    params: list = []
    exact = True
    for key, wanted in filters.items():
        column = _COLUMNS.get(key)
        values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        if column is None or not all(v is None or isinstance(v, str) for v in values):
            exact = False
            continue
        strings = [v for v in values if v is not None]
        alternatives = [f"{column} IN ({_marks(strings)})"] if strings else []
        if len(strings) < len(values):
            alternatives.append(f"{column} IS NULL")
        clauses.append("(" + " OR ".join(alternatives) + ")" if alternatives else "0")
        params.extend(strings)
    return " AND ".join(clauses) or "1", params, exact


def _marks(values: Sequence) -> str:
    return ", ".join("?" * len(values))


def _batches(values: Sequence) -> Iterator[list]:
    values = list(values)
    for start in range(0, len(values), SQL_BATCH):
        yield values[start:start + SQL_BATCH]


class FaissStore:
    """Build with `create` or `open`. Options are `FaissOptions`' fields: the index kind they
    ask for is applied at `flush()`; until then a store searches the index it was opened with.

    Deletes in HNSW mode: a FAISS HNSW graph cannot drop nodes, so removed ids stay in the graph,
    masked out of every search by an id selector, and `flush()` rebuilds the graph from the live
    vectors whenever anything was removed. The folder therefore never holds removed vectors and
    readers never pay for a mask; the cost is one graph build per flush that follows a delete or
    a re-upsert, which the index layer does once per publish. Upserts of new chunks go straight
    into the graph."""

    def __init__(self, folder: Path, dimension: int, index, payloads: _Payloads, next_id: int, options: _Options):
        self.folder = folder
        self.dimension = dimension
        self._index = index
        self._mode = _mode_of(index)
        self._codes_only = _graph_vectors(index) == "sq8"
        self._payloads = payloads
        self._count = payloads.count()
        self._trained_on = self._count  # chunks the index was built from; `open` reads it from meta.json
        self._next_id = next_id
        self._options = options
        self._masked: set[int] = set()
        self._filter_cache: dict[str, _Allowed] = {}
        self._cache_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: Path, dimension: int, *, index: str = _DEFAULTS.index, hnsw_above: int = _DEFAULTS.hnsw_above,
        hnsw_m: int = _DEFAULTS.hnsw_m, ef_construction: int = _DEFAULTS.ef_construction,
        ef_search: int = _DEFAULTS.ef_search, hnsw_vectors: str = _DEFAULTS.hnsw_vectors,
    ) -> "FaissStore":
        """A new empty store in `folder` (created if missing). Its files are written by `flush()`;
        writes before that go to the scratch file `chunks.sqlite.tmp`."""
        options = _options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        refuse_existing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        empty_index = _new_index(dimension, options.mode_for(0), options)
        return cls(folder, dimension, empty_index, _Payloads.empty(), 0, options)

    @classmethod
    def open(
        cls, folder: Path, *, index: str = _DEFAULTS.index, hnsw_above: int = _DEFAULTS.hnsw_above,
        hnsw_m: int = _DEFAULTS.hnsw_m, ef_construction: int = _DEFAULTS.ef_construction,
        ef_search: int = _DEFAULTS.ef_search, hnsw_vectors: str = _DEFAULTS.hnsw_vectors,
    ) -> "FaissStore":
        """The store in `folder`, changing nothing there until `flush()`."""
        import faiss

        options = _options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)
        meta = read_meta(folder, BACKEND)
        payloads = None
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
            if (folder / CHUNKS_FILE).is_file():
                payloads = _Payloads.read_only(folder / CHUNKS_FILE)
            elif (folder / LEGACY_CHUNKS_FILE).is_file():
                payloads = _Payloads.from_jsonl(folder / LEGACY_CHUNKS_FILE, faiss_index)
            else:
                raise FileNotFoundError(f"{CHUNKS_FILE} is missing")
            store = cls(folder, int(meta["dimension"]), faiss_index, payloads, int(meta["next_id"]), options)
            store._trained_on = int(meta.get("trained_on") or meta.get("count") or 0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, sqlite3.Error) as exc:
            if payloads is not None:
                payloads.close()
            raise StoreError(f"FAISS store at {folder} is missing or corrupt: {exc}") from None
        if faiss_index.d != store.dimension or store.mode != meta.get("mode"):
            store.close()
            raise StoreError(
                f"FAISS store at {folder} is corrupt: its index is {store.mode} with dimension {faiss_index.d}, "
                f"{META_FILE} says {meta.get('mode')} with dimension {store.dimension}"
            )
        try:
            store.health()
        except StoreError:
            store.close()
            raise
        return store

    @property
    def mode(self) -> str:
        """The kind of index searched now: "flat" or "hnsw"."""
        return self._mode

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        rows = checked_rows(chunks, vectors, self.dimension)
        keep = last_rows(chunks)
        records = [_record(chunks[row].payload()) for row in keep]  # refuses a bad chunk before any change
        if not keep:
            return
        with self._write_lock:
            payloads = self._writable()
            ids = np.arange(self._next_id, self._next_id + len(keep), dtype=np.int64)
            old = sorted(payloads.ids_by_chunk_id([chunks[row].id for row in keep]).values())
            with payloads.transaction():
                payloads.delete(old)
                payloads.insert((int_id, *record) for int_id, record in zip(ids.tolist(), records))
                payloads.insert_vectors(ids, rows[keep])
                # FAISS last, the add before the removal: if the add raises, the rows roll back
                # and the index has lost nothing.
                self._index.add_with_ids(rows[keep], ids)
                self._remove(old)
            self._next_id += len(keep)
            self._count += len(keep) - len(old)
            self._forget_filters()

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        with self._write_lock:
            gone = self._payloads.ids_of_documents(doc_ids) if doc_ids else []
            if not gone:
                return 0
            payloads = self._writable()
            with payloads.transaction():
                payloads.delete(gone)
                self._remove(gone)
            self._count -= len(gone)
            self._forget_filters()
        return len(gone)

    def _writable(self) -> _Payloads:
        """The payload table that takes writes: on the first write, a copy in the scratch file."""
        if self._payloads.scratch is None:
            copy = self._payloads.writable_copy(self.folder / SCRATCH_FILE)
            self._payloads.close()
            self._payloads = copy
        return self._payloads

    def _remove(self, int_ids: list[int]) -> None:
        if not int_ids:
            return
        if self._mode == "hnsw":
            self._masked.update(int_ids)
        else:
            self._index.remove_ids(np.asarray(int_ids, dtype=np.int64))

    def flush(self) -> None:
        """Apply the index kind the options ask for at this size, rebuild an HNSW graph that has
        removed nodes or other graph options, and write the folder."""
        import faiss

        with self._write_lock:
            mode = self._options.mode_for(self._count)
            # An 8-bit graph's value ranges come from the vectors it was trained on; a store that
            # has since doubled may hold new regions (a new domain) that those ranges clip.
            outgrown = self._codes_only and self._count >= 2 * max(self._trained_on, 1)
            if (mode != self._mode or self._masked or outgrown
                    or (mode == "hnsw" and self._graph_outdated())):
                self._rebuild(mode)
            # Both new files are complete before either is renamed into place, so a failure while
            # writing them leaves the folder as the last flush wrote it. (The renames themselves are
            # not one atomic step; the index layer flushes a staging folder no reader has open.)
            index_file = self.folder / (INDEX_FILE + ".tmp")
            faiss.write_index(self._index, str(index_file))
            payloads = self._payloads_to_publish()
            os.replace(index_file, self.folder / INDEX_FILE)
            if payloads is not None:
                os.replace(payloads.scratch, self.folder / CHUNKS_FILE)  # all committed: the file is whole
                payloads.close()
                self._payloads = _Payloads.read_only(self.folder / CHUNKS_FILE)
            (self.folder / LEGACY_CHUNKS_FILE).unlink(missing_ok=True)
            write_meta(
                self.folder,
                {"backend": BACKEND, "dimension": self.dimension, "mode": self._mode,
                 "count": self._count, "next_id": self._next_id, "trained_on": self._trained_on},
            )

    def _payloads_to_publish(self) -> _Payloads | None:
        """The scratch copy to rename over chunks.sqlite; None for a store opened from
        chunks.sqlite and not written since. A new store, or one read from chunks.jsonl, makes
        its scratch copy here."""
        if self._payloads.source == self.folder / CHUNKS_FILE:
            return None
        payloads = self._writable()
        payloads.compact()
        return payloads

    def _rebuild(self, mode: str) -> None:
        """A new index of `mode` from the exact vectors in chunks.sqlite, a batch at a time."""
        ids = self._payloads.all_ids()
        sample = None
        if mode == "hnsw" and self._options.hnsw_vectors == "sq8" and ids.size:
            spaced = np.linspace(0, ids.size - 1, min(ids.size, TRAIN_SAMPLE)).astype(np.int64)
            sample = self._payloads.vectors_by_id(ids[spaced], self.dimension)
        index = _new_index(self.dimension, mode, self._options, sample)
        for start in range(0, ids.size, REBUILD_BATCH):
            batch = ids[start:start + REBUILD_BATCH]
            index.add_with_ids(self._payloads.vectors_by_id(batch, self.dimension), batch)
        self._index, self._mode, self._codes_only = index, _mode_of(index), _graph_vectors(index) == "sq8"
        self._trained_on = int(ids.size)
        self._masked.clear()
        self._forget_filters()

    def _graph_outdated(self) -> bool:
        """The graph differs from the options in degree or vectors, or was built with a narrower
        beam than asked for. A wider beam than asked for only made a better graph: rebuilding it
        (tens of seconds at 100k chunks, at a one-document publish) would gain nothing."""
        import faiss

        graph = faiss.downcast_index(self._index.index)
        return (graph.hnsw.nb_neighbors(1) != self._options.hnsw_m
                or _graph_vectors(self._index) != self._options.hnsw_vectors
                or graph.hnsw.efConstruction < self._options.ef_construction)

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        import faiss

        query = checked_query(vector, self.dimension)
        allowed = self._allowed(filters)
        available = self._count if allowed is None else allowed.ids.size
        k = min(top_k, available)
        if k <= 0:
            return []
        selector = None if allowed is None else allowed.selector
        if self._mode == "flat":
            return self._search_index(query, k, None if selector is None else faiss.SearchParameters(sel=selector))
        if allowed is not None and allowed.ids.size <= EXACT_FILTER_LIMIT:
            return self._search_exact(query, k, allowed.ids)
        wanted = min(k * RERANK_FACTOR, available) if self._codes_only else k
        params = faiss.SearchParametersHNSW(efSearch=max(self._options.ef_search, wanted), sel=selector)
        hits = self._search_index(query, k, params, wanted)
        if len(hits) < k:  # the walk met too few allowed nodes; exact scoring cannot miss any
            ids = allowed.ids if allowed is not None else self._payloads.all_ids()
            return self._search_exact(query, k, ids)
        return hits

    def _search_index(self, query: np.ndarray, k: int, params, candidates: int | None = None) -> list[ScoredChunk]:
        """The top `k`; a graph of 8-bit codes finds `candidates` and ranks them by exact vectors."""
        with omp_threads(SEARCH_THREADS):
            scores, ids = self._index.search(query, candidates or k, params=params)
        ranked = [(int_id, score) for score, int_id in zip(scores[0].tolist(), ids[0].tolist()) if int_id >= 0]
        if self._codes_only:
            return [ScoredChunk(chunk, score, "dense", {"dense": score})
                    for _int_id, score, chunk in self._payloads.rerank(query[0], [i for i, _ in ranked], k)]
        return self._hits(ranked)

    def _search_exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> list[ScoredChunk]:
        rows = self._exact_vectors(ids)
        scores = rows @ query[0]
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return self._hits([(int(ids[i]), float(scores[i])) for i in best])

    def _hits(self, ranked: list[tuple[int, float]]) -> list[ScoredChunk]:
        chunks = self._payloads.chunks_by_id([int_id for int_id, _ in ranked])
        missing = [int_id for int_id, _ in ranked if int_id not in chunks]
        if missing:
            raise StoreError(f"FAISS store at {self.folder} is corrupt: no payload for int ids {missing[:5]}")
        return [ScoredChunk(chunks[int_id], score, "dense", {"dense": score}) for int_id, score in ranked]

    def _allowed(self, filters: Filters | None) -> _Allowed | None:
        """The ids a search may return; None when that is every id in the index."""
        import faiss

        if not filters and not self._masked:
            return None
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        with self._cache_lock:
            allowed = self._filter_cache.get(key)
        if allowed is None:
            ids = self._payloads.matching_ids(filters) if filters else self._payloads.all_ids()
            allowed = _Allowed(ids, faiss.IDSelectorBatch(ids))
            with self._cache_lock:
                if len(self._filter_cache) >= FILTER_CACHE_SIZE:
                    del self._filter_cache[next(iter(self._filter_cache))]
                self._filter_cache[key] = allowed
        return allowed

    def _forget_filters(self) -> None:
        with self._cache_lock:
            self._filter_cache.clear()

    def count(self, filters: Filters | None = None) -> int:
        if not filters:
            return self._count
        return int(self._allowed(filters).ids.size)

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        """Read a page at a time, so walking every chunk of a large store (router training,
        ingest's duplicate check) holds one page of them, not all. Not a snapshot: finish the
        walk before writing to this store (an upsert's new ids would come up again)."""
        after = -1
        while True:
            after, page = self._payloads.chunk_page(filters, after=after, limit=CHUNK_PAGE)
            if after is None:
                return
            yield from page

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        known = self._payloads.ids_by_chunk_id(ids)
        unknown = [chunk_id for chunk_id in ids if chunk_id not in known]
        if unknown:
            raise StoreError(f"unknown chunk ids: {', '.join(unknown[:5])}")
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._payloads.vectors_by_id(np.asarray([known[i] for i in ids], dtype=np.int64), self.dimension)

    def _exact_vectors(self, int_ids: np.ndarray) -> np.ndarray:
        """For scoring: from the index when it holds them (a memory copy; float16 in an fp16
        graph, whose search scores are float16 too), else from chunks.sqlite."""
        if self._codes_only:
            return self._payloads.vectors_by_id(int_ids, self.dimension)
        with omp_threads(SEARCH_THREADS):
            return self._index.reconstruct_batch(int_ids)

    def health(self) -> None:
        if self._index.ntotal != self._count + len(self._masked):
            raise StoreError(
                f"FAISS store at {self.folder}: the index holds {self._index.ntotal} vectors "
                f"for {self._count} chunks"
            )

    def close(self) -> None:
        """Close the payload database; writes not flushed are dropped with their scratch file."""
        payloads, self._payloads = self._payloads, _Closed()
        if isinstance(payloads, _Closed):
            return
        payloads.close()
        if payloads.scratch is not None:
            payloads.scratch.unlink(missing_ok=True)


class _Closed:
    """Stands in for the payload table of a closed store."""

    scratch = None

    def close(self) -> None:
        pass

    def __getattr__(self, name):
        raise StoreError("the FAISS store is closed")


@contextmanager
def omp_threads(count: int):
    """FAISS's OpenMP team size for the calling thread only, restored after: the setting is
    per thread, and the same worker thread may later build an index, which does use every core."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _options(index: str, hnsw_above: int, hnsw_m: int, ef_construction: int, ef_search: int,
             hnsw_vectors: str) -> _Options:
    if index not in INDEX_KINDS:
        raise StoreError(f"unknown FAISS index kind {index!r}; use one of {', '.join(INDEX_KINDS)}")
    if hnsw_vectors not in HNSW_VECTORS:
        raise StoreError(f"unknown FAISS HNSW vector type {hnsw_vectors!r}; use one of {', '.join(HNSW_VECTORS)}")
    return _Options(index, hnsw_above, hnsw_m, ef_construction, ef_search, hnsw_vectors)


def _new_index(dimension: int, mode: str, options: _Options, sample: np.ndarray | None = None):
    """`sample`: vectors an 8-bit graph learns its value ranges from. Without one (an empty store
    asked for HNSW) an sq8 store starts flat, searched exactly, and the first flush builds the
    graph from everything upserted by then: one graph build, not a float16 one and then another."""
    import faiss

    if mode == "flat" or (options.hnsw_vectors == "sq8" and (sample is None or not len(sample))):
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if options.hnsw_vectors == "sq8":
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_8bit, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.train(np.ascontiguousarray(sample, dtype=np.float32))
    elif options.hnsw_vectors == "fp16":
        # Half the memory of float32 (100k x 384: 77 MB of vectors against 154 MB).
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        graph = faiss.IndexHNSWFlat(dimension, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = options.ef_construction
    return faiss.IndexIDMap2(graph)


def _mode_of(index) -> str:
    """"flat" or "hnsw": what a search of `index` does (an 8-bit graph without vectors to learn
    from yet is flat, whatever was asked for)."""
    return "flat" if _graph_vectors(index) is None else "hnsw"


def _graph_vectors(index) -> str | None:
    """What the HNSW graph of `index` holds ("sq8": 8-bit codes, approximations of the vectors;
    "fp16"; "fp32"), None for a flat index."""
    import faiss

    graph = faiss.downcast_index(index.index)
    if not isinstance(graph, faiss.IndexHNSW):
        return None
    if not isinstance(graph, faiss.IndexHNSWSQ):
        return "fp32"
    qtype = faiss.downcast_index(graph.storage).sq.qtype
    return "sq8" if qtype == faiss.ScalarQuantizer.QT_8bit else "fp16"
