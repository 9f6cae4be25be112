"""Qdrant Edge: the Qdrant engine in-process (qdrant-edge-py), one shard in the store's folder.

Each chunk is a point whose id is a UUID derived from the chunk id and whose payload is
`Chunk.payload()`: top-level fields as they are, metadata under `metadata`, so every filter
is a native Qdrant condition (ids and filters are shared with the Qdrant server store:
qdrant_common.py). The vector distance is cosine, so `score` is the cosine.

What qdrant-edge-py 0.9.0 does with its folder (tried here), and what follows:
- Locking. With its write-ahead log on, a shard locks the folder: a second `EdgeShard.load` of
  it, from this process or another, fails ("Can't init WAL: WouldBlock") until the first one
  closes. Without the WAL nothing is locked. Shards here run without it: the index layer
  writes only private copies and makes them durable with `flush()`, which is all the WAL would
  add, and a published version must open in several processes at once (server, CLI). Nothing
  then keeps two writers off one folder: never write a folder another store object has open.
- Copying. After `flush()` the folder is complete: a byte copy of it, taken while the original
  is still open here or in another process, opens as the same store. Prefer
  `embedded.copy_folder` to `shutil.copytree`, which fills the sparse files of a segment that
  still takes writes (2 x 32 MiB).
- Opening writes. `load` rewrites edge_config.json, the id tracker's versions and the payload
  journals the first time it opens a folder after writes; later opens rewrite the same bytes.
  `flush()` reopens the shard so that this first open happens in the writer, not in a reader.
- Optimizing. The shard never runs its optimizers by itself: points stay in an appendable
  segment searched by brute force, and deleted points stay on disk, until `optimize()` builds
  HNSW for segments above the indexing threshold (between 4,000 and 8,000 384-d vectors, about
  10 MB) and vacuums. `flush()` runs it, so published versions are indexed; small stores are
  searched exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from retro_vllm.retrieval.stores.base import TOP_LEVEL_KEYS, Filters, StoreError
from retro_vllm.retrieval.stores.embedded import (
    checked_query,
    checked_rows,
    last_rows,
    read_meta,
    refuse_existing,
    write_meta,
)
from retro_vllm.retrieval.stores.qdrant_common import EDGE_NAMESPACE, point_id, qdrant_filter
from retro_vllm.retrieval.stores.qdrant_edge_options import QdrantEdgeOptions
from retro_vllm.retrieval.types import Chunk, ScoredChunk

BACKEND = "qdrant-edge"
_DEFAULTS = QdrantEdgeOptions()  # the options' defaults are stated once, in QdrantEdgeOptions
FULL_SCAN_KB = 10_000
"""Filtered searches whose matching vectors take less than this are exact scans (Qdrant's default)."""
SCROLL_PAGE = 1000


class QdrantEdgeStore:
    """Build with `create` or `open`; options are `QdrantEdgeOptions`' fields. `hnsw_m` and
    `ef_construct` take effect when `flush()` optimizes; `ef_search` on every search."""

    def __init__(self, folder: Path, dimension: int, shard, config, ef_search: int):
        self.folder = folder
        self.dimension = dimension
        self._shard = shard
        self._config = config
        self._ef_search = ef_search

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: Path, dimension: int, *, hnsw_m: int = _DEFAULTS.hnsw_m, ef_construct: int = _DEFAULTS.ef_construct,
        ef_search: int = _DEFAULTS.ef_search
    ) -> "QdrantEdgeStore":
        from qdrant_edge import EdgeShard, PayloadSchemaType, UpdateOperation

        refuse_existing(folder)
        config = _edge_config(dimension, hnsw_m, ef_construct)
        try:
            shard = EdgeShard.create(str(folder), config)
            # Indexed keys get cardinality estimates and filter-aware graph links; metadata keys
            # are arbitrary and filtered without an index.
            for key in TOP_LEVEL_KEYS:
                shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Keyword))
        except Exception as exc:  # qdrant_edge raises plain Exception for every engine error
            raise StoreError(f"cannot create a Qdrant Edge store at {folder}: {exc}") from None
        write_meta(folder, {"backend": BACKEND, "dimension": dimension})
        return cls(folder, dimension, shard, config, ef_search)

    @classmethod
    def open(
        cls, folder: Path, *, hnsw_m: int = _DEFAULTS.hnsw_m, ef_construct: int = _DEFAULTS.ef_construct,
        ef_search: int = _DEFAULTS.ef_search
    ) -> "QdrantEdgeStore":
        meta = read_meta(folder, BACKEND)
        try:
            dimension = int(meta["dimension"])
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"Qdrant Edge store at {folder} is corrupt: meta.json has no dimension") from None
        config = _edge_config(dimension, hnsw_m, ef_construct)
        return cls(folder, dimension, _load_shard(folder, config), config, ef_search)

    @contextmanager
    def _engine(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            raise StoreError(f"Qdrant Edge store at {self.folder} cannot {action}: {exc}") from None

    # -- writes -------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        from qdrant_edge import Point, UpdateOperation

        rows = checked_rows(chunks, vectors, self.dimension)
        points = [
            Point(_point_id(chunks[row].id), rows[row].tolist(), chunks[row].payload()) for row in last_rows(chunks)
        ]
        if points:
            with self._engine("upsert"):
                self._shard.update(UpdateOperation.upsert_points(points))

    def delete(self, *, doc_ids: Sequence[str]) -> int:
        from qdrant_edge import UpdateOperation

        if not doc_ids:
            return 0
        documents = {"doc_id": list(doc_ids)}
        gone = self.count(documents)
        with self._engine("delete"):
            self._shard.update(UpdateOperation.delete_points_by_filter(_filter(documents)))
        return gone

    def flush(self) -> None:
        """Optimize (HNSW for large segments, vacuum of deleted points), write, and reopen so the
        folder is left as later opens leave it (see the module docstring)."""
        with self._engine("flush"):
            self._shard.optimize()
            self._shard.flush()
            self._shard.close()
        self._shard = _load_shard(self.folder, self._config)

    # -- reads --------------------------------------------------------------------
    def search(self, vector: np.ndarray, *, top_k: int, filters: Filters | None = None) -> list[ScoredChunk]:
        from qdrant_edge import Query, QueryRequest, SearchParams

        query = checked_query(vector, self.dimension)
        if top_k <= 0:
            return []
        request = QueryRequest(
            limit=top_k,
            query=Query.Nearest(query[0].tolist()),
            filter=_filter(filters),
            with_payload=True,
            params=SearchParams(hnsw_ef=max(self._ef_search, top_k)),
        )
        with self._engine("search"):
            points = self._shard.query(request)
        return [ScoredChunk(Chunk.from_payload(p.payload), p.score, "dense", {"dense": p.score}) for p in points]

    def count(self, filters: Filters | None = None) -> int:
        from qdrant_edge import CountRequest

        with self._engine("count"):
            return self._shard.count(CountRequest(exact=True, filter=_filter(filters)))

    def chunks(self, filters: Filters | None = None) -> Iterator[Chunk]:
        from qdrant_edge import ScrollRequest

        selection = _filter(filters)
        offset = None
        while True:
            page = ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=selection, with_payload=True)
            with self._engine("list chunks"):
                records, offset = self._shard.scroll(page)
            yield from (Chunk.from_payload(record.payload) for record in records)
            if offset is None:
                return

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._engine("read vectors"):
            records = self._shard.retrieve([_point_id(i) for i in ids], with_payload=False, with_vector=True)
        found = {record.id: record.vector for record in records}
        unknown = [i for i in ids if _point_id(i) not in found]
        if unknown:
            raise StoreError(f"unknown chunk ids: {', '.join(unknown[:5])}")
        return np.asarray([found[_point_id(i)] for i in ids], dtype=np.float32)

    def health(self) -> None:
        with self._engine("answer"):
            self._shard.info()

    def close(self) -> None:
        with self._engine("close"):
            self._shard.close()


