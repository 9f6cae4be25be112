"""`retro-vllm`: serve the plugin inside vLLM, and manage what it serves."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="Retrieval-augmented, multi-domain serving on vLLM. Start with `retro-vllm serve`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [n] markers literally
)

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", help="YAML configuration (default: $RETRO_VLLM_CONFIG, else the bundled demo).",
    exists=False, dir_okay=False,
)


def _fail(message: str) -> None:
    typer.secho(f"retro-vllm: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _load(config_path: Optional[Path]):
    from retro_vllm.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))


def _prepare_model(config) -> Path:
    """The served checkpoint; the embedded default is converted once (with progress)."""
    from retro_vllm.models.default_model import ModelUnavailableError, ensure_default_model

    try:
        path = config.model.path or ensure_default_model(config.home_dir)
    except (ModelUnavailableError, OSError) as exc:
        _fail(str(exc))
    problem = _checkpoint_problem(path)
    if problem:
        where = f"model.path in {config.source}" if config.model.path else "delete the folder to convert it again"
        _fail(f"model at {path} is unusable: {problem} ({where})")
    return path


def _prepare_served_model(config) -> tuple[Path, list[str]]:
    """The folder vLLM serves and the engine arguments it needs: the embedded default straight
    from its GGUF (`model.from_gguf`), else a checkpoint as `_prepare_model` gives."""
    if config.model.path or not config.model.from_gguf:
        return _prepare_model(config), []
    from retro_vllm.models.default_model import ModelUnavailableError, ensure_default_gguf_folder
    from retro_vllm.models.gguf_weights import LOAD_FORMAT

    try:
        return ensure_default_gguf_folder(config.home_dir), ["--load-format", LOAD_FORMAT]
    except (ModelUnavailableError, OSError) as exc:
        _fail(str(exc))


def _checkpoint_problem(path: Path) -> str | None:
    """A cheap look before vLLM starts, so a broken checkpoint is one line, not a traceback."""
    import json

    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"config.json: {exc}"
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    from safetensors import safe_open

    for weight in weights:
        try:
            with safe_open(str(weight), framework="numpy") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises several error types for a bad header
            return f"{weight.name}: {exc}"
    return None


def _prepare_index(config):
    """The embedder and the current index, built first if the corpus changed (with progress).
    Opens the store once, so a corrupt index or an unreachable server is one line, not a
    traceback inside vLLM."""
    from retro_vllm.retrieval.corpus import CorpusError
    from retro_vllm.retrieval.embedder import Embedder, EmbedderUnavailableError
    from retro_vllm.retrieval.index import IndexUnavailableError, open_store
    from retro_vllm.retrieval.ingest import ensure_index
    from retro_vllm.retrieval.stores.base import StoreError

    try:
        embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
        version = ensure_index(config, embedder, progress=True)
        # Asked lazily: the embedder's dimension loads torch and the model (seconds of every start),
        # and an embedded store knows its own.
        store = open_store(config, version, lambda: embedder.dimension)
        store.health()
        if not store.count():
            typer.secho("retro-vllm: the index has no passages; answers will come without sources", err=True)
        store.close()
        return embedder, version
    except (EmbedderUnavailableError, IndexUnavailableError, StoreError, CorpusError, OSError) as exc:
        _fail(f"{exc} (run `retro-vllm index` to rebuild)" if isinstance(exc, IndexUnavailableError) else str(exc))


def _seed_adapters(config) -> None:
    from retro_vllm.adapters.registry import AdapterError, AdapterRegistry, seed_registry

    try:
        for manifest in seed_registry(AdapterRegistry(config.registry_dir), config.adapter_seeds(),
                                      base_model=config.model.name):
            typer.secho(f"retro-vllm: registered shipped adapter {manifest.served_name}", err=True)
    except (AdapterError, OSError, KeyError, ValueError) as exc:
        _fail(f"cannot import shipped adapters into {config.registry_dir}: {exc}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=(
        "Start vLLM's OpenAI-compatible server with the retro plugin. With no arguments it serves the "
        "embedded demo offline (SmolLM2-135M-Instruct, MiniLM embedder, FAISS index of the bundled corpus) "
        "on http://127.0.0.1:8000. Any further arguments go to vLLM unchanged, e.g. "
        "`retro-vllm serve --port 9000 --max-model-len 4096`."
    ),
)
def serve(ctx: typer.Context, config_path: Optional[Path] = CONFIG_OPTION) -> None:
    from retro_vllm.launch import engine_flags, given_flags, plugin_env

    config = _load(config_path)
    user_args = list(ctx.args)
    if "--load-format" in given_flags(user_args):  # the user picks how weights load: a checkpoint then
        model_path, model_args = _prepare_model(config), []
    else:
        model_path, model_args = _prepare_served_model(config)
    _, version = _prepare_index(config)
    typer.secho(f"retro-vllm: model {model_path}", err=True)
    typer.secho(f"retro-vllm: index {version.name} ({version.backend}) under {version.folder or config.home_dir}", err=True)

    args = ["--model", str(model_path), "--served-model-name", config.model.name, *model_args]
    defaults = {"--host": "127.0.0.1", "--port": "8000", "--max-model-len": "4096"}
    if config.adapters.enabled and config.domains:
        _seed_adapters(config)
    given = given_flags([*config.serving.vllm_args, *user_args])
    for flag, value in defaults.items():
        if flag not in given:
            args += [flag, value]
    args += [*config.serving.vllm_args, *user_args]
    args += engine_flags(config, args)

    env = dict(os.environ)
    # `retro-vllm serve` loads retro's plugins only, whatever VLLM_PLUGINS the shell has.
    env.update(plugin_env(config, args), VLLM_PLUGINS="retro", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    # vLLM's API server, minus the scipy and scikit-learn it would load without using them
    # (retro_vllm/api_server.py). The `vllm` console script of vllm-cpu crashes on a version lookup.
    command = [sys.executable, "-m", "retro_vllm.api_server", *args]
    typer.secho("retro-vllm: starting vLLM: " + " ".join(command[1:]), err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(sys.executable, command, env)


@app.command(
    help="Add documents to the index, replace them, or delete them; or, with no PATH, bring the index in line "
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

    config = _load(config_path)
    if paths and not domain:
        _fail(f"--domain is required with PATH; configured domains: {', '.join(config.domain_names)}")
    if domain and config.domain(domain) is None:
        _fail(f"unknown domain {domain!r}; configured: {', '.join(config.domain_names)}")
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
        _fail(str(exc))
    docs = report.to_json()["documents"]
    typer.echo(
        f"index {report.version.name if report.version else '-'}: {docs['added']} added, {docs['replaced']} replaced, "
        f"{docs['unchanged']} unchanged, {docs['deleted']} deleted documents; {report.chunks} chunks embedded, "
        f"{report.duplicate_chunks} duplicate chunks dropped, {len(skipped)} files skipped"
    )
    for path, reason in skipped.items:
        typer.echo(f"  skipped {path}: {reason}")
    if report.missing:
        _fail(f"not in the index, nothing deleted for: {', '.join(report.missing)}")


@app.command(
    help="Fine-tune an adapter for a domain on retrieval-augmented examples laid out like serving prompts "
    "(preamble, numbered passages, question -> answer ending in its [n] citation), validate it against the "
    "base model on the held-out questions, and register it as the domain adapter's next version. Examples "
    "come from the domain's QA JSONL (`qa:` in the config or --qa), else are derived from its corpus. "
    "--type picks the method: lora (default), adalora (registered as the plain LoRA it folds into), ia3 "
    "(k_proj/v_proj only: elsewhere vLLM cannot carry it), prompt (prompt tuning, served as prompt embeddings), "
    "prefix (trains, but cannot be registered: vLLM has no faithful path for per-layer K/V prefixes; use "
    "--no-register --output DIR). Registration needs the adapter to beat the base model: lower held-out loss "
    "and answer F1 + valid-citation share not lower; --force registers it anyway, with its figures. CPU, "
    "seeded (same seed and data, same weights), resumable with --checkpoint-dir/--resume, with a progress bar.",
)
def train(
    domain: str = typer.Option(..., "--domain", "-d", help="Configured domain to train for."),
    config_path: Optional[Path] = CONFIG_OPTION,
    method: str = typer.Option("lora", "--type", help="lora | adalora | ia3 | prompt | prefix."),
    qa: Optional[Path] = typer.Option(None, help="QA JSONL {question, answer, doc_id}; default: the domain's `qa`."),
    epochs: int = typer.Option(5, help="Passes over the examples."),
    rank: int = typer.Option(16, help="LoRA rank (the server's --max-lora-rank must be at least this)."),
    alpha: int = typer.Option(32, help="LoRA and AdaLoRA alpha."),
    init_r: int = typer.Option(12, help="AdaLoRA: rank of each matrix before pruning."),
    target_r: int = typer.Option(8, help="AdaLoRA: average rank after pruning."),
    ia3_targets: str = typer.Option("k_proj,v_proj", help="IA3: comma-separated modules to scale (k_proj, v_proj)."),
    virtual_tokens: int = typer.Option(16, help="Prompt and prefix tuning: virtual tokens."),
    learning_rate: Optional[float] = typer.Option(
        None, help="AdamW learning rate; default per type: lora/adalora 1e-3, ia3 1e-2, prompt 3e-2, prefix 1e-2."),
    batch_size: int = typer.Option(4, help="Examples per step."),
    holdout: float = typer.Option(0.2, help="Share of QA records kept out of training for validation."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps (quick runs)."),
    seed: int = typer.Option(0, help="Seed for the split, the distractors and the initialisation."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Save resumable checkpoints in this folder."),
    checkpoint_every: int = typer.Option(50, min=1, help="Steps between checkpoints (and one at the end)."),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in --checkpoint-dir."),
    register: bool = typer.Option(True, help="Validate, then register the result in the adapter registry."),
    validate: bool = typer.Option(False, "--validate", help="Validate even with --no-register (figures only)."),
    validate_max: int = typer.Option(24, min=1, help="At most this many held-out questions in validation."),
    validate_tokens: int = typer.Option(64, min=1, help="max_new_tokens of each validation answer."),
    force: bool = typer.Option(False, help="Register even when the adapter is not better than the base model."),
    output: Optional[Path] = typer.Option(None, help="Also keep the peft adapter folder here."),
    device: str = typer.Option("auto", help="Where to train: auto (a CUDA GPU when torch sees one, else cpu), "
                               "cpu, cuda or cuda:N. Validation runs on the CPU."),
) -> None:
    import random
    import shutil
    import tempfile

    from pydantic import ValidationError

    from retro_vllm.adapters.examples import gather_candidates, qa_from_corpus, read_qa
    from retro_vllm.adapters.methods import DEFAULT_LEARNING_RATE, METHODS, MethodError, TrainingConfig
    from retro_vllm.adapters.registry import AdapterError, AdapterRegistry
    from retro_vllm.adapters.train_lora import CheckpointError, data_hash, train_adapter
    from retro_vllm.adapters.validate import gate
    from retro_vllm.retrieval.retriever import Retriever

    if method not in METHODS:
        _fail(f"--type {method!r}: choose from {', '.join(METHODS)}")
    if resume and checkpoint_dir is None:
        _fail("--resume needs --checkpoint-dir")
    if method == "prefix" and register:
        _fail("prefix tuning trains but cannot be registered: vLLM has no faithful serving path for its "
              "per-layer K/V prefixes; train it with --no-register --output DIR")
    config = _load(config_path)
    section = config.domain(domain)
    if section is None:
        _fail(f"unknown domain {domain!r}; configured: {', '.join(config.domain_names)}")
    try:
        settings = TrainingConfig(
            method=method, rank=rank, alpha=alpha, init_r=init_r, target_r=target_r,
            ia3_targets=[t.strip() for t in ia3_targets.split(",") if t.strip()], virtual_tokens=virtual_tokens,
            epochs=epochs, learning_rate=DEFAULT_LEARNING_RATE[method] if learning_rate is None else learning_rate,
            batch_size=batch_size, seed=seed, max_steps=max_steps, top_k=config.retrieval.top_k)
    except ValidationError as exc:
        _fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()))
    device = _training_device(device)
    model_path = _prepare_model(config)
    embedder, version = _prepare_index(config)
    retriever = Retriever(config, embedder, version)
    qa_path = qa or section.qa
    records = read_qa(qa_path) if qa_path else qa_from_corpus([c for c in retriever.store.chunks() if c.domain == domain])
    rng = random.Random(seed)
    rng.shuffle(records)
    held = records[: int(len(records) * holdout)]
    records = records[len(held):]
    candidates = gather_candidates(retriever, domain, records, pool=8)
    if not candidates:
        _fail(f"no training examples for {domain!r} (QA doc_ids must name documents of the domain)")
    preamble = (section.preamble or config.serving.preamble)
    with tempfile.TemporaryDirectory(prefix="retro-train-") as tmp:
        try:
            result = train_adapter(model_path, candidates, preamble=preamble, settings=settings, output_dir=Path(tmp),
                                   checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                                   device=device)
        except (MethodError, CheckpointError) as exc:
            _fail(str(exc))
        if result.resumed_from:
            typer.echo(f"resumed from the checkpoint at step {result.resumed_from}")
        typer.echo(f"trained {method} on {result.examples} examples, {result.steps} steps in {result.seconds:.0f}s; "
                   f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
        if output:
            shutil.copytree(tmp, output, dirs_exist_ok=True)
        if not (register or validate):
            return
        validation = _validate_adapter(config, model_path, Path(tmp), retriever, domain, held,
                                       preamble=preamble, limit=validate_max, max_new_tokens=validate_tokens)
        if validation is not None:
            typer.echo(f"validation: {validation.summary()}; "
                       f"{'better than' if validation.better else 'not better than'} the base model")
        if not register:
            return
        record, refusal = gate(validation, force=force)
        if refusal:
            _fail(f"not registered: {refusal}")
        try:
            manifest = AdapterRegistry(config.registry_dir).register(
                Path(tmp), base_model_path=model_path, name=section.adapter_name, domain=domain,
                base_model=config.model.name, type=method,
                data_hash=data_hash(candidates), validation=record,
                training={**settings.record(), "examples": result.examples, "steps": result.steps,
                          "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from,
                          "first_loss": result.losses[0], "last_loss": result.losses[-1],
                          "qa": str(qa_path) if qa_path else "derived from corpus",
                          "device": device, "heldout_doc_ids": [r.doc_id for r in held]},
            )
        except AdapterError as exc:
            _fail(f"not registered: {exc}")
        typer.echo(f"registered {manifest.served_name} in {config.registry_dir}; validation: {_verdict(record)}")


def _training_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested != "cpu" and not (requested == "cuda" or requested.startswith("cuda:")):
        _fail(f"--device {requested!r}: choose auto, cpu, cuda or cuda:N")
    if requested != "cpu" and not torch.cuda.is_available():
        _fail(f"--device {requested}: torch sees no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    return requested


def _validate_adapter(config, model_path: Path, adapter_dir: Path, retriever, domain: str, held, *, preamble: str,
                      limit: int, max_new_tokens: int):
    """The validation gate's figures on up to `limit` held-out questions; None without any."""
    from retro_vllm.adapters.examples import gather_candidates
    from retro_vllm.adapters.validate import validate

    questions = gather_candidates(retriever, domain, held, pool=8)[:limit]
    if not questions:
        return None
    return validate(model_path, adapter_dir, questions, preamble=preamble, top_k=config.retrieval.top_k,
                    max_new_tokens=max_new_tokens)


