"""The one place where rejections become HTTP responses."""

from __future__ import annotations

from starlette.responses import JSONResponse

from mockflock.errors import ProtocolError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def error_response(exc: ProtocolError) -> JSONResponse:
    """Render a protocol error as JSON with its status and headers.

    Error responses are never cached (RFC 6749 5.1 requires the same of token
    responses), so a proxy cannot replay a rejection.
    """
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **exc.headers})


def token_response(body: dict[str, object]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)
