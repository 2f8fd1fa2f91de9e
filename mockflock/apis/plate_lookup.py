"""LPR Plate Lookup API: the reads of one full plate, paged in two steps.

`POST /reads/lookup` matches the organization's reads (seeded, or created
by image uploads) and returns the first page; `GET /reads/lookup/page/{pageId}`
returns the others. The reason and case number of each lookup are put on
`request.state.search_reason` and `request.state.search_case_number` for
the audit trail. A page request carries those of its lookup.

What is modeled, where Flock publishes nothing:

- Plates match after upper-casing, removing spaces and hyphens, and
  reading the letter O as the digit 0, as hotlist entries are normalized:
  `abc-123` finds ABC123, and DEMO123 finds DEM0123. Nothing else is fuzzy.
- Only reads whose device is registered with the Device API are
  returned, because each result embeds its device. Reads stored without
  a confidence count as read with confidence 1.0.
- The time range includes both ends, and `endDate` must not be before
  `startDate`. Timestamps must be RFC 3339 date-times with an offset.
- Reads are sorted newest first unless `sort` is `asc`.
- `radius` is in miles. `area` must be a closed ring of [longitude,
  latitude] positions, and a read on its boundary may fall either way.
- The matching reads are fixed when the lookup runs: later reads do not
  join its pages. Page ids are random, kept on the server per organization,
  and expire 60 minutes after the lookup on the mock clock. An unknown or
  expired page id is rejected with 404. At most 1000 lookups are kept per
  organization; the oldest are dropped first.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock.apis.base import Call, handles
from mockflock.apis.devices import devices, distance_miles, now, render_device
from mockflock.errors import ApiError
from mockflock.openapi import load_openapi
from mockflock.seed import format_timestamp, parse_timestamp
from mockflock.store import OrgData

MAX_PAGE_SIZE = 50
LOOKUP_LIFETIME = 3600
MAX_LOOKUPS = 1000

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

ReadFilter = Callable[[dict[str, Any]], bool]


def parse_date_time(field: str, value: str, *, status: int = 422) -> float:
    """Return seconds since the epoch of an RFC 3339 date-time, or raise naming `field`."""
    text = value.strip()
    parsed: datetime | None = None
    if RFC3339.fullmatch(text):
        # datetime.fromisoformat takes at most 6 fractional digits.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("z", "Z").replace("t", "T"))
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
    if parsed is None:
        raise ApiError(
            f"{field} must be an RFC 3339 date-time with an offset, such as 2024-07-26T17:31:51Z; "
            f"received {value[:80]!r}.",
            status=status,
            error="invalid_request",
            extra={"field": field, "rule": "format"},
        )
    return parsed.timestamp()


def parse_time_range(body: dict[str, Any]) -> tuple[float, float]:
    """Return (start, end) of the body's startDate and endDate, or raise 422 when end is before start."""
    start = parse_date_time("startDate", body["startDate"])
    end = parse_date_time("endDate", body["endDate"])
    if end < start:
        raise ApiError(
            f"endDate {body['endDate']!r} is before startDate {body['startDate']!r}; swap them.",
            status=422,
            error="invalid_request",
            extra={"field": "endDate", "rule": "not before startDate"},
        )
    return start, end


def normalize_plate(plate: str) -> str:
    """Return `plate` upper-cased, without spaces or hyphens."""
    return re.sub(r"[\s-]", "", plate).upper()


def plate_key(plate: str) -> str:
    """Return the form of `plate` that lookups compare: normalized, with the letter O as the digit 0."""
    return normalize_plate(plate).replace("O", "0")


def read_time(read: dict[str, Any]) -> float:
    # Reads come from the seed, uploads or the admin API, which all store
    # ISO 8601 timestamps; one without an offset is UTC.
    return parse_timestamp(read["timestamp"])


@functools.cache
def known_states() -> frozenset[str]:
    """Return the state names of the contract's State enum."""
    return frozenset(load_openapi()["components"]["schemas"]["State"]["enum"])


def matching_reads(data: OrgData, filters: Iterable[ReadFilter]) -> list[dict[str, Any]]:
    """Return the organization's reads that pass every filter and whose device is known."""
    known = devices(data)
    checks = list(filters)
    return [
        read
        for read in data.collection("reads").values()
        if read["deviceId"] in known and all(check(read) for check in checks)
    ]


