"""The `retro` request object: the only way a client steers retrieval and routing."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from retro_vllm.decoding.args import MAX_BIAS
from retro_vllm.rag.errors import RetroHTTPError

FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool | list[StrictStr | StrictInt | StrictFloat | StrictBool]


class RetroControls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: StrictStr | None = Field(None, description="Search (and answer in) this domain only.")
    top_k: StrictInt | None = Field(None, description="Passages to put in the prompt.")
    retrieval: StrictBool = Field(True, description="False = stock vLLM behaviour.")
    filters: dict[StrictStr, FilterValue] | None = Field(None, description="Equality filters on passage metadata.")
    bias: StrictFloat | StrictInt | None = Field(None, description="Retrieval-aware decoding strength; 0 = off.")


def parse_controls(raw: Any) -> RetroControls:
    if raw is None:
        return RetroControls()
    if not isinstance(raw, dict):
        raise RetroHTTPError(400, "'retro' must be a JSON object", code="invalid_retro", param="retro")
    try:
        return RetroControls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("retro", *first["loc"]))
        raise RetroHTTPError(400, f"{where}: {first['msg']}", code="invalid_retro", param=where) from None


def check_controls(config, controls: RetroControls) -> None:
    """The controls against what this server is configured with: a known domain, bias and
    top_k in range. Raises RetroHTTPError 400."""
    if controls.domain is not None and config.domain(controls.domain) is None:
        known = ", ".join(config.domain_names) or "none configured"
        raise RetroHTTPError(
            400, f"unknown domain {controls.domain!r}; known domains: {known}", code="unknown_domain", param="retro.domain"
        )
    if controls.bias is not None and not 0 <= controls.bias <= MAX_BIAS:
        raise RetroHTTPError(
            400, f"retro.bias must be between 0 and {MAX_BIAS:g}, got {controls.bias}", code="invalid_bias", param="retro.bias"
        )
    limit = config.retrieval.max_top_k
    if controls.top_k is not None and not 1 <= controls.top_k <= limit:
        raise RetroHTTPError(
            400, f"retro.top_k must be between 1 and {limit}, got {controls.top_k}", code="invalid_top_k", param="retro.top_k"
        )
