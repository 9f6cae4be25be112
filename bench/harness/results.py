"""Where results go and how they are written: `bench/results/<name>.md` (the table under a
heading with the time and the machine), `<name>.json` (the same figures with both), and the
plots beside them."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
RESULTS = REPO / "bench" / "results"


def pyplot():
    """matplotlib's pyplot without a display, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (bash scripts/setup.sh --bench): no plot")
        return None
    return plt


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_result(name: str, markdown: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{stamp} on {machine()}\n\n{markdown}\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"when": stamp, "machine": machine(), **data}, indent=2) + "\n")
    return RESULTS / f"{name}.md"
