"""A nearest-centroid classifier over the embedder's query vectors, with a confidence threshold.

Each domain is the normalized mean of its examples' vectors (corpus chunks and any
labelled queries); a query's confidence is the softmax of its cosine similarity to each
centroid over a temperature. Serving is one matrix product and a softmax in numpy:
microseconds once the query is embedded (the embedding is shared with retrieval).

Centroids need no tuning and held up better on held-out questions than a logistic
regression over the same vectors (README has the figures).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

WEIGHTS_FILE = "router.npz"
INFO_FILE = "router.json"


def add_to_sums(sums: dict[str, np.ndarray], vectors: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Add each row of `vectors` to its label's sum (float64, in place) and return `sums`."""
    labels_array = np.asarray(labels)
    for domain in dict.fromkeys(labels):
        total = vectors[labels_array == domain].sum(axis=0, dtype=np.float64)
        sums[domain] = sums[domain] + total if domain in sums else total
    return sums


@dataclass(frozen=True)
class RouteDecision:
    domain: str | None  # None: below the threshold, the base model answers
    score: float  # the top domain's probability
    best: str  # the top domain, even when below the threshold


class DomainRouter:
    def __init__(self, domains: list[str], weights: np.ndarray, bias: np.ndarray, *, threshold: float,
                 fingerprint: str = ""):
        self.domains = list(domains)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)  # (dim, n_domains)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.threshold = threshold
        self.fingerprint = fingerprint

    @classmethod
    def train(cls, vectors: np.ndarray, labels: Sequence[str], *, threshold: float, temperature: float,
              fingerprint: str = "") -> "DomainRouter":
        return cls.from_sums(add_to_sums({}, vectors, labels), threshold=threshold, temperature=temperature,
                             fingerprint=fingerprint)

    @classmethod
    def from_sums(cls, sums: dict[str, np.ndarray], *, threshold: float, temperature: float,
                  fingerprint: str = "") -> "DomainRouter":
        """From each domain's sum of example vectors (`add_to_sums`): a normalized sum is the
        normalized mean, so examples can be added a batch at a time."""
        domains = sorted(sums)
        if len(domains) < 2:
            raise ValueError("a router needs at least two domains with examples")
        centroids = np.stack([sums[d] for d in domains])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        return cls(domains, centroids.T / temperature, np.zeros(len(domains)), threshold=threshold,
                   fingerprint=fingerprint)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = np.atleast_2d(vectors).astype(np.float32, copy=False) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def route(self, vector: np.ndarray) -> RouteDecision:
        probs = self.probabilities(vector)[0]
        top = int(probs.argmax())
        score = float(probs[top])
        return RouteDecision(self.domains[top] if score >= self.threshold else None, score, self.domains[top])

    def save(self, folder: Path) -> None:
        """Atomic: written to a temporary file, then renamed over the old one."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in ((WEIGHTS_FILE, self._write_weights), (INFO_FILE, self._write_info)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    write(handle)
                os.replace(tmp, folder / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def _write_weights(self, handle) -> None:
        np.savez(handle, weights=self.weights, bias=self.bias)

    def _write_info(self, handle) -> None:
        info = {"domains": self.domains, "threshold": self.threshold, "fingerprint": self.fingerprint}
        handle.write(json.dumps(info, indent=2).encode())

    @classmethod
    def load(cls, folder: Path) -> "DomainRouter":
        info = json.loads((folder / INFO_FILE).read_text())
        with np.load(folder / WEIGHTS_FILE) as arrays:
            return cls(info["domains"], arrays["weights"], arrays["bias"], threshold=float(info["threshold"]),
                       fingerprint=info.get("fingerprint", ""))
