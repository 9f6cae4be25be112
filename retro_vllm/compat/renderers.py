"""The one run-time patch of vLLM: the chat and completion handlers' render step.

Between rendering a request into engine inputs and handing them to the engine, a caller may
rewrite each engine input (prompt-tuning adapters put their soft prompt in front there; see
`retro_vllm.rag.prompt_adapters`). The wrapped methods are vLLM internals
(0.32: `OpenAIServingChat.render_chat_request`, `OpenAIServingCompletion.render_completion_request`);
they are named only here.
"""

from __future__ import annotations

from typing import Any, Callable

from retro_vllm.compat import serving

EngineInput = dict[str, Any]


def wrap_render_steps(app_state, rewrite: Callable[[EngineInput], EngineInput]) -> None:
    """Wrap both handlers' render step once per handler (idempotent): every engine input they
    produce goes through `rewrite`; an error response passes untouched."""
    for handler, method, chat in (
        (serving.chat_handler(app_state), "render_chat_request", True),
        (serving.completion_handler(app_state), "render_completion_request", False),
    ):
        if handler is None or getattr(handler, "_retro_render_wrapped", False):
            continue
        original = getattr(handler, method)

        async def render(request, _original=original, _chat=chat):
            result = await _original(request)
            if isinstance(result, serving.ErrorResponse):
                return result
            if _chat:
                conversation, inputs = result
                return conversation, [rewrite(i) for i in inputs]
            return [rewrite(i) for i in result]

        setattr(handler, method, render)
        handler._retro_render_wrapped = True
