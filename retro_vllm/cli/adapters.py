"""`retro-vllm adapters list|show`: what the adapter registry holds, with its validation record."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retro_vllm.cli.common import CONFIG_OPTION, fail, load

app = typer.Typer(help="The adapter registry: what is registered, with its training and validation record.",
                  rich_markup_mode=None, no_args_is_help=True)


@app.command("list", help="Every registered adapter: current version, type, domain, rank, validation verdict.")
def adapters_list(config_path: Optional[Path] = CONFIG_OPTION) -> None:
    from retro_vllm.adapters.registry import AdapterRegistry

    config = load(config_path)
    registry = AdapterRegistry(config.registry_dir)
    manifests = registry.all_current()
    if not manifests:
        typer.echo(f"no adapters registered in {config.registry_dir} (`retro-vllm serve` imports the shipped ones)")
        return
    typer.echo("| adapter | versions | type | domain | rank | validation | created |")
    typer.echo("|---|---|---|---|---|---|---|")
    for m in manifests:
        typer.echo(f"| {m.served_name} | {len(registry.versions(m.name))} | {m.type} | {m.domain or '-'} | {m.rank} "
                   f"| {verdict(m.validation)} | {m.created or '-'} |")


@app.command(
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

    config = load(config_path)
    try:
        manifest = AdapterRegistry(config.registry_dir).resolve(name)
    except AdapterError as exc:
        fail(str(exc))
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
    typer.echo(f"validation: {verdict(validation)}")
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


def verdict(validation: dict) -> str:
    """A validation record in words, as `adapters list`, `show` and `train` print it."""
    if not validation or "better" not in validation:
        return "not validated"
    if validation.get("forced"):
        return "forced (not better than the base model)" if validation["better"] is False else "forced (unvalidated)"
    return "better than the base model" if validation["better"] else "not better than the base model"