def sort_reads(reads: list[dict[str, Any]], *, newest_first: bool = True) -> None:
    """Sort reads by capture time, with the read id breaking ties."""
    reads.sort(key=lambda read: (read_time(read), read["id"]), reverse=newest_first)


def render_read(data: OrgData, read: dict[str, Any]) -> dict[str, Any]:
    """Return the LicensePlateRead body of a stored read."""
    body: dict[str, Any] = {
        "id": read["id"],
        "capturedAt": format_timestamp(read_time(read)),
        "device": render_device(devices(data)[read["deviceId"]]),
        "plate": {"plate": read["plate"], "confidence": _confidence(read, "plateConfidence")},
    }
    # A state outside the enum (possible in reads injected through the admin API) is left out.
    if read.get("state") in known_states():
        body["state"] = {"state": read["state"], "confidence": _confidence(read, "stateConfidence")}
    return body


def _confidence(read: dict[str, Any], name: str) -> float:
    value = read.get(name)
    return 1.0 if value is None else value


def record_reason(call: Call, reason: str, case_number: str | None) -> None:
    """Put a lookup's or search's reason and case number where the audit trail reads them.

    Raises 422 for a reason of only whitespace, which would leave the audit
    trail without a reason.
    """
    call.request.state.search_reason = reason
    call.request.state.search_case_number = case_number
    if not reason.strip():
        raise ApiError(
            f"reason must say why the reads are requested, for the audit trail; received {reason[:80]!r}.",
            status=422,
            error="invalid_request",
            extra={"field": "reason", "rule": "minLength"},
        )


def _time_filter(start: float, end: float) -> ReadFilter:
    return lambda read: start <= read_time(read) <= end


def _confidence_filter(attribute: str, minimum: float) -> ReadFilter:
    if attribute == "plate":
        return lambda read: _confidence(read, "plateConfidence") >= minimum
    return lambda read: bool(read.get("state")) and _confidence(read, "stateConfidence") >= minimum


def _radius_filter(circle: dict[str, Any]) -> ReadFilter:
    latitude, longitude, radius = circle["latitude"], circle["longitude"], circle["radius"]

    def within(read: dict[str, Any]) -> bool:
        if read.get("latitude") is None or read.get("longitude") is None:
            return False
        return distance_miles(latitude, longitude, read["latitude"], read["longitude"]) <= radius

    return within


def _area_filter(polygon: dict[str, Any]) -> ReadFilter:
    ring = polygon["coordinates"][0]
    for index, position in enumerate(ring):
        longitude, latitude = position
        if not (-180 <= longitude <= 180 and -90 <= latitude <= 90):
            raise ApiError(
                f"area.area.coordinates[0][{index}] must be [longitude, latitude] with longitude in "
                f"[-180, 180] and latitude in [-90, 90]; received {position!r}.",
                status=422,
                error="invalid_request",
                extra={"field": f"area.area.coordinates[0][{index}]", "rule": "range"},
            )
    if ring[0] != ring[-1]:
        raise ApiError(
            f"area.area.coordinates[0] must be a closed ring whose last position repeats the first; "
            f"received first {ring[0]!r} and last {ring[-1]!r}.",
            status=422,
            error="invalid_request",
            extra={"field": "area.area.coordinates[0]", "rule": "closed ring"},
        )

    def within(read: dict[str, Any]) -> bool:
        if read.get("latitude") is None or read.get("longitude") is None:
            return False
        return point_in_ring(read["longitude"], read["latitude"], ring)

    return within


def point_in_ring(x: float, y: float, ring: list[list[float]]) -> bool:
    """Return whether (x, y) lies inside the closed ring, by ray casting."""
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        if (y1 > y) != (y2 > y):
            crossing = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < crossing:
                inside = not inside
    return inside


def _lookup_filters(body: dict[str, Any]) -> list[ReadFilter]:
    plate = plate_key(body["plate"])
    if not plate:
        raise ApiError(
            f"plate must contain letters or digits; received {body['plate'][:80]!r}.",
            status=422,
            error="invalid_request",
            extra={"field": "plate", "rule": "minLength"},
        )
    start, end = parse_time_range(body)
    filters: list[ReadFilter] = [
        lambda read: plate_key(read["plate"]) == plate,
        _time_filter(start, end),
    ]
    if "state" in body:
        filters.append(lambda read: read.get("state") == body["state"])
    for confidence in body.get("minConfidences", []):
        filters.append(_confidence_filter(confidence["attribute"], confidence["minConfidence"]))
    if "radius" in body:
        filters.append(_radius_filter(body["radius"]["radius"]))
    if "area" in body:
        filters.append(_area_filter(body["area"]["area"]))
    return filters


