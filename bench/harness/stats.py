"""Percentiles and the standard error of a median: what every bench table reports."""

from __future__ import annotations

import statistics


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_se(values: list[float], resamples: int = 2000) -> float:
    """Standard error of the median, by bootstrap (fixed seed): how far a p50 of this many
    samples would move between runs."""
    import numpy as np

    if len(values) < 2:
        return float("nan")
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(0).integers(0, len(data), size=(resamples, len(data)))
    return float(np.median(data[picks], axis=1).std())
