"""`retro-vllm index`: add, replace or delete documents, or rebuild the index from the corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retro_vllm.cli.common import CONFIG_OPTION, fail, load

HELP = (
    "Add documents to the index, replace them, or delete them; or, with no PATH, bring the index in line "
    "with the configured corpus. PATHs are files or folders of .txt, .md, .html, .pdf and JSONL records "
    '({"id", "text", "title"?, "url"?, "metadata"?}). Each run builds a new index version and swaps it in '
    "whole: the running server keeps answering from the previous one until then, and picks up the new one "
    "without a restart. Examples: `retro-vllm index docs/ --domain networking`, "
    "`retro-vllm index --delete guides/intro`."
)


def index(
    paths: list[Path] = typer.Argument(None, help="Files or folders to index (document id = path below the folder)."),
    domain: Optional[str] = typer.Option(None, "--domain", "-d", help="Domain the documents belong to (required with PATH)."),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Tenant tag; requests filter on it with retro.filters."),
    delete: list[str] = typer.Option([], "--delete", help="Remove this document id (repeatable)."),
    config_path: Optional[Path] = CONFIG_OPTION,
) -> None:
    from retro_vllm.retrieval.corpus import CorpusError, SkippedFiles, read_documents
    from retro_vllm.retrieval.embedder import Embedder, EmbedderUnavailableError
    from retro_vllm.retrieval.index import IndexUnavailableError
    from retro_vllm.retrieval.ingest import IngestError, build_index, ingest
    from retro_vllm.retrieval.stores.base import StoreError

    config = load(config_path)
    if paths and not domain:
        fail(f"--domain is required with PATH; configured domains: {', '.join(config.domain_names)}")
    if domain and config.domain(domain) is None:
        fail(f"unknown domain {domain!r}; configured: {', '.join(config.domain_names)}")
    embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
    skipped = SkippedFiles()
    try:
        if not paths and not delete:
            version = build_index(config, embedder, progress=True)
            typer.echo(f"index {version.name}: {version.folder or config.retrieval.backend}")
            return
        documents = list(read_documents(list(paths or []), domain=domain, tenant=tenant, skipped=skipped)) if paths else []
        report = ingest(config, embedder, documents, delete=delete, progress=True)
    except (CorpusError, IngestError, EmbedderUnavailableError, IndexUnavailableError, StoreError, OSError) as exc:
        fail(str(exc))
    docs = report.to_json()["documents"]
    typer.echo(
        f"index {report.version.name if report.version else '-'}: {docs['added']} added, {docs['replaced']} replaced, "
        f"{docs['unchanged']} unchanged, {docs['deleted']} deleted documents; {report.chunks} chunks embedded, "
        f"{report.duplicate_chunks} duplicate chunks dropped, {len(skipped)} files skipped"
    )
    for path, reason in skipped.items:
        typer.echo(f"  skipped {path}: {reason}")
    if report.missing:
        fail(f"not in the index, nothing deleted for: {', '.join(report.missing)}")
