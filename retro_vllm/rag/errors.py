"""The one error a pipeline step raises: an HTTP status and OpenAI's error fields, so the server
answers it in OpenAI's shape (`retro_vllm.server.errors`) and a step never builds a response."""

from __future__ import annotations


class RetroHTTPError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