def _edge_config(dimension: int, hnsw_m: int, ef_construct: int):
    from qdrant_edge import Distance, EdgeConfig, EdgeVectorParams, HnswIndexConfig

    return EdgeConfig(
        vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine),
        hnsw_config=HnswIndexConfig(m=hnsw_m, ef_construct=ef_construct, full_scan_threshold=FULL_SCAN_KB),
        wal_enabled=False,
    )


def _load_shard(folder: Path, config):
    """The shard in `folder`; `config` is checked against it and its graph options replace the
    stored ones for the next optimize."""
    from qdrant_edge import EdgeShard

    try:
        return EdgeShard.load(str(folder), config)
    except Exception as exc:
        raise StoreError(f"Qdrant Edge store at {folder} is missing or corrupt: {exc}") from None


class _EdgeConditions:
    """qdrant-edge-py's spelling of the shared filter conditions (qdrant_common)."""

    @staticmethod
    def match_value(path: str, value):
        from qdrant_edge import FieldCondition, MatchValue

        if isinstance(value, bool):
            # The binding reads a Python bool as the integer 1 or 0, which matches no stored
            # boolean; numpy's bool is not an int and reaches Qdrant as a boolean.
            value = np.bool_(value)
        return FieldCondition(key=path, match=MatchValue(value))

    @staticmethod
    def match_any(path: str, values):
        from qdrant_edge import FieldCondition, MatchAny

        return FieldCondition(key=path, match=MatchAny(values))

    @staticmethod
    def is_empty(path: str):
        from qdrant_edge import IsEmptyCondition

        return IsEmptyCondition(path)

    @staticmethod
    def equals_number(path: str, value):
        from qdrant_edge import FieldCondition, RangeFloat

        return FieldCondition(key=path, range=RangeFloat(gte=value, lte=value))

    @staticmethod
    def nothing(path: str):
        from qdrant_edge import FieldCondition, MatchAny

        return FieldCondition(key=path, match=MatchAny([]))  # an empty any-of list matches nothing

    @staticmethod
    def any_of(conditions):
        from qdrant_edge import Filter

        return Filter(should=conditions)

    @staticmethod
    def all_of(conditions):
        from qdrant_edge import Filter

        return Filter(must=conditions)


def _point_id(chunk_id: str):
    return point_id(chunk_id, EDGE_NAMESPACE)


def _filter(filters: Filters | None):
    return qdrant_filter(filters, _EdgeConditions)
