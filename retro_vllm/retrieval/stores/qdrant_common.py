"""What the two Qdrant stores share: the point id of a chunk and the Qdrant filter of `Filters`.

Both stores keep `Chunk.payload()` as each point's payload (top-level fields as they are,
metadata under `metadata`), so a filter is the same Qdrant condition on a server (qdrant-client)
and in-process (qdrant-edge-py); only the classes that spell it differ. `qdrant_filter` decides
the conditions once and spells them with a `ConditionClasses` of either library. Imports no
client library itself.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol, Sequence

from retro_vllm.retrieval.stores.base import TOP_LEVEL_KEYS, Filters, StoreError

# Qdrant ids must be integers or UUIDs; uuid5 gives every chunk id the same point id on every
# run, so re-upserting a chunk replaces it. Both namespaces are fixed forever: point ids derived
# from them are stored in Qdrant collections and in every copy of a Qdrant Edge store.
SERVER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "retro://chunk")
"""Point ids on a Qdrant server (the same UUIDs as Weaviate's object ids)."""
EDGE_NAMESPACE = uuid.UUID("5b0d4cf6-3a55-4c8e-9d0c-2f7f6e0a9b41")
"""Point ids in a Qdrant Edge store's folder."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]+")


def point_id(chunk_id: str, namespace: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(namespace, chunk_id)


class ConditionClasses(Protocol):
    """How one client library spells the conditions `qdrant_filter` uses."""

    def match_value(self, path: str, value: str | bool) -> Any: ...

    def match_any(self, path: str, values: list[str]) -> Any: ...

    def is_empty(self, path: str) -> Any:
        """Matches a missing key and a null value alike."""
        ...

    def equals_number(self, path: str, value: int | float) -> Any:
        """A range from `value` to `value`: it matches integer and float payloads alike, as
        Python's 1 == 1.0 does."""
        ...

    def nothing(self, path: str) -> Any:
        """A condition no point meets (an empty any-of list)."""
        ...

    def any_of(self, conditions: Sequence[Any]) -> Any: ...

    def all_of(self, conditions: Sequence[Any]) -> Any: ...


def payload_path(key: str) -> str:
    """The payload path of a filter key: a top-level field as it is, a metadata key under
    `metadata`, quoted when it holds anything but letters, digits and `_` (a dot or bracket would
    otherwise be read as a path step)."""
    if key in TOP_LEVEL_KEYS:
        return key
    if _PLAIN_KEY.fullmatch(key):
        return f"metadata.{key}"
    if '"' in key:
        raise StoreError(f"filter key {key!r}: Qdrant payload paths cannot hold a double quote")
    return f'metadata."{key}"'


def qdrant_filter(filters: Filters | None, classes: ConditionClasses):
    """`Filters` as a Qdrant filter: one condition per key, all of which must hold; None when
    there are none."""
    if not filters:
        return None
    return classes.all_of([condition(key, wanted, classes) for key, wanted in filters.items()])


def condition(key: str, wanted: Any, classes: ConditionClasses):
    """One filter entry as a Qdrant condition, with the contract's equality semantics."""
    path = payload_path(key)
    many = isinstance(wanted, (list, tuple, set))
    values = list(wanted) if many else [wanted]
    strings = [v for v in values if isinstance(v, str)]
    conditions = []
    if strings:
        conditions.append(classes.match_any(path, strings) if many else classes.match_value(path, strings[0]))
    for value in values:
        if value is None:  # `matches` treats a missing key as None; is_empty covers missing and null
            conditions.append(classes.is_empty(path))
        elif isinstance(value, bool):
            conditions.append(classes.match_value(path, value))
        elif isinstance(value, (int, float)):
            conditions.append(classes.equals_number(path, value))
        elif not isinstance(value, str):
            raise StoreError(f"filter {key!r}: cannot match a value of type {type(value).__name__}")
    if not conditions:
        return classes.nothing(path)
    return conditions[0] if len(conditions) == 1 else classes.any_of(conditions)