def _lookups(data: OrgData) -> dict[str, dict[str, Any]]:
    return data.collection("lookups")


def _pages(data: OrgData) -> dict[str, tuple[str, int]]:
    return data.collection("lookup_pages")


def _store_lookup(
    call: Call, body: dict[str, Any], read_ids: list[str], page_size: int
) -> dict[str, Any]:
    lookups, pages = _lookups(call.data), _pages(call.data)
    created = now(call)
    _forget_expired(lookups, pages, created)
    while len(lookups) >= MAX_LOOKUPS:
        _forget(lookups, pages, next(iter(lookups)))
    lookup_id = secrets.token_hex(8)
    page_count = max(1, math.ceil(len(read_ids) / page_size))
    lookup = {
        "id": lookup_id,
        "readIds": read_ids,
        "pageSize": page_size,
        "pageIds": [secrets.token_urlsafe(18) for _ in range(page_count)],
        "reason": body["reason"],
        "caseNumber": body.get("caseNumber"),
        "expiresAt": created + LOOKUP_LIFETIME,
    }
    lookups[lookup_id] = lookup
    for index, page_id in enumerate(lookup["pageIds"]):
        pages[page_id] = (lookup_id, index)
    return lookup


def _forget_expired(
    lookups: dict[str, dict[str, Any]], pages: dict[str, tuple[str, int]], moment: float
) -> None:
    for lookup_id in [key for key, lookup in lookups.items() if lookup["expiresAt"] <= moment]:
        _forget(lookups, pages, lookup_id)


def _forget(
    lookups: dict[str, dict[str, Any]], pages: dict[str, tuple[str, int]], lookup_id: str
) -> None:
    lookup = lookups.pop(lookup_id)
    for page_id in lookup["pageIds"]:
        pages.pop(page_id, None)


def _render_page(data: OrgData, lookup: dict[str, Any], index: int) -> dict[str, Any]:
    size = lookup["pageSize"]
    reads = data.collection("reads")
    page_ids = lookup["readIds"][index * size : (index + 1) * size]
    body: dict[str, Any] = {
        "results": [render_read(data, reads[read_id]) for read_id in page_ids if read_id in reads],
        "totalItems": len(lookup["readIds"]),
    }
    if index + 1 < len(lookup["pageIds"]):
        body["nextPageId"] = lookup["pageIds"][index + 1]
    if index > 0:
        body["previousPageId"] = lookup["pageIds"][index - 1]
    return body


@handles("lookupReads")
async def lookup_reads(call: Call) -> Response:
    body = await call.json()
    record_reason(call, body["reason"], body.get("caseNumber"))
    filters = _lookup_filters(body)
    newest_first = not body.get("sort") or body["sort"][0]["order"] == "desc"
    # JSON Schema counts 10.0 as an integer, so the value may arrive as a float.
    page_size = int(body.get("limit", MAX_PAGE_SIZE))
    with call.data.lock:
        reads = matching_reads(call.data, filters)
        sort_reads(reads, newest_first=newest_first)
        lookup = _store_lookup(call, body, [read["id"] for read in reads], page_size)
        page = _render_page(call.data, lookup, 0)
    return JSONResponse(page)


@handles("getLookupPage")
async def get_lookup_page(call: Call) -> Response:
    page_id = call.path_param("pageId")
    with call.data.lock:
        lookups, pages = _lookups(call.data), _pages(call.data)
        _forget_expired(lookups, pages, now(call))
        location = pages.get(page_id)
        if location is None:
            raise ApiError(
                f"No lookup page has id {page_id[:80]!r}, or it expired: page ids last "
                f"{LOOKUP_LIFETIME // 60} minutes after their lookup. POST /reads/lookup again for new ones.",
                status=404,
                error="not_found",
            )
        lookup = lookups[location[0]]
        record_reason(call, lookup["reason"], lookup["caseNumber"])
        page = _render_page(call.data, lookup, location[1])
    return JSONResponse(page)