adapters_app = typer.Typer(help="The adapter registry: what is registered, with its training and validation record.",
                           rich_markup_mode=None, no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("list", help="Every registered adapter: current version, type, domain, rank, validation verdict.")
def adapters_list(config_path: Optional[Path] = CONFIG_OPTION) -> None:
    from retro_vllm.adapters.registry import AdapterRegistry

    config = _load(config_path)
    registry = AdapterRegistry(config.registry_dir)
    manifests = registry.all_current()
    if not manifests:
        typer.echo(f"no adapters registered in {config.registry_dir} (`retro-vllm serve` imports the shipped ones)")
        return
    typer.echo("| adapter | versions | type | domain | rank | validation | created |")
    typer.echo("|---|---|---|---|---|---|---|")
    for m in manifests:
        typer.echo(f"| {m.served_name} | {len(registry.versions(m.name))} | {m.type} | {m.domain or '-'} | {m.rank} "
                   f"| {_verdict(m.validation)} | {m.created or '-'} |")


@adapters_app.command(
    "show",
    help="One adapter's manifest (NAME = its current version, NAME@VERSION = that one), with the validation "
    "figures of the adapter and the base model side by side.",
)
def adapters_show(
    name: str = typer.Argument(..., help="NAME or NAME@VERSION."),
    config_path: Optional[Path] = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print manifest.json as stored."),
) -> None:
    from retro_vllm.adapters.registry import AdapterError, AdapterRegistry

    config = _load(config_path)
    try:
        manifest = AdapterRegistry(config.registry_dir).resolve(name)
    except AdapterError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    for key in ("name", "version", "type", "domain", "base_model", "rank", "alpha", "targets", "data_hash", "created"):
        value = getattr(manifest, key)
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    typer.echo(f"files: {', '.join(sorted(manifest.files))}")
    # How the trained method is served (conversion facts); per-module tables stay in --json.
    served = {k: v for k, v in (manifest.method or {}).items() if not isinstance(v, (dict, list))}
    if served:
        typer.echo("method: " + ", ".join(f"{k}={v}" for k, v in served.items()))
    validation = manifest.validation
    typer.echo(f"validation: {_verdict(validation)}")
    if validation.get("adapter") and validation.get("base"):
        typer.echo(f"  held-out questions: {validation.get('n')}, max_new_tokens {validation.get('max_new_tokens')}")
        typer.echo(f"  {'':16} {'adapter':>9} {'base':>9}")
        for figure in ("loss", "f1", "valid_citations"):
            typer.echo(f"  {figure:16} {validation['adapter'][figure]:>9.4f} {validation['base'][figure]:>9.4f}")
        if validation.get("rule"):
            typer.echo(f"  rule: {validation['rule']}")
    training = manifest.training
    if training:
        shown = {k: v for k, v in training.items() if k != "heldout_doc_ids"}
        typer.echo("training: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        if "heldout_doc_ids" in training:
            typer.echo(f"  held out: {len(training['heldout_doc_ids'])} documents")


def _verdict(validation: dict) -> str:
    if not validation or "better" not in validation:
        return "not validated"
    if validation.get("forced"):
        return "forced (not better than the base model)" if validation["better"] is False else "forced (unvalidated)"
    return "better than the base model" if validation["better"] else "not better than the base model"


eval_app = typer.Typer(help="Measure a running server or the retrieval stack; each prints a markdown table.",
                       rich_markup_mode=None)
app.add_typer(eval_app, name="eval")


@eval_app.command(
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

    folder = qa_dir or Path(__file__).parent / "demo" / "qa"
    files = {p.name.split(".")[0]: p for p in sorted(folder.glob("*.jsonl"))}
    only = None
    if heldout:
        from retro_vllm.adapters.registry import AdapterError, AdapterRegistry

        config = _load(config_path)
        registry = AdapterRegistry(config.registry_dir)
        only = set()
        for section in config.domains:
            try:
                only |= set(registry.resolve(section.adapter_name).training.get("heldout_doc_ids", []))
            except AdapterError as exc:
                _fail(f"--heldout: {exc}")
    if not files:
        _fail(f"no <domain>.jsonl QA files in {folder}")
    outcomes = evaluate(url.rstrip("/"), files, model=model, limit=limit, max_tokens=max_tokens,
                        pass_domain=pass_domain, concurrency=concurrency, only_doc_ids=only, bias=bias)
    typer.echo(table(outcomes))


@eval_app.command(
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
    from retro_vllm.retrieval.index import open_store

    torch.set_num_threads(threads)
    config = _load(config_path)
    embedder, version = _prepare_index(config)
    from retro_vllm.routing.training import ensure_router

    router = ensure_router(config, embedder, open_store(config, version, embedder.dimension), version)
    if router is None:
        _fail("routing needs at least two domains with passages")
    rows = load_questions(questions or Path(__file__).parent / "demo" / "questions")
    if not rows:
        _fail("no questions found")
    typer.echo(evaluate(router, embedder, rows))


@eval_app.command(
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
    config = _load(config_path)
    backend = backend or config.retrieval.backend
    try:
        embedded = is_embedded(backend)
    except StoreError as exc:
        _fail(str(exc))
    if not embedded:
        _fail(f"eval retrieval runs on an embedded backend (faiss, qdrant-edge), not {backend!r}")
    try:
        data = load_python_faq(dataset, max_distractor_docs=max_distractors)
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the data set at {dataset}: {exc}")
    with tempfile.TemporaryDirectory(prefix="retro-eval-") as home:
        result = evaluate(data, eval_config(config, Path(home), backend=backend, cross_encoder=cross_encoder),
                          cross_encoder=cross_encoder)
    typer.echo(table(result))
    if output:
        output.write_text(json.dumps(result, indent=2))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # logs each missing SIMD build
    app()


if __name__ == "__main__":
    main()
