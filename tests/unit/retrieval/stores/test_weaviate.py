"""The Weaviate store without a server: the filter, object and tenant mappings built with the
real client classes, every call checked by the real client up to the wire, and a fast, clear
failure when the server is unreachable. The store's behaviour against a server runs in
tests/contract given RETRO_WEAVIATE_URL."""

import numpy as np
import pytest
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.classes.filters import _FilterAnd, _FilterValue, _Operator
from weaviate.collections.filters import _FilterToGRPC

from retro_vllm.retrieval.stores import weaviate, weaviate_schema
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.retrieval.stores.weaviate_options import WeaviateOptions

from .server_helpers import UNREACHABLE, chunk, fails_fast


def shape(flt):
    """A Weaviate filter as plain data: (target, operator, value) leaves under (operator, [...])."""
    if isinstance(flt, _FilterValue):
        return (flt.target, flt.operator, flt.value)
    return (flt.operator, [shape(f) for f in flt.filters])


def test_weaviate_top_level_filters_are_property_equalities():
    assert shape(weaviate_schema.condition("domain", "geo")) == ("domain", _Operator.EQUAL, "geo")
    assert shape(weaviate_schema.condition("doc_id", "d")) == ("doc_id", _Operator.EQUAL, "d")
    assert shape(weaviate_schema.condition("id", "d#0")) == ("chunk_id", _Operator.EQUAL, "d#0")
    assert shape(weaviate_schema.condition("domain", ["geo", "law"])) == ("domain", _Operator.CONTAINS_ANY, ["geo", "law"])


def test_weaviate_metadata_filters_compare_json_text():
    assert shape(weaviate_schema.condition("lang", "en")) == ("meta_lang", _Operator.EQUAL, '"en"')
    year = ("meta_year", _Operator.CONTAINS_ANY, ["2023", '"2024"'])  # the number and the string stay apart
    assert shape(weaviate_schema.condition("year", [2023, "2024"])) == year
    assert shape(weaviate_schema.condition("lang", None)) == ("meta_lang", _Operator.IS_NULL, True)
    assert shape(weaviate_schema.condition("lang", ["en", None])) == (
        _Operator.OR, [("meta_lang", _Operator.CONTAINS_ANY, ['"en"']), ("meta_lang", _Operator.IS_NULL, True)]
    )


def test_weaviate_property_names_are_identifiers_and_distinct():
    assert weaviate_schema.property_name("lang") == "meta_lang"
    assert weaviate_schema.property_name("Lang") == "metax_4c616e67"
    assert weaviate_schema.property_name("a.b") == "metax_612e62"
    assert len({weaviate_schema.property_name(k) for k in ("x_1", "X_1", "x-1", "x.1")}) == 4


def test_weaviate_filters_are_joined_with_and():
    flt = weaviate_schema.where({"domain": "geo", "lang": "en"})
    assert isinstance(flt, _FilterAnd)
    assert shape(flt) == (_Operator.AND, [("domain", _Operator.EQUAL, "geo"), ("meta_lang", _Operator.EQUAL, '"en"')])
    assert shape(flt) == shape(weaviate_schema.condition("domain", "geo") & weaviate_schema.condition("lang", "en"))
    assert _FilterToGRPC.convert(flt).operator  # the client serializes it for the server
    assert weaviate_schema.where({}) is None


def test_weaviate_empty_any_of_matches_nothing():
    with pytest.raises(weaviate_schema.NoMatch):
        weaviate_schema.where({"domain": []})


def test_tenant_filter_picks_tenants_under_multi_tenancy():
    tenants, rest = weaviate_schema.route({"tenant": "acme", "domain": "geo"}, multi_tenancy=True)
    assert tenants == ["acme"]
    assert shape(weaviate_schema.where(rest)) == ("domain", _Operator.EQUAL, "geo")
    assert weaviate_schema.route({"tenant": [None, "acme", "not a name!"]}, multi_tenancy=True) == (["acme", "default"], {})
    assert weaviate_schema.route({"domain": "geo"}, multi_tenancy=True) == (None, {"domain": "geo"})


def test_tenant_filter_is_a_property_filter_without_multi_tenancy():
    tenants, rest = weaviate_schema.route({"tenant": "acme", "domain": "geo"}, multi_tenancy=False)
    assert tenants is None
    assert isinstance(weaviate_schema.where(rest), _FilterAnd)
    assert ("tenant", _Operator.EQUAL, "acme") in shape(weaviate_schema.where(rest))[1]


def test_tenant_names():
    assert weaviate_schema.tenant_name(None) == weaviate_schema.tenant_name("") == "default"
    assert weaviate_schema.tenant_name("acme-1_B") == "acme-1_B"
    assert weaviate_schema.tenant_name("a b") is None and weaviate_schema.tenant_name("x" * 65) is None


def test_filters_on_never_written_keys():
    known = {"domain", "meta_lang"}
    assert weaviate_schema.prune_unknown({"domain": "geo", "color": None, "size": ["s", None]}, known) == {"domain": "geo"}
    with pytest.raises(weaviate_schema.NoMatch):
        weaviate_schema.prune_unknown({"color": "red"}, known)


