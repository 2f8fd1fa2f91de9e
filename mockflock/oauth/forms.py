"""Reading OAuth endpoint request bodies safely.

RFC 6749 3.2 requires form-encoded POST bodies whose parameters appear at
most once. Real clients also send a charset parameter, JSON bodies or
UTF-8 values; each is accepted or rejected here with a 4xx that names the
problem, so that no body can reach the grant code half-parsed.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from mockflock.errors import InvalidRequest, PayloadTooLarge, ProtocolError
from mockflock.jsonbody import json_type, parse_json

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FIELDS = 100
ACCEPTED_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


async def read_body(request: Request, max_bytes: int, too_large: type[ProtocolError] = PayloadTooLarge) -> bytes:
    """Read the body, raising `too_large` (a 413) as soon as it grows past `max_bytes`.

    The body is also cached on the request, so a later `request.body()`
    (the audit trail reading a rejected search's reason) still gets it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(f"The request body has {declared} bytes; this endpoint accepts at most {max_bytes}.", status=413)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large(f"The request body is larger than {max_bytes} bytes, the most this endpoint accepts.", status=413)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body


async def read_parameters(request: Request, max_bytes: int, *, allow_json: bool = True) -> dict[str, str]:
    """Return the body's parameters as a dict of single string values."""
    media_type, charset = _content_type(request.headers.get("content-type", ""))
    if media_type not in (FORM, JSON) or (media_type == JSON and not allow_json):
        accepted = f"{FORM} or {JSON}" if allow_json else FORM
        raise InvalidRequest(
            f"Content-Type {media_type or '(none)'!r} is not accepted here; send the parameters as {accepted}."
        )
    if charset and charset not in ACCEPTED_CHARSETS:
        raise InvalidRequest(f"charset={charset!r} is not accepted; encode the body as UTF-8.")

    body = await read_body(request, max_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The body is not valid UTF-8 (byte {exc.start}); encode the parameters as UTF-8.") from None
    if media_type == JSON:
        return _parse_json(text)
    return _parse_form(text)


def _content_type(header: str) -> tuple[str, str | None]:
    media_type, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower(), charset


def _parse_form(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS, errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidRequest("A percent-encoded value in the form is not valid UTF-8; encode the parameters as UTF-8.") from None
    except ValueError as exc:
        if "Max number of fields" in str(exc):
            raise InvalidRequest(f"The form has more than {MAX_FIELDS} parameters; a token request needs fewer than ten.") from None
        raise InvalidRequest(f"The form body is malformed ({exc}); send name=value pairs joined by '&'.") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidRequest(f"Parameter {name!r} appears more than once; send each parameter once (RFC 6749 3.2).")
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(f"Parameter {name!r} contains a NUL character.")
        params[name] = value
    return params


def _parse_json(text: str) -> dict[str, str]:
    try:
        data = parse_json(text, object_pairs_hook=_reject_duplicates)
    except ValueError as exc:
        raise InvalidRequest(f"The JSON body is malformed ({exc}).") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"The JSON body must be an object of parameters, not {json_type(data)}.")
    for name, value in data.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"Parameter {name!r} must be a string, not {json_type(value)}.")
    return data


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"member {name!r} appears more than once")
        result[name] = value
    return result
