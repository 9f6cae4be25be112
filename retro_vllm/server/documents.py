"""`POST /v1/retro/documents` and `DELETE /v1/retro/documents/{id}`: ingestion over HTTP.

Each call is one new index version, built aside and swapped in whole (retrieval/index.py):
requests in flight keep answering from the previous version, the next ones see the new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from retro_vllm.rag.errors import RetroHTTPError
from retro_vllm.rag.state import RetroState
from retro_vllm.retrieval.corpus import CorpusError, document_from_record
from retro_vllm.retrieval.index import IndexUnavailableError
from retro_vllm.retrieval.ingest import IngestError, ingest
from retro_vllm.retrieval.stores.base import StoreError
from retro_vllm.server.errors import response_for
from retro_vllm.server.request import read_json_body

_FIELDS = {"domain", "tenant", "documents", "delete"}


async def add_documents(raw_request: Request) -> JSONResponse:
    state: RetroState = raw_request.app.state.retro
    limits = state.config.serving
    try:
        body = await read_json_body(raw_request, limits.max_ingest_bytes)
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise RetroHTTPError(400, f"unknown field(s): {', '.join(unknown)}; expected domain, tenant, documents, delete",
                                 code="invalid_request", param=unknown[0])
        domain, tenant = body.get("domain"), body.get("tenant")
        if not isinstance(domain, str) or state.config.domain(domain) is None:
            known = ", ".join(state.config.domain_names)
            raise RetroHTTPError(400, f"'domain' must name a configured domain ({known}), got {domain!r}",
                                 code="unknown_domain", param="domain")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise RetroHTTPError(400, "'tenant' must be a non-empty string", code="invalid_request", param="tenant")
        records = body.get("documents", [])
        delete = body.get("delete", [])
        if not isinstance(records, list) or not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
            raise RetroHTTPError(400, "'documents' must be a list of objects and 'delete' a list of ids",
                                 code="invalid_request", param="documents")
        if not records and not delete:
            raise RetroHTTPError(400, "nothing to do: 'documents' and 'delete' are both empty", code="invalid_request",
                                 param="documents")
        if len(records) > limits.max_ingest_documents:
            raise RetroHTTPError(413, f"{len(records)} documents in one request; the limit is "
                                 f"{limits.max_ingest_documents}", code="request_too_large", param="documents")
        documents = []
        for n, record in enumerate(records):
            try:
                documents.append(document_from_record(record, domain=domain, tenant=tenant))
            except CorpusError as exc:
                raise RetroHTTPError(400, f"documents[{n}]: {exc}", code="invalid_document",
                                     param=f"documents[{n}]") from None
        report = await _write(state, documents, delete)
    except RetroHTTPError as exc:
        return response_for(exc)
    return JSONResponse({"object": "retro.documents", **report.to_json()})


async def delete_document(raw_request: Request) -> JSONResponse:
    state: RetroState = raw_request.app.state.retro
    doc_id = raw_request.path_params["doc_id"]
    try:
        report = await _write(state, [], [doc_id])
        if report.missing:
            raise RetroHTTPError(404, f"document {doc_id!r} is not in the index", code="document_not_found", param="id")
    except RetroHTTPError as exc:
        return response_for(exc)
    return JSONResponse({"object": "retro.document.deleted", "id": doc_id, "deleted": True,
                         "chunks": report.deleted_chunks, "index_version": report.version.name})


async def _write(state: RetroState, documents: list, delete: list[str]) -> Any:
    retriever = state.retriever
    try:
        report = await asyncio.to_thread(ingest, state.config, retriever.embedder, documents, delete=delete,
                                         progress=False)
    except IngestError as exc:
        raise RetroHTTPError(400, str(exc), code="invalid_document") from None
    except (StoreError, IndexUnavailableError, OSError) as exc:
        raise RetroHTTPError(503, f"index write failed, nothing changed: {exc}", code="index_unavailable") from None
    await asyncio.to_thread(retriever.refresh)  # this server answers from the new version at once
    return report
