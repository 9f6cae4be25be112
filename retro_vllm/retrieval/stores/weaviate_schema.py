"""How chunks map onto a Weaviate collection, as pure functions of the client's classes (no
server): the collection's settings, a chunk's object, filters and tenants.

Each chunk is one object with a self-provided vector (no vectorizer). Its properties:
- `chunk_id`, `doc_id`, `domain`, `tenant`, `url`: filterable text with `field` tokenization,
  so `equal` compares whole values rather than words;
- `text`, `title`: word-tokenized, for Weaviate's BM25;
- `metadata_json`: the metadata dict as JSON, neither filterable nor searchable, so a chunk
  reads back exactly as written;
- `meta_<key>` for every metadata key (`metax_<hex of the key>` when the key is not plain
  lowercase `[a-z0-9_]`): the value as JSON text with `field` tokenization. JSON keeps `"1"`
  and `1` apart, as the contract's equality does (though `1` and `1.0` differ here too), and
  never leaves an empty token. These properties are added to the schema the first time a key
  is written, because auto-schema would tokenize them by word.

With `multi_tenancy`, every chunk lives in the Weaviate tenant named by its `tenant` ("default"
when it has none); a `tenant` filter then picks tenants instead of filtering a property, and a
read without one visits every tenant.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Mapping
from urllib.parse import urlsplit

from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.query import Filter

from retro_vllm.retrieval.stores.base import TOP_LEVEL_KEYS, Filters, StoreError
from retro_vllm.retrieval.stores.weaviate_options import WeaviateOptions
from retro_vllm.retrieval.types import Chunk

CHUNK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "retro://chunk")
DEFAULT_TENANT = "default"
VECTOR = "default"  # the one named vector of the collection
RETURNED = ["chunk_id", "doc_id", "text", "domain", "title", "url", "tenant", "metadata_json"]
# Weaviate cannot report the length of self-provided vectors before one is stored, so the
# collection's description records the dimension it was created for.
DIMENSION_NOTE = "retro-vllm chunks; vector dimension {}"
DIMENSION_IN_NOTE = re.compile(r"vector dimension (\d+)")
_PLAIN_KEY = re.compile(r"[a-z0-9_]+")
_TENANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NoMatch(Exception):
    """A filter no chunk can satisfy (an empty any-of list, a value on a key no chunk has)."""


def chunk_uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(CHUNK_NAMESPACE, chunk_id))


def property_name(key: str) -> str:
    if key == "id":
        return "chunk_id"  # `id` is reserved in Weaviate
    if key in TOP_LEVEL_KEYS:
        return key
    # Lowercase only: Weaviate property names must be identifiers and may clash by case.
    return f"meta_{key}" if _PLAIN_KEY.fullmatch(key) else f"metax_{key.encode().hex()}"


def encode_value(key: str, value: Any) -> str:
    if key in TOP_LEVEL_KEYS:
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def properties_for(chunk: Chunk) -> dict[str, Any]:
    props = {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "text": chunk.text,
        "domain": chunk.domain,
        "title": chunk.title,
        "url": chunk.url,
        "tenant": chunk.tenant,
        "metadata_json": json.dumps(chunk.metadata, sort_keys=True, ensure_ascii=False, default=str),
    }
    props.update({property_name(k): encode_value(k, v) for k, v in chunk.metadata.items() if v is not None})
    # A missing property reads as null, which `is_none` filters rely on.
    return {k: v for k, v in props.items() if v is not None}


def chunk_from_properties(props: Mapping[str, Any]) -> Chunk:
    return Chunk(
        id=props["chunk_id"],
        doc_id=props["doc_id"],
        text=props.get("text") or "",
        domain=props["domain"],
        title=props.get("title") or "",
        url=props.get("url"),
        tenant=props.get("tenant"),
        metadata=json.loads(props.get("metadata_json") or "{}"),
    )


def keyword_property(name: str) -> Property:
    return Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False)


def base_properties() -> list[Property]:
    return [
        *(keyword_property(name) for name in ("chunk_id", "doc_id", "domain", "tenant", "url")),
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name="metadata_json", data_type=DataType.TEXT, index_filterable=False, index_searchable=False),
    ]


def collection_settings(dimension: int, multi_tenancy: bool) -> dict[str, Any]:
    """Arguments of `collections.create` for a new chunk collection."""
    return {
        "description": DIMENSION_NOTE.format(dimension),
        "properties": base_properties(),
        "vector_config": Configure.Vectors.self_provided(
            name=VECTOR,
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        ),
        # `is_none` filters (None in a filter value) need the null-state index.
        "inverted_index_config": Configure.inverted_index(index_null_state=True),
        "multi_tenancy_config": Configure.multi_tenancy(enabled=multi_tenancy),
    }


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, set))


def condition(key: str, wanted: Any):
    """One filter entry as a Weaviate filter. None means "missing or null", as the contract's
    `metadata.get(key)` reads it."""
    prop = Filter.by_property(property_name(key))
    if not _is_list(wanted):
        return prop.is_none(True) if wanted is None else prop.equal(encode_value(key, wanted))
    present = [encode_value(key, v) for v in wanted if v is not None]
    parts = [prop.contains_any(present)] if present else []
    if len(present) < len(wanted):
        parts.append(prop.is_none(True))
    if not parts:
        raise NoMatch
    return Filter.any_of(parts)


def where(filters: Filters):
    """All conditions joined with And, or None when there are none. Raises NoMatch."""
    conditions = [condition(k, v) for k, v in filters.items()]
    return Filter.all_of(conditions) if conditions else None


def tenant_name(tenant: str | None) -> str | None:
    """The Weaviate tenant holding chunks of this tenant; None if Weaviate cannot name it."""
    name = tenant or DEFAULT_TENANT
    return name if _TENANT_NAME.fullmatch(name) else None


def route(filters: Filters | None, multi_tenancy: bool) -> tuple[list[str] | None, Filters]:
    """Split a `tenant` filter off into tenant names when tenants are Weaviate tenants.
    Returns (the tenants to read, None for all of them; the filters left for properties)."""
    rest = dict(filters or {})
    if not multi_tenancy or "tenant" not in rest:
        return None, rest
    wanted = rest.pop("tenant")
    names = {tenant_name(t) for t in (wanted if _is_list(wanted) else [wanted])}
    return sorted(n for n in names if n), rest


def prune_unknown(filters: Filters, known: set[str]) -> Filters:
    """Drop conditions on metadata keys no chunk was ever written with (the server would
    reject the property): every chunk reads None there. Raises NoMatch if that fails one."""
    kept = {}
    for key, wanted in filters.items():
        if property_name(key) in known:
            kept[key] = wanted
        elif not (wanted is None or (_is_list(wanted) and None in wanted)):
            raise NoMatch
    return kept


def connection_args(section: WeaviateOptions) -> dict[str, Any]:
    url = urlsplit(section.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise StoreError(f"Weaviate url {section.url!r} must look like http://host:port or https://host")
    secure = url.scheme == "https"
    return {
        "http_host": url.hostname,
        "http_port": url.port or (443 if secure else 80),
        "http_secure": secure,
        "grpc_host": url.hostname,
        "grpc_port": section.grpc_port,
        "grpc_secure": secure,
    }

