"""The bench contract, and the one main that runs any bench by it.

A bench is a module `bench/<name>.py` whose docstring is its `--help` text, and which ends with

    if __name__ == "__main__":
        main(sys.modules[__name__])

so `python -m bench.<name> [options]` parses, measures, prints the table, writes
`bench/results/<name>.md` and `.json`, and plots `<name>.png`, here and nowhere else.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Protocol

from bench.harness import results


class Bench(Protocol):
    """What a bench module defines (modules satisfy a Protocol by their functions). A bench may
    also define `plot(result: dict, path: Path) -> None`, which draws `result` into `path` with
    `matplotlib.pyplot` (the driver has already chosen its display-less backend, and skips the
    plot when matplotlib is not installed)."""

    __doc__: str | None

    def options(self, parser: argparse.ArgumentParser) -> None:
        """Add the bench's command-line options; the defaults are what `python -m bench` runs."""

    def run(self, args: argparse.Namespace) -> dict:
        """The measurement: start what it compares, measure, stop it all again. Returns the
        figures that `bench/results/<name>.json` records, JSON-able (integer keys become strings
        there), with the settings the table must state. Prints progress only."""

    def table(self, result: dict) -> str:
        """The markdown that `<name>.md` shows, from `run`'s result alone; no measuring."""


def main(bench: ModuleType, argv: list[str] | None = None) -> dict:
    """Parse, run, print and write the table and the figures, plot: the same for every bench.
    The result files are named after the module (`bench.overhead` -> `overhead.md`), so the
    name is stated once, in the file name, also when the module runs as `__main__`."""
    name = bench.__spec__.name.rpartition(".")[2]
    parser = argparse.ArgumentParser(description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.options(parser)
    args = parser.parse_args(argv)
    result = bench.run(args)
    markdown = bench.table(result)
    print(markdown)
    print(f"\nwritten: {results.write_result(name, markdown, result)}")
    if hasattr(bench, "plot") and results.pyplot() is not None:
        bench.plot(result, Path(results.RESULTS) / f"{name}.png")
    return result
