"""`retro-vllm eval citations|router|retrieval`: measurements, each printed as a markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retro_vllm.cli.common import CONFIG_OPTION, fail, load

DEMO = Path(__file__).resolve().parents[1] / "demo"

app = typer.Typer(help="Measure a running server or the retrieval stack; each prints a markdown table.",
                  rich_markup_mode=None)


@app.command(
    "citations",
    help="Ask a running server every question of the domains' QA files (default: the bundled demo's) and "
    "report how often answers carry [n] markers and cite the passage that holds the answer.",
)
def eval_citations(
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of a running retro-vllm server."),
    model: str = typer.Option("retro", help="Model name to send (an adapter, the base model, or `retro`)."),
    qa_dir: Optional[Path] = typer.Option(None, help="Folder of <domain>.jsonl QA files; default: the demo's."),
    limit: Optional[int] = typer.Option(None, help="At most this many questions per domain."),
    max_tokens: int = typer.Option(96, help="max_tokens per answer."),
    pass_domain: bool = typer.Option(True, help="Send retro.domain (else the model name decides: `retro` routes)."),
    concurrency: int = typer.Option(4, help="Requests in flight."),
    heldout: bool = typer.Option(False, help="Only questions the domains' current adapters held out of training."),
    bias: Optional[float] = typer.Option(None, help="Send retro.bias (retrieval-aware decoding strength; 0 = off)."),
    config_path: Optional[Path] = CONFIG_OPTION,
) -> None:
    from retro_vllm.evaluation.citations import evaluate, table

    folder = qa_dir or DEMO / "qa"
    files = {p.name.split(".")[0]: p for p in sorted(folder.glob("*.jsonl"))}
    only = None
    if heldout:
        from retro_vllm.adapters.registry import AdapterError, AdapterRegistry

        config = load(config_path)
        registry = AdapterRegistry(config.registry_dir)
        only = set()
        for section in config.domains:
            try:
                only |= set(registry.resolve(section.adapter_name).training.get("heldout_doc_ids", []))
            except AdapterError as exc:
                fail(f"--heldout: {exc}")
    if not files:
        fail(f"no <domain>.jsonl QA files in {folder}")
    outcomes = evaluate(url.rstrip("/"), files, model=model, limit=limit, max_tokens=max_tokens,
                        pass_domain=pass_domain, concurrency=concurrency, only_doc_ids=only, bias=bias)
    typer.echo(table(outcomes))


@app.command(
    "router",
    help="Route held-out questions (JSONL with 'question' and 'domain'; default: the demo's routing questions) "
    "and print accuracy, per-domain confusion and the classifier's latency given the embedding.",
)
def eval_router(
    config_path: Optional[Path] = CONFIG_OPTION,
    questions: Optional[Path] = typer.Option(None, help="Folder of *.jsonl question files."),
    threads: int = typer.Option(1, help="Torch threads for embedding (1 = as inside the server)."),
) -> None:
    import torch

    from retro_vllm.evaluation.router import evaluate, load_questions
    from retro_vllm.prepare import PrepareError, prepare_index
    from retro_vllm.retrieval.index import open_store

    torch.set_num_threads(threads)
    config = load(config_path)
    try:
        embedder, version = prepare_index(config)
    except PrepareError as exc:
        fail(str(exc))
    from retro_vllm.routing.training import ensure_router

    router = ensure_router(config, embedder, open_store(config, version, embedder.dimension), version)
    if router is None:
        fail("routing needs at least two domains with passages")
    rows = load_questions(questions or DEMO / "questions")
    if not rows:
        fail("no questions found")
    typer.echo(evaluate(router, embedder, rows))


@app.command(
    "retrieval",
    help="Recall@1/5/10, MRR@10 and nDCG@10 of dense, BM25, hybrid and hybrid + rerank side by side, with time "
    "per query, on a labelled data set no one here wrote: the Python FAQ from Debian's python3-doc package "
    "(`apt-get download python3.11-doc`, the package python3-doc points to; pass the .deb or the folder it was "
    "extracted to). The data set is "
    "indexed in a temporary home with your config's retrieval settings; your own index is untouched.",
)
def eval_retrieval(
    dataset: Path = typer.Option(..., "--dataset", help="python3-doc .deb, its extracted folder, or its html folder."),
    config_path: Optional[Path] = CONFIG_OPTION,
    backend: Optional[str] = typer.Option(None, help="faiss or qdrant-edge; default: the config's backend."),
    cross_encoder: Optional[Path] = typer.Option(None, help="Local CrossEncoder folder: adds a hybrid+cross-encoder row."),
    max_distractors: Optional[int] = typer.Option(None, help="Keep at most this many distractor documents (quick runs)."),
    output: Optional[Path] = typer.Option(None, help="Also write the figures as JSON here."),
    threads: int = typer.Option(1, help="Torch threads for embedding."),
) -> None:
    import json
    import tempfile

    import torch

    from retro_vllm.evaluation.datasets import load_python_faq
    from retro_vllm.evaluation.retrieval import eval_config, evaluate, table
    from retro_vllm.retrieval.stores import is_embedded
    from retro_vllm.retrieval.stores.base import StoreError

    torch.set_num_threads(threads)
    config = load(config_path)
    backend = backend or config.retrieval.backend
    try:
        embedded = is_embedded(backend)
    except StoreError as exc:
        fail(str(exc))
    if not embedded:
        fail(f"eval retrieval runs on an embedded backend (faiss, qdrant-edge), not {backend!r}")
    try:
        data = load_python_faq(dataset, max_distractor_docs=max_distractors)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the data set at {dataset}: {exc}")
    with tempfile.TemporaryDirectory(prefix="retro-eval-") as home:
        result = evaluate(data, eval_config(config, Path(home), backend=backend, cross_encoder=cross_encoder),
                          cross_encoder=cross_encoder)
    typer.echo(table(result))
    if output:
        output.write_text(json.dumps(result, indent=2))
