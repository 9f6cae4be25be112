"""vLLM's OpenAI-compatible API server: its handlers, request/response models and errors, as
the endpoint reaches them (API-server side only)."""

from __future__ import annotations

# Request/response models of the OpenAI-compatible server.
from vllm.entrypoints.openai.chat_completion.protocol import (  # noqa: F401
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from vllm.entrypoints.openai.completion.protocol import (  # noqa: F401
    CompletionRequest,
    CompletionResponse,
)
from vllm.entrypoints.serve.engine.protocol import ErrorResponse  # noqa: F401

# The decorator stock handlers use to cancel work when the client disconnects.
from vllm.entrypoints.serve.utils.api_utils import with_cancellation  # noqa: F401
from vllm.entrypoints.serve.utils.sse_keep_alive import with_sse_keep_alive  # noqa: F401
from vllm.exceptions import VLLMValidationError  # noqa: F401


def chat_handler(app_state):
    """vLLM's OpenAIServingChat for this app, or None when the model cannot chat."""
    return getattr(app_state, "openai_serving_chat", None)


def chat_renderer(app_state):
    """The renderer behind vLLM's chat handler (0.32: `OnlineRenderer`): `await
    render_chat(request)` gives `(conversation, engine_inputs)` exactly as the handler would
    render and tokenize the request, or an ErrorResponse. None when there is no chat handler."""
    return getattr(chat_handler(app_state), "online_renderer", None)


# The request field that hands vLLM a chat prompt's token ids, so that it neither renders nor
# tokenizes the messages again (0.32: `kv_transfer_params["prompt_token_ids"]`, made for
# disaggregated prefill; ignored when `echo` is set or a message has media).
PROMPT_TOKEN_IDS_FIELD = ("kv_transfer_params", "prompt_token_ids")


def completion_handler(app_state):
    """vLLM's OpenAIServingCompletion for this app, or None."""
    return getattr(app_state, "openai_serving_completion", None)


def models_handler(app_state):
    return app_state.openai_serving_models


def served_adapter_names(app_state) -> set[str]:
    """LoRA adapters vLLM has loaded under a name."""
    return set(getattr(app_state.openai_serving_models, "lora_requests", {}) or {})


def base_model_name(app_state) -> str:
    return app_state.openai_serving_models.base_model_paths[0].name


def keep_alive_interval(app_state) -> float:
    return float(getattr(getattr(app_state, "args", None), "sse_keep_alive_interval", 0) or 0)
