"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse

from retro_vllm.rag.errors import RetroHTTPError

_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    503: "service_unavailable_error",
}


def error_response(
    status: int, message: str, *, code: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    error_type = _TYPES.get(status) or ("server_error" if status >= 500 else HTTPStatus(status).phrase)
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def response_for(error: RetroHTTPError, headers: dict[str, str] | None = None) -> JSONResponse:
    return error_response(error.status, error.message, code=error.code, param=error.param, headers=headers)
