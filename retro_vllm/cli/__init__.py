"""`retro-vllm`, the command line: the app here, one module per command, each mostly its flags.

    serve.py     `serve`: prepare, then start vLLM's OpenAI server with the plugin
    index.py     `index`: add, replace or delete documents; rebuild from the corpus
    train.py     `train`: fine-tune, validate and register a domain adapter
    adapters.py  `adapters list` / `adapters show`: the registry
    eval.py      `eval citations` / `eval router` / `eval retrieval`
    common.py    the --config option, loading the config, failing with one line

The workflows live in the library, where the server and the benches use them too:
`retro_vllm.prepare` (model, index and shipped adapters before vLLM starts) and
`retro_vllm.adapters.pipeline` (training). A command turns its flags into calls there and the
library's one-line errors into exit status 2; it holds no workflow of its own. Modules import
only typer at the top: `retro-vllm --help` loads no torch, vLLM or faiss.
"""

from __future__ import annotations

import logging

import typer

from retro_vllm.cli import adapters, index, serve, train
from retro_vllm.cli import eval as evaluation

app = typer.Typer(
    help="Retrieval-augmented, multi-domain serving on vLLM. Start with `retro-vllm serve`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [n] markers literally
)
app.command(context_settings=serve.CONTEXT, help=serve.HELP)(serve.serve)
app.command(help=index.HELP)(index.index)
app.command(help=train.HELP)(train.train)
app.add_typer(adapters.app, name="adapters")
app.add_typer(evaluation.app, name="eval")


def main() -> None:
    """The `retro-vllm` console script (and `python -m retro_vllm.cli`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # logs each missing SIMD build
    app()