def test_weaviate_properties_round_trip_the_chunk():
    props = weaviate_schema.properties_for(chunk(url=None, metadata={"lang": "en", "year": 2024, "note": None}))
    assert "url" not in props and "meta_note" not in props  # absent reads as null for is_none
    assert props["meta_lang"] == '"en"' and props["meta_year"] == "2024"
    assert weaviate_schema.chunk_from_properties(props) == chunk(url=None, metadata={"lang": "en", "year": 2024, "note": None})


def test_weaviate_collection_settings_serialize_for_the_server():
    settings = _CollectionConfigCreate(name="Retro", **weaviate_schema.collection_settings(384, True))._to_dict()
    assert settings["vectorConfig"][weaviate_schema.VECTOR]["vectorizer"] == {"none": {}}
    assert settings["vectorConfig"][weaviate_schema.VECTOR]["vectorIndexConfig"]["distance"] == "cosine"
    assert settings["multiTenancyConfig"]["enabled"] is True
    assert "384" in settings["description"]
    tokenization = {p["name"]: p.get("tokenization") for p in settings["properties"]}
    assert tokenization["domain"] == tokenization["chunk_id"] == "field" and tokenization["text"] == "word"


def test_weaviate_connection_args():
    plain = weaviate_schema.connection_args(WeaviateOptions(url="http://db:8080", grpc_port=50052))
    assert plain == {"http_host": "db", "http_port": 8080, "http_secure": False,
                     "grpc_host": "db", "grpc_port": 50052, "grpc_secure": False}
    secure = weaviate_schema.connection_args(WeaviateOptions(url="https://cluster.example"))
    assert (secure["http_port"], secure["http_secure"], secure["grpc_secure"]) == (443, True, True)
    with pytest.raises(StoreError, match="http://host:port"):
        weaviate_schema.connection_args(WeaviateOptions(url="db:8080"))


def test_unreachable_weaviate_fails_fast():
    section = WeaviateOptions(url=UNREACHABLE, grpc_port=10, timeout_s=1)
    message = fails_fast(lambda: weaviate.WeaviateStore(section, 3))
    assert message.startswith(f"Weaviate at {UNREACHABLE} unreachable:")


def test_weaviate_settings_the_client_refuses():
    section = WeaviateOptions(url=UNREACHABLE, grpc_port=9, timeout_s=1)
    message = fails_fast(lambda: weaviate.WeaviateStore(section, 3))
    assert "must be different" in message


# -- every call through the real client up to the wire ----------------------------------------------
@pytest.fixture(params=[False, True], ids=["one-collection", "tenants"])
def offline_weaviate(request):
    """A WeaviateStore over a real client that never connected: the client validates every
    argument before it notices it is closed (or, for tenant calls, that the server version it
    never read, 0.0.0, is too old), so reaching either means the call was well formed."""
    import weaviate as client_lib
    from weaviate.connect import ConnectionParams

    params = ConnectionParams.from_params(http_host="127.0.0.1", http_port=9, http_secure=False,
                                          grpc_host="127.0.0.1", grpc_port=10, grpc_secure=False)
    client = client_lib.WeaviateClient(connection_params=params, skip_init_checks=True)
    store = weaviate.WeaviateStore.__new__(weaviate.WeaviateStore)
    store.dimension, store.url, store.multi_tenancy = 2, UNREACHABLE, request.param
    store._client, store._collection = client, client.collections.get("Retro")
    store._properties = {p.name for p in weaviate_schema.base_properties()} | {"meta_lang"}
    return store


@pytest.mark.parametrize("call", [
    lambda s: s.upsert([chunk(metadata={"lang": "en"})], np.array([[0.6, 0.8]], dtype=np.float32)),
    lambda s: s.delete(doc_ids=["d"]),
    lambda s: s.search(np.array([0.6, 0.8]), top_k=2, filters={"domain": "geo", "lang": ["en", None]}),
    lambda s: s.keyword_search("Paris", top_k=2, filters={"tenant": "acme"}),
    lambda s: s.count({"id": "d#0"}),
    lambda s: list(s.chunks({"lang": "en"})),
    lambda s: s.vectors(["d#0"]),
], ids=["upsert", "delete", "search", "keyword_search", "count", "chunks", "vectors"])
def test_weaviate_calls_pass_the_client_checks(offline_weaviate, call):
    closed = "The `WeaviateClient` is closed|The current version is 0.0.0"
    with pytest.raises(StoreError, match=f"^Weaviate at {UNREACHABLE} failed: .*({closed})"):
        call(offline_weaviate)


def test_weaviate_filters_that_cannot_match_make_no_call(offline_weaviate):
    assert offline_weaviate.search(np.array([0.6, 0.8]), top_k=2, filters={"domain": []}) == []
    assert offline_weaviate.count({"lang": "en", "domain": []}) == 0
