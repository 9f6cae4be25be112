"""Query embeddings on ONNX Runtime for the API server: the same vectors as sentence-transformers
(checked at export), without importing sentence-transformers or torch model code there.

Why: on 2 cores the API server's torch embedding of one short query took 13.5 ms of a request's
added TTFT; ONNX Runtime on one non-spinning thread takes 2-3.5 ms on an idle machine (7-8 ms
inside the busy server, against 13.5). Memory is not the reason: vLLM's API server already
imports torch and transformers.

The token-embedding table (for all-MiniLM-L6-v2, 47 of the graph's 90 MB of weights) is taken out
of the graph at export and kept in a `.npy` file beside it; a query reads only its own tokens' rows
(`os.pread`), so the table stays in the shared page cache instead of the server's own memory
(session 141 -> 98 MB of anonymous memory, peak 196 -> 141 MB; embedding time unchanged). The
graph takes the looked-up rows as an input: the same values the in-graph lookup gave, bit for bit.

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
TABLE_FILE = "word_embeddings.npy"
TABLE_INPUT = "word_embeddings"
# Part of the cache key: an export made by an older layout is made again, not misread.
EXPORT_LAYOUT = 2
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
    digest = hashlib.sha256(f"{folder.resolve()}:{EXPORT_LAYOUT}".encode())
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
                "source": str(source), "table": detach_token_table(staging)}
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


def detach_token_table(folder: Path) -> str | None:
    """Move the graph's token-embedding lookup (a Gather of a weight matrix by `input_ids`) out of
    `folder/model.onnx` into `folder/word_embeddings.npy`; the graph then takes the gathered rows
    as the input `word_embeddings`. Returns the table's file name, or None (graph unchanged) when
    the graph has no such lookup."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(folder / MODEL_FILE))
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in weights and n.input[1] == "input_ids"]
    if len(lookups) != 1:
        return None
    (lookup,) = lookups
    table = numpy_helper.to_array(weights[lookup.input[0]]).astype(np.float32)
    if table.ndim != 2 or any(a.i != 0 for a in lookup.attribute if a.name == "axis"):
        return None
    np.save(folder / TABLE_FILE, np.ascontiguousarray(table))
    graph.node.remove(lookup)
    if not any(lookup.input[0] in n.input for n in graph.node):
        graph.initializer.remove(weights[lookup.input[0]])
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == lookup.output[0]:
                node.input[i] = TABLE_INPUT
    graph.input.append(helper.make_tensor_value_info(TABLE_INPUT, TensorProto.FLOAT,
                                                     ["batch", "tokens", table.shape[1]]))
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / MODEL_FILE))
    return TABLE_FILE


class _TokenTable:
    """Rows of a float32 `.npy` matrix read on demand with `os.pread`: the file stays in the page
    cache (shared, reclaimable) rather than in this process's memory."""

    def __init__(self, path: Path):
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-ordered float32 matrix, got {dtype} {shape}")
        self.rows, self.width = shape
        self.row_bytes = self.width * 4
        if path.stat().st_size < self.offset + self.rows * self.row_bytes:
            raise ValueError(f"{path} is truncated")
        self._file = path.open("rb")  # os.pread leaves the file offset alone: safe across threads

    def __del__(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """`table[ids]` for an integer array of any shape."""
        unique, where = np.unique(ids, return_inverse=True)
        if unique.size and (unique[0] < 0 or unique[-1] >= self.rows):
            raise ValueError(f"token id out of range 0..{self.rows - 1}")
        rows = np.empty((unique.size, self.width), np.float32)
        descriptor = self._file.fileno()
        for n, token in enumerate(unique.tolist()):
            rows[n] = np.frombuffer(os.pread(descriptor, self.row_bytes, self.offset + token * self.row_bytes),
                                    np.float32)
        return rows[where.reshape(ids.shape)]


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
        self.table = _TokenTable(folder / info["table"]) if info.get("table") else None

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
        feeds = {name: arrays[name] for name in self.inputs}
        if self.table is not None:
            feeds[TABLE_INPUT] = self.table.gather(arrays["input_ids"])
        (vectors,) = self.session.run(None, feeds)
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
    try:
        return OnnxEmbedder(embedder.path, folder, batch_size=config.embedder.batch_size,
                            threads=config.embedder.serving_threads)
    except (OSError, ValueError) as exc:  # a damaged export folder (a file missing or cut short)
        if config.embedder.runtime == "onnx":
            raise RuntimeError(f"embedder.runtime is onnx but the export in {folder} is unusable: {exc}") from exc
        logger.warning("retro: the ONNX export in %s is unusable (%s); query embedding stays on "
                       "sentence-transformers", folder, exc)
        return embedder


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] in {"-h", "--help"}:
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    target = Path(sys.argv[2])
    target.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(export(Path(sys.argv[1]), target)))
