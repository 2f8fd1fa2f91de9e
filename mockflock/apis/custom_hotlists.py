"""Custom Hotlist API: an organization's hotlists of license plates.

What is modeled, beyond the published operations:

- Plates are stored normalized: surrounding whitespace trimmed, letters
  upper-cased, and every letter O replaced by the digit 0. Two entries are
  duplicates when their normalized plates are equal.
- A hotlist holds at most 3000 entries. A create, replace or addBatch that
  would go beyond that is rejected with 413 and changes nothing.
- When a create, replace or addBatch names the same plate twice, the
  first entry is kept and the others are ignored. addBatch also skips
  entries whose plate the hotlist already has, and returns only the
  entries it added.
- An `expiry` must be an RFC 3339 date-time; anything else is rejected
  with 400.
- Replacing a hotlist (PUT) gives every entry a new id.
- Entries are paged in the order they were added. `nextPage` is an opaque
  cursor that stays valid when entries are added or deleted between pages.
- Hotlists created through the API have the audience `organization`.
  Seeding code may add `restricted` ones with `add_hotlist`; the audience
  is not part of the API's bodies, only of webhook alerts.
- An entry whose `expiry` has passed stays on the hotlist but no longer
  matches reads.
- A read matches an entry when their plates agree once spaces and
  hyphens are dropped as well, so the entry "HOOK-1" (stored "H00K-1")
  matches a read of "HOOK1" or "HOOK 1".
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock.apis.base import Call, handles
from mockflock.errors import ApiError
from mockflock.store import OrgData

logger = logging.getLogger(__name__)

COLLECTION = "hotlists"
MAX_ENTRIES = 3000
AUDIENCES = ("organization", "restricted")
ENTRY_FIELDS = ("plate", "reason", "caseNumber", "expiry", "state", "note")


# The characters with the Unicode White_Space property, which the contract's
# plate pattern excludes. Python's str.strip() also strips U+001C to U+001F,
# which other regex engines do not count as whitespace, so plates are trimmed
# of exactly this set.
WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def normalize_plate(plate: str) -> str:
    """Return `plate` as Flock stores it: trimmed, upper-case, letter O as digit 0."""
    return plate.strip(WHITESPACE).upper().replace("O", "0")


MATCH_DROPPED = re.compile(r"[\s-]")


def match_key(plate: str) -> str:
    """Return the form in which reads and entries are compared: normalized, without spaces or hyphens."""
    return MATCH_DROPPED.sub("", normalize_plate(plate))


# RFC 3339 date-time, the `date-time` format of the OpenAPI contract.
RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))")


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 date-time, or raise ValueError.

    A leap second (:60) is read as :59, and year 0000 as year 1, the
    nearest instants that Python's datetime can hold.
    """
    match = RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction = match.group(7) or ""
    offset = timezone.utc
    if match.group(9):
        sign = 1 if match.group(9) == "+" else -1
        offset = timezone(sign * timedelta(hours=int(match.group(10)), minutes=int(match.group(11))))
    microsecond = int((fraction[1:] + "000000")[:6]) if fraction else 0
    return datetime(max(year, 1), month, day, hour, minute, min(second, 59), microsecond, tzinfo=offset)


