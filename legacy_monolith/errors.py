"""Every error a client sees is JSON: `{"error": "<stable_code>", "detail": "<text>"}`.

ApiError            raised by forms, identity checks and the core; carries its status
HTTPException       starlette's 404 (no route) and 405 (wrong method)
OperationalError    the database is unreachable or locked: 503
anything else       500, and the traceback goes to the server log
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status, headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, exc.detail, exc.headers)


async def _database_unavailable(_request: Request, _exc: Exception) -> Response:
    return error_response(503, "database_unavailable", "the database is not reachable")


async def _server_error(_request: Request, _exc: Exception) -> Response:
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    OperationalError: _database_unavailable,
    Exception: _server_error,
}
