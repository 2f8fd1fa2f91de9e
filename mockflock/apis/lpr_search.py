"""LPR Search API: plate searches on behalf of a user. Modeled entirely by mockflock.

Flock lists this API for user tokens but publishes none of its operations,
so `POST /reads/search` and everything below is mockflock's own design,
kept in contracts/openapi/lpr-search.yaml:

- `plate` is a full or partial plate, compared as the Plate Lookup API
  compares plates: without regard to case, spaces and hyphens, and with
  the letter O read as the digit 0. `*` stands for any run of characters,
  including none. Without `*` only the whole plate matches. At least two
  letters or digits are required.
- The time range includes both ends, and `endDate` must not be before
  `startDate`.
- Only reads on the networks that the user may access are searched. The
  roles layer puts those network ids on `request.state.allowed_networks`;
  without it, every network of the organization is accessible. Naming a
  network in `networkIds` that the user may not access, or that does not
  exist, is rejected with 403.
- Results are sorted newest first (read id breaking ties). `nextCursor`
  is an opaque token that contains the position after the last read returned,
  so reads added between pages do not shift later pages. A cursor works
  only with the same plate, time range and networkIds it came from;
  another body or a damaged cursor is rejected with 422.
- The reason and case number go on `request.state.search_reason` and
  `request.state.search_case_number` for the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock.apis.base import Call, handles
from mockflock.apis.plate_lookup import (
    MAX_PAGE_SIZE,
    ReadFilter,
    matching_reads,
    parse_time_range,
    plate_key,
    read_time,
    record_reason,
    render_read,
    sort_reads,
)
from mockflock.errors import ApiError

MIN_PLATE_CHARACTERS = 2


def plate_pattern(plate: str) -> re.Pattern[str]:
    """Compile a search plate, where `*` stands for any run of characters, to a regex."""
    characters = sum(1 for character in plate if character.isalnum())
    if characters < MIN_PLATE_CHARACTERS:
        raise ApiError(
            f"plate must have at least {MIN_PLATE_CHARACTERS} letters or digits besides '*'; received {plate[:80]!r}.",
            status=422,
            error="invalid_request",
            extra={"field": "plate", "rule": "minimum characters"},
        )
    parts = [re.escape(plate_key(part)) for part in plate.split("*")]
    return re.compile(".*".join(parts))


def searched_networks(call: Call, requested: list[str] | None) -> set[str]:
    """Return the network ids to search, or raise 403 for a network the user may not access."""
    allowed = getattr(call.request.state, "allowed_networks", None)
    if allowed is None:
        allowed = set(call.data.collection("networks"))
    allowed = set(allowed)
    if requested is None:
        return allowed
    denied = [network for network in requested if network not in allowed]
    if denied:
        raise ApiError(
            f"networkIds names {', '.join(repr(network[:80]) for network in denied)}, which the user may not "
            f"search. The user may search: {', '.join(sorted(allowed)) or 'no network'}.",
            status=403,
            error="access_denied",
            extra={"field": "networkIds"},
        )
    return set(requested)


def _fingerprint(body: dict[str, Any]) -> str:
    query = {
        "plate": plate_key(body["plate"]),
        "startDate": body["startDate"],
        "endDate": body["endDate"],
        "networkIds": sorted(body["networkIds"]) if "networkIds" in body else None,
    }
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def encode_cursor(body: dict[str, Any], last: dict[str, Any]) -> str:
    token = {"q": _fingerprint(body), "t": read_time(last), "id": last["id"]}
    return (
        base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def decode_cursor(body: dict[str, Any]) -> tuple[float, str] | None:
    """Return the (capture time, read id) after which the page starts, or None for the first page."""
    cursor = body.get("cursor")
    if cursor is None:
        return None
    try:
        token = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        position = (float(token["t"]), str(token["id"]))
        fingerprint = token["q"]
    except (ValueError, binascii.Error, KeyError, TypeError, RecursionError):
        raise ApiError(
            f"cursor {cursor[:80]!r} is not a nextCursor that this API returned. "
            "Send the nextCursor of the previous page unchanged, or leave cursor out for the first page.",
            status=422,
            error="invalid_request",
            extra={"field": "cursor", "rule": "nextCursor"},
        ) from None
    if fingerprint != _fingerprint(body):
        raise ApiError(
            "cursor belongs to a search with another plate, time range or networkIds. "
            "Repeat the body of the search that returned it, or leave cursor out to start a new search.",
            status=422,
            error="invalid_request",
            extra={"field": "cursor", "rule": "same search"},
        )
    return position


@handles("searchReads")
async def search_reads(call: Call) -> Response:
    body = await call.json()
    record_reason(call, body["reason"], body.get("caseNumber"))
    pattern = plate_pattern(body["plate"])
    start, end = parse_time_range(body)
    after = decode_cursor(body)
    # JSON Schema counts 10.0 as an integer, so the value may arrive as a float.
    page_size = int(body.get("pageSize", MAX_PAGE_SIZE))
    with call.data.lock:
        networks = searched_networks(call, body.get("networkIds"))
        filters: list[ReadFilter] = [
            lambda read: read.get("networkId") in networks,
            lambda read: pattern.fullmatch(plate_key(read["plate"])) is not None,
            lambda read: start <= read_time(read) <= end,
        ]
        reads = matching_reads(call.data, filters)
        sort_reads(reads, newest_first=True)
        remaining = (
            reads
            if after is None
            else [read for read in reads if (read_time(read), read["id"]) < after]
        )
        page = remaining[:page_size]
        result: dict[str, Any] = {
            "results": [render_read(call.data, read) for read in page],
            "totalItems": len(reads),
        }
        if len(remaining) > page_size:
            result["nextCursor"] = encode_cursor(body, page[-1])
    return JSONResponse(result)
