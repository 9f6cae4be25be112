"""Query embeddings on ONNX Runtime for the API server: the same vectors as sentence-transformers
(checked at export), without importing sentence-transformers or torch model code there.

Why: on 2 cores the API server's torch embedding of one short query took 13.5 ms of a request's
added TTFT; ONNX Runtime on one non-spinning thread takes 2-3.5 ms on an idle machine (7-8 ms
inside the busy server, against 13.5). Memory is not the reason: vLLM's API server already
imports torch and transformers, and the ONNX session holds about 50 MB more than the torch model.

The graph is exported once per embedder folder (the folder's whole sentence-transformers
pipeline: transformer, pooling, any dense/normalize modules), in a child process so the
server never loads the torch model, and cached under `<home>/embedders/`. The export is kept
only if its vectors match sentence-transformers' on probe texts; otherwise the server embeds
with sentence-transformers as before.

    python -m retro_vllm.retrieval.onnx_embedder EMBEDDER_FOLDER OUTPUT_FOLDER
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from retro_vllm.fsutil import folder_lock
from retro_vllm.retrieval.embedder import Embedder

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
INFO_FILE = "export.json"
# Vectors are unit length; 1e-4 is far below what changes a ranking and far above float noise.
TOLERANCE = 1e-4
PROBES = [
    "Which port does HTTPS use by default?",
    "a",
    "Ünïcödé, punctuation... and numbers 1234567890!",
    "A longer passage that repeats itself. " * 60,  # past the model's max_seq_length: truncation
]


def folder_fingerprint(folder: Path) -> str:
    """Changes when any file of the embedder folder changes (name, size or mtime)."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export(source: Path, dest: Path) -> dict:
    """Export `source`'s sentence-transformers pipeline to `dest/model.onnx` and check it.
    Needs torch, sentence-transformers and the `onnx` package (run in a child process)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu").eval()
    tokenizer = model.tokenizer
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class Pipeline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            vectors = self.model(dict(zip(names, inputs)))["sentence_embedding"]
            return torch.nn.functional.normalize(vectors, dim=-1)

    sample = tokenizer(["export sample", "a second, longer export sample"], padding=True, return_tensors="pt")
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        with torch.inference_mode():
            torch.onnx.export(
                Pipeline(), tuple(sample[n] for n in names), str(staging / MODEL_FILE),
                input_names=names, output_names=["embedding"], opset_version=17, dynamo=False,
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "embedding": {0: "batch"}},
            )
        expected = model.encode(PROBES, normalize_embeddings=True, convert_to_numpy=True)
        info = {"inputs": names, "max_tokens": int(model.max_seq_length), "dimension": int(expected.shape[1]),
                "source": str(source)}
        got = _Session(staging, info, threads=1).embed(PROBES)
        info["max_abs_diff"] = float(np.abs(got - expected).max())
        if info["max_abs_diff"] > TOLERANCE:
            raise RuntimeError(f"ONNX vectors differ from sentence-transformers by {info['max_abs_diff']:.2e}")
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


class _Session:
    """Tokenizer (the folder's tokenizer.json, as sentence-transformers' fast tokenizer uses it)
    plus the ONNX graph."""

    def __init__(self, folder: Path, info: dict, *, threads: int, tokenizer_folder: Path | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A spinning pool steals the cores the engine is generating on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.inputs = info["inputs"]
        source = Path(tokenizer_folder or info["source"])
        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        self.tokenizer.enable_truncation(info["max_tokens"])
        self.tokenizer.no_padding()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        # Right-padding with attention_mask 0: the pooling ignores padded positions.
        arrays = {
            "input_ids": np.zeros((len(encodings), width), np.int64),
            "attention_mask": np.zeros((len(encodings), width), np.int64),
            "token_type_ids": np.zeros((len(encodings), width), np.int64),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            arrays["input_ids"][row, :n] = encoding.ids
            arrays["attention_mask"][row, :n] = encoding.attention_mask
            arrays["token_type_ids"][row, :n] = encoding.type_ids
        (vectors,) = self.session.run(None, {name: arrays[name] for name in self.inputs})
        return np.ascontiguousarray(vectors, dtype=np.float32)


def ensure_export(source: Path, cache_root: Path, *, timeout_s: float = 600) -> Path | None:
    """The checked export of `source` under `cache_root`, exported now if missing; None (with a
    warning) when it cannot be made: no onnxruntime/onnx, no tokenizer.json, or vectors that
    differ."""
    folder = cache_root / folder_fingerprint(source)
    if (folder / INFO_FILE).is_file():
        return folder
    if not (source / "tokenizer.json").is_file():
        logger.warning("retro: %s has no tokenizer.json; query embedding stays on sentence-transformers", source)
        return None
    with folder_lock(cache_root):
        if (folder / INFO_FILE).is_file():  # another process exported it meanwhile
            return folder
        for stale in cache_root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        logger.info("retro: exporting the embedder to ONNX for query embedding (once)")
        done = subprocess.run([sys.executable, "-m", __name__, str(source), str(folder)], capture_output=True,
                              text=True, timeout=timeout_s, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        logger.warning("retro: ONNX export of %s failed (%s); query embedding stays on sentence-transformers",
                       source, reason)
        return None
    return folder


class OnnxEmbedder(Embedder):
    """An `Embedder` whose vectors come from ONNX Runtime. Chunking (`tokenizer`, `max_tokens`)
    still loads sentence-transformers, lazily: only ingestion needs it."""

    def __init__(self, path: Path | None, export_folder: Path, *, batch_size: int = 64, threads: int = 1):
        super().__init__(path, batch_size=batch_size)
        self.export_folder = export_folder
        self.info = json.loads((export_folder / INFO_FILE).read_text())
        self._session = _Session(export_folder, self.info, threads=threads, tokenizer_folder=self.path)

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [self._session.embed(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.vstack(parts)


def serving_embedder(config) -> Embedder:
    """The API server's embedder: ONNX Runtime when `embedder.runtime` allows and the export
    checks out, else sentence-transformers."""
    embedder = Embedder(config.embedder.path, batch_size=config.embedder.batch_size)
    if config.embedder.runtime == "torch":
        return embedder
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if config.embedder.runtime == "onnx":
            raise
        logger.warning("retro: onnxruntime is not installed; query embedding stays on sentence-transformers")
        return embedder
    folder = ensure_export(embedder.path, config.home_dir / "embedders")
    if folder is None:
        if config.embedder.runtime == "onnx":
            raise RuntimeError(f"embedder.runtime is onnx but {embedder.path} could not be exported (see the log)")
        return embedder
    return OnnxEmbedder(embedder.path, folder, batch_size=config.embedder.batch_size,
                        threads=config.embedder.serving_threads)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] in {"-h", "--help"}:
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    target = Path(sys.argv[2])
    target.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(export(Path(sys.argv[1]), target)))
