"""The payload table of a FAISS store: `chunks.sqlite`, each int id with its chunk's payload and
exact float32 vector.

Payloads and exact vectors stay on disk: a search reads only the rows of its hits (and, over an
8-bit graph, the vectors of its candidates, to rank them exactly), so a server holds the index
and no per-chunk Python objects (100k chunks of 800 characters took about 160 MB of heap as
objects). A reader opens `chunks.sqlite` read-only. Writes go to a scratch copy,
`chunks.sqlite.tmp`, which the store's `flush()` renames over `chunks.sqlite`: the published file
is never changed in place, and a writer that fails before `flush()` leaves it as it was.

Payload filters are evaluated into the set of int ids they allow: in SQL as far as they compare
top-level fields with strings or None, the rest in Python (`base.matches`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import namedtuple
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import Filters, StoreError, matches
from retro_vllm.retrieval.types import Chunk

CHUNKS_FILE = "chunks.sqlite"
SCRATCH_FILE = CHUNKS_FILE + ".tmp"

VERDICT_MEMO_SIZE = 4096
"""Distinct (filtered columns, metadata) verdicts kept while evaluating one filter in Python."""

REBUILD_BATCH = 16_384
"""Vectors read from chunks.sqlite at a time while a graph is rebuilt."""

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


class Payloads:
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
    def empty(cls, database: str = ":memory:") -> "Payloads":
        """A new table, in memory; `database` "" is a private temporary database instead, one
        SQLite deletes on close, on disk beyond its page cache."""
        connection = _connect(database)
        connection.executescript(_SCHEMA)
        return cls(connection)

    @classmethod
    def read_only(cls, path: Path) -> "Payloads":
        connection = _connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        tables = {name for name, in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"chunks", "vectors"} <= tables:
            connection.close()
            raise sqlite3.DatabaseError(f"{path.name} lacks the tables chunks and vectors (found {sorted(tables)})")
        return cls(connection, source=path)


    def writable_copy(self, scratch: Path) -> "Payloads":
        """A copy in the file `scratch` that takes writes, each committed as it is made: the
        file is private until renamed, so no write needs a journal on disk or a sync."""
        scratch.unlink(missing_ok=True)  # left by a writer that failed
        connection = _connect(str(scratch))
        with self._lock:
            self._connection.backup(connection)
        connection.execute("PRAGMA journal_mode = MEMORY")  # rollback of a failed write still works
        connection.execute("PRAGMA synchronous = OFF")
        return Payloads(connection, scratch=scratch)

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
    # Autocommit: transactions are explicit (`Payloads.transaction`); searches run on several
    # threads, serialised by `Payloads._lock`.
    return sqlite3.connect(database, uri=uri, isolation_level=None, check_same_thread=False)


def columns_of(payload: dict[str, Any]) -> tuple:
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


class ClosedPayloads:
    """Stands in for the payload table of a closed store."""

    scratch = None

    def close(self) -> None:
        pass

    def __getattr__(self, name):
        raise StoreError("the FAISS store is closed")

