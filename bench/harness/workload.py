"""What the benches feed the systems they compare: synthetic vectors for the scale runs, and the
final prompt retro-vllm would build, for stock vLLM."""

from __future__ import annotations


def clustered(rng, centres, count: int):
    """`count` unit vectors scattered around `centres` (rows), as embeddings of texts cluster by
    topic; random centres in many dimensions are nearly orthogonal to each other and to any real
    query."""
    import numpy as np

    labels = rng.integers(0, len(centres), count)
    vectors = centres[labels] + 0.6 * rng.standard_normal((count, centres.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def final_messages(preamble: str, question: str, passages: list[dict]) -> list[dict]:
    """What retro-vllm sends vLLM: preamble, passages in canonical (id) order, the question."""
    ordered = sorted(passages, key=lambda p: p["id"])
    sources = "\n\n".join(f"[{n}] {p['title']}\n{p['text']}" for n, p in enumerate(ordered, 1))
    return [{"role": "system", "content": f"{preamble}\n\nSources:\n\n{sources}"}, {"role": "user", "content": question}]