@dataclass
class Hotlist:
    """One custom hotlist with its entries in the order they were added."""

    id: str
    name: str
    organization_id: str
    audience: str = "organization"
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Position of each entry id in the add order, for cursors that survive deletions.
    positions: dict[str, int] = field(default_factory=dict)
    by_plate: dict[str, str] = field(default_factory=dict)
    # Entry ids by `match_key` of their plate; "AB-1" and "AB 1" are two entries with one key.
    by_key: dict[str, list[str]] = field(default_factory=dict)
    # The highest position given out so far: no cursor can point past it.
    last_position: int = 0
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    def add(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Store an already normalized entry under a new id and return it."""
        stored = {"id": str(uuid.uuid4()), **entry}
        self.entries[stored["id"]] = stored
        self.positions[stored["id"]] = self.last_position = next(self._counter)
        self.by_plate[stored["plate"]] = stored["id"]
        self.by_key.setdefault(match_key(stored["plate"]), []).append(stored["id"])
        return stored

    def remove(self, entry_id: str) -> bool:
        entry = self.entries.pop(entry_id, None)
        if entry is None:
            return False
        del self.positions[entry_id]
        self.by_plate.pop(entry["plate"], None)
        key = match_key(entry["plate"])
        same_key = [other for other in self.by_key.get(key, ()) if other != entry_id]
        if same_key:
            self.by_key[key] = same_key
        else:
            self.by_key.pop(key, None)
        return True

    def replace(self, name: str, entries: list[dict[str, Any]]) -> None:
        self.name = name
        self.entries.clear()
        self.positions.clear()
        self.by_plate.clear()
        self.by_key.clear()
        for entry in entries:
            self.add(entry)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "organizationId": self.organization_id,
            "entries": [dict(entry) for entry in self.entries.values()],
        }


def hotlists(data: OrgData) -> dict[str, Hotlist]:
    """Return the organization's hotlists by id."""
    return data.collection(COLLECTION)


def add_hotlist(
    data: OrgData, name: str, entries: list[dict[str, Any]], *, audience: str = "organization"
) -> Hotlist:
    """Create a hotlist from Python, for seeding; entries are normalized as the API does.

    Raises ApiError when an entry is invalid or there are more than 3000
    distinct plates.
    """
    if audience not in AUDIENCES:
        raise ValueError(f"audience={audience!r} must be one of {AUDIENCES}")
    prepared = _prepare_entries(entries, "entries")
    _check_limit(len(prepared))
    hotlist = Hotlist(id=str(uuid.uuid4()), name=name, organization_id=data.organization, audience=audience)
    for entry in prepared:
        hotlist.add(entry)
    with data.lock:
        hotlists(data)[hotlist.id] = hotlist
    return hotlist


def find_matches(data: OrgData, plate: str, state: str | None, at: datetime) -> list[tuple[Hotlist, dict[str, Any]]]:
    """Return the (hotlist, entry) pairs that a read of `plate` at time `at` matches.

    Plates are compared by `match_key`, so case, the letter O, spaces and
    hyphens do not matter. An entry with a state matches only reads of
    that state or of no known state, and an expired entry matches nothing.
    """
    key = match_key(plate)
    matches = []
    with data.lock:
        for hotlist in hotlists(data).values():
            for entry_id in hotlist.by_key.get(key, ()):
                entry = hotlist.entries[entry_id]
                if state and entry.get("state") and entry["state"] != state.lower():
                    continue
                if _expired(entry.get("expiry"), at):
                    continue
                matches.append((hotlist, dict(entry)))
    return matches


def _expired(expiry: str | None, at: datetime) -> bool:
    if not expiry:
        return False
    try:
        return parse_timestamp(expiry) <= at
    except (ValueError, OverflowError):
        # Expiries were validated when stored, so only an out-of-range comparison gets here.
        # Such an entry is treated as never expiring.
        return False


def _prepare_entries(entries: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Normalize plates, drop repeats of a plate (the first one wins) and check expiry dates."""
    prepared = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        plate = normalize_plate(entry["plate"])
        if not plate:
            raise ApiError(
                f"{where}[{index}].plate is blank once whitespace is trimmed; received {entry['plate']!r}. "
                "Send the plate's characters.",
                extra={"field": f"{where}[{index}].plate"},
            )
        if plate in seen:
            continue
        seen.add(plate)
        if "expiry" in entry:
            try:
                parse_timestamp(entry["expiry"])
            except ValueError:
                raise ApiError(
                    f"{where}[{index}].expiry must be an RFC 3339 date-time such as 2030-01-31T00:00:00Z; "
                    f"received {entry['expiry'][:80]!r}.",
                    extra={"field": f"{where}[{index}].expiry"},
                ) from None
        stored = {name: entry[name] for name in ENTRY_FIELDS if name in entry}
        stored["plate"] = plate
        prepared.append(stored)
    return prepared


def _check_limit(total: int) -> None:
    if total > MAX_ENTRIES:
        raise ApiError(
            f"The hotlist would hold {total} entries, more than the limit of {MAX_ENTRIES} per hotlist. "
            "Split the plates across hotlists or delete entries first.",
            status=413,
            error="payload_too_large",
            extra={"limit": MAX_ENTRIES},
        )


def _find(call: Call) -> Hotlist:
    hotlist_id = call.path_param("hotlistId")
    hotlist = hotlists(call.data).get(hotlist_id)
    if hotlist is None:
        raise ApiError(
            f"No hotlist with id {hotlist_id[:80]!r} exists in this organization; "
            "GET /hotlists lists the ids.",
            status=404,
            error="not_found",
        )
    return hotlist


def _encode_cursor(hotlist_id: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{hotlist_id}:{position}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, hotlist: Hotlist) -> int:
    """Return the position a `nextPage` cursor of `hotlist` points after, or raise ApiError.

    Only a cursor exactly as `_encode_cursor` wrote it, for a position the
    hotlist has given out, is accepted: an edited cursor is an error, not
    an empty or restarted page.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        owner, _, digits = text.rpartition(":")
        position = int(digits) if digits.isascii() and digits.isdigit() else 0
        if owner == hotlist.id and 1 <= position <= hotlist.last_position and _encode_cursor(owner, position) == cursor:
            return position
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(
        f"Query parameter 'cursor' is not a page cursor of hotlist {hotlist.id}; received {cursor[:80]!r}. "
        "Pass the nextPage value of the previous page unchanged, or omit cursor for the first page.",
        extra={"field": "cursor"},
    )


@handles("listHotlists")
async def list_hotlists(call: Call) -> Response:
    with call.data.lock:
        body = [hotlist.summary() for hotlist in hotlists(call.data).values()]
    return JSONResponse(body)


@handles("createHotlist")
async def create_hotlist(call: Call) -> Response:
    body = await call.json()
    entries = _prepare_entries(body["entries"], "entries")
    _check_limit(len(entries))
    hotlist = Hotlist(id=str(uuid.uuid4()), name=body["name"], organization_id=call.data.organization)
    for entry in entries:
        hotlist.add(entry)
    with call.data.lock:
        hotlists(call.data)[hotlist.id] = hotlist
    logger.info("Created hotlist %s with %d entries in %s/%s", hotlist.id, len(entries), call.env.name, call.data.organization)
    return JSONResponse({"id": hotlist.id}, status_code=201)


@handles("getHotlist")
async def get_hotlist(call: Call) -> Response:
    with call.data.lock:
        body = _find(call).to_json()
    return JSONResponse(body)


@handles("updateHotlist")
async def update_hotlist(call: Call) -> Response:
    body = await call.json()
    with call.data.lock:
        hotlist = _find(call)
        entries = _prepare_entries(body["entries"], "entries")
        _check_limit(len(entries))
        hotlist.replace(body["name"], entries)
    return Response(status_code=204)


@handles("deleteHotlist")
async def delete_hotlist(call: Call) -> Response:
    with call.data.lock:
        hotlist = _find(call)
        del hotlists(call.data)[hotlist.id]
    return Response(status_code=204)


@handles("listHotlistEntries")
async def list_hotlist_entries(call: Call) -> Response:
    query = call.query()
    limit = query.get("limit", MAX_ENTRIES)
    with call.data.lock:
        hotlist = _find(call)
        after = _decode_cursor(query["cursor"], hotlist) if "cursor" in query else 0
        remaining = [entry for entry_id, entry in hotlist.entries.items() if hotlist.positions[entry_id] > after]
        page = remaining[:limit]
        next_page = None
        if len(remaining) > limit:
            next_page = _encode_cursor(hotlist.id, hotlist.positions[page[-1]["id"]])
        body = {
            "entries": [dict(entry) for entry in page],
            "totalResults": len(hotlist.entries),
            "nextPage": next_page,
        }
    return JSONResponse(body)


@handles("addHotlistEntries")
async def add_hotlist_entries(call: Call) -> Response:
    body = await call.json()
    with call.data.lock:
        hotlist = _find(call)
        entries = _prepare_entries(body["entries"], "entries")
        new = [entry for entry in entries if entry["plate"] not in hotlist.by_plate]
        _check_limit(len(hotlist.entries) + len(new))
        added = [hotlist.add(entry) for entry in new]
    return JSONResponse({"entries": [dict(entry) for entry in added]})


@handles("deleteHotlistEntries")
async def delete_hotlist_entries(call: Call) -> Response:
    body = await call.json()
    with call.data.lock:
        hotlist = _find(call)
        for entry_id in body["ids"]:
            hotlist.remove(entry_id)
    return Response(status_code=200)
