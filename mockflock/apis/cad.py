"""CAD API: computer-aided dispatch events, keyed by the caller's external id.

What is modeled, where Flock publishes nothing:

- `POST /cad/events` replaces the stored event with the body, so a field
  the body leaves out is cleared, and an event sent without `closedAt` is
  open again. Two fields are kept when the body leaves them out: the start
  time `timestamp`, and `narratives`, so that entries appended through
  `/narrative` survive a sync that does not carry them. Sending the same
  event twice stores one event and returns the same body both times.
- An event is open while it has no `closedAt` or its `closedAt` lies in
  the future. A `closedAt` earlier than the event's `timestamp` is
  accepted as sent.
- Stored events always have `timestamp` (the request time when none was
  sent), `narratives` (`[]`) and `additionalMetadata` (`{}`), and every
  nested object that takes `additionalMetadata` has it. An involved person
  sent without `externalId` gets one derived from the event's external id
  and the person's position in the list, so re-sending the event gives the
  same id.
- Lists are ordered by `timestamp`, newest first, and events with equal
  timestamps newest created first. `GET /cad/events` returns the events
  whose `timestamp` lies between `start` and `end`, both included. An
  explicit `end` earlier than `start` is rejected with 400, but a `start`
  after the default `end` (the request time) returns no events.
- `POST /cad/events/active` upserts the events in body order, so an
  external id listed twice ends as its last entry. It checks every event
  before it stores any, closes the open events it does not list at the
  request time, and returns each entry as stored after its own upsert, in
  body order.
- `POST /cad/events/externalIds` returns the known events in request order,
  each once. Unknown ids are skipped; 404 means none of them is known. An
  empty list returns no events.
- `POST .../close` without `timestamp` closes the event at the request time,
  but an event already closed keeps its `closedAt`.
- Date-time values must be RFC 3339 with a time zone offset; others are
  rejected with 400. They are stored and returned as sent.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from starlette.responses import JSONResponse

from mockflock.apis.base import Call, handles
from mockflock.errors import ApiError
from mockflock.seed import format_timestamp
from mockflock.store import OrgData

logger = logging.getLogger(__name__)

COLLECTION = "cad_events"
MAX_ECHO = 80
# Nested objects of an event that take additionalMetadata, by event field.
NESTED_OBJECTS = ("location", "callerInfo")
NESTED_LISTS = ("dispatchedUnits", "involvedVehicles", "involvedPersons")
# Namespace of the generated external ids of involved persons.
PERSON_ID_NAMESPACE = uuid.UUID("6f2b7c1e-3d4a-4b5c-9e8f-7a6b5c4d3e2f")

RFC3339_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)
RFC3339_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date_time(value: str, field: str) -> float:
    """Return seconds since the epoch of an RFC 3339 date-time, or raise 400 naming `field`."""
    if RFC3339_DATE_TIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value.upper()).timestamp()
        except (ValueError, OverflowError):
            pass
    raise ApiError(
        f"{field} must be an RFC 3339 date-time with a time zone offset, such as "
        f"2025-04-12T21:05:00Z; received {_echo(value)}.",
        error="invalid_request",
        extra={"field": field, "rule": "format"},
    )


def _check_date(value: str, field: str) -> None:
    if RFC3339_DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
            return
        except ValueError:
            pass
    raise ApiError(
        f"{field} must be an RFC 3339 full date, such as 2017-01-20; received {_echo(value)}.",
        error="invalid_request",
        extra={"field": field, "rule": "format"},
    )


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


@dataclass
class StoredEvent:
    """One event: the body that the API returns, plus its parsed start and close times."""

    body: dict[str, Any]
    started: float
    closed: float | None

    def is_open(self, now: float) -> bool:
        return self.closed is None or self.closed > now


def events(data: OrgData) -> dict[str, StoredEvent]:
    """Return the organization's events by external id, in creation order."""
    return data.collection(COLLECTION)


def _find(call: Call, external_id: str) -> StoredEvent:
    stored = events(call.data).get(external_id)
    if stored is None:
        raise ApiError(
            f"No CAD event has externalId {_echo(external_id)}. "
            "Create it with POST /api/v3/cad/events, or list events with GET /api/v3/cad/events.",
            status=404,
            error="not_found",
        )
    return stored


def _prepare(
    event: dict[str, Any], existing: StoredEvent | None, now: float, where: str
) -> StoredEvent:
    """Check a request's event and build what the store keeps for it.

    `where` prefixes field names in error messages, such as "events[2]".
    """
    body = copy.deepcopy(event)
    prefix = f"{where}." if where else ""
    if "timestamp" in body:
        started = parse_date_time(body["timestamp"], f"{prefix}timestamp")
    elif existing is not None:
        body["timestamp"] = existing.body["timestamp"]
        started = existing.started
    else:
        body["timestamp"] = format_timestamp(now)
        started = now
    closed = parse_date_time(body["closedAt"], f"{prefix}closedAt") if "closedAt" in body else None
    if "narratives" not in body:
        body["narratives"] = list(existing.body["narratives"]) if existing is not None else []
    body.setdefault("additionalMetadata", {})
    _prepare_nested(body, prefix)
    return StoredEvent(body=body, started=started, closed=closed)


def _prepare_nested(body: dict[str, Any], prefix: str) -> None:
    """Check nested dates, fill nested additionalMetadata and generate missing person ids."""
    for name in NESTED_OBJECTS:
        if name in body:
            body[name].setdefault("additionalMetadata", {})
    location = body.get("callerInfo", {}).get("location")
    if location is not None:
        location.setdefault("additionalMetadata", {})
    if "timestamp" in body.get("callerInfo", {}):
        parse_date_time(body["callerInfo"]["timestamp"], f"{prefix}callerInfo.timestamp")
    for name in NESTED_LISTS:
        for item in body.get(name, []):
            item.setdefault("additionalMetadata", {})
    for index, unit in enumerate(body.get("dispatchedUnits", [])):
        for field in ("dispatchTime", "arrivalTime"):
            if field in unit:
                parse_date_time(unit[field], f"{prefix}dispatchedUnits[{index}].{field}")
    for index, person in enumerate(body.get("involvedPersons", [])):
        if "dateOfBirth" in person:
            _check_date(person["dateOfBirth"], f"{prefix}involvedPersons[{index}].dateOfBirth")
        if "externalId" not in person:
            person["externalId"] = str(
                uuid.uuid5(PERSON_ID_NAMESPACE, f"{body['externalId']}/{index}")
            )


def _store(data: OrgData, stored: StoredEvent) -> None:
    external_id = stored.body["externalId"]
    store = events(data)
    if external_id not in store:
        logger.debug(
            "Created CAD event %r in %s/%s", external_id, data.environment, data.organization
        )
    store[external_id] = stored


def _newest_first(selected: list[StoredEvent], data: OrgData) -> list[StoredEvent]:
    order = {id(stored): index for index, stored in enumerate(events(data).values())}
    return sorted(selected, key=lambda stored: (stored.started, order[id(stored)]), reverse=True)


def _event_list(selected: list[StoredEvent]) -> JSONResponse:
    return JSONResponse({"events": [copy.deepcopy(stored.body) for stored in selected]})


@handles("listCadEvents")
async def list_cad_events(call: Call) -> JSONResponse:
    params = call.query()
    now = call.env.clock.now()
    start = parse_date_time(params["start"], "start")
    end = parse_date_time(params["end"], "end") if "end" in params else now
    # A start after the default end (now) finds nothing, but a range the caller reversed is a mistake.
    if "end" in params and start > end:
        raise ApiError(
            f"start {params['start']!r} is later than end {params['end']!r}; "
            "send a start that is not later than end.",
            error="invalid_request",
            extra={"field": "start"},
        )
    active_only = params.get("activeOnly", False)
    page = params.get("page", 1)
    page_size = params.get("pageSize", 25)
    with call.data.lock:
        selected = [
            stored
            for stored in events(call.data).values()
            if start <= stored.started <= end and (not active_only or stored.is_open(now))
        ]
        ordered = _newest_first(selected, call.data)
        return _event_list(ordered[(page - 1) * page_size : page * page_size])


@handles("upsertCadEvent")
async def upsert_cad_event(call: Call) -> JSONResponse:
    event = await call.json()
    now = call.env.clock.now()
    with call.data.lock:
        stored = _prepare(event, events(call.data).get(event["externalId"]), now, "")
        _store(call.data, stored)
        return JSONResponse(copy.deepcopy(stored.body))


@handles("listActiveCadEvents")
async def list_active_cad_events(call: Call) -> JSONResponse:
    now = call.env.clock.now()
    with call.data.lock:
        selected = [stored for stored in events(call.data).values() if stored.is_open(now)]
        return _event_list(_newest_first(selected, call.data))


@handles("upsertActiveCadEvent")
async def upsert_active_cad_events(call: Call) -> JSONResponse:
    body = await call.json()
    now = call.env.clock.now()
    with call.data.lock:
        store = events(call.data)
        prepared: list[StoredEvent] = []
        # The last prepared entry of each external id, which a repeated id updates.
        latest: dict[str, StoredEvent] = {}
        for index, event in enumerate(body["events"]):
            external_id = event["externalId"]
            existing = latest.get(external_id) or store.get(external_id)
            latest[external_id] = _prepare(event, existing, now, f"events[{index}]")
            prepared.append(latest[external_id])
        for stored in latest.values():
            _store(call.data, stored)
        for external_id, stored in store.items():
            if external_id not in latest and stored.is_open(now):
                stored.body["closedAt"] = format_timestamp(now)
                stored.closed = now
        return _event_list(prepared)


@handles("getCadEventsByExternalIds")
async def get_cad_events_by_external_ids(call: Call) -> JSONResponse:
    body = await call.json()
    requested = list(dict.fromkeys(body["externalIds"]))
    with call.data.lock:
        store = events(call.data)
        found = [store[external_id] for external_id in requested if external_id in store]
        if requested and not found:
            first_ids = ", ".join(_echo(external_id) for external_id in requested[:5])
            more = f" and {len(requested) - 5} more" if len(requested) > 5 else ""
            raise ApiError(
                f"No CAD event has any of the externalIds {first_ids}{more}. "
                "Create events with POST /api/v3/cad/events.",
                status=404,
                error="not_found",
            )
        return _event_list(found)


@handles("getCadEvent")
async def get_cad_event(call: Call) -> JSONResponse:
    with call.data.lock:
        return JSONResponse(copy.deepcopy(_find(call, call.path_param("externalId")).body))


@handles("openCadEvent")
async def open_cad_event(call: Call) -> JSONResponse:
    with call.data.lock:
        stored = _find(call, call.path_param("externalId"))
        stored.body.pop("closedAt", None)
        stored.closed = None
        return JSONResponse(copy.deepcopy(stored.body))


@handles("closeCadEvent")
async def close_cad_event(call: Call) -> JSONResponse:
    params = call.query()
    now = call.env.clock.now()
    with call.data.lock:
        stored = _find(call, call.path_param("externalId"))
        if "timestamp" in params:
            stored.closed = parse_date_time(params["timestamp"], "timestamp")
            stored.body["closedAt"] = params["timestamp"]
        elif stored.closed is None or stored.closed > now:
            stored.body["closedAt"] = format_timestamp(now)
            stored.closed = now
        return JSONResponse(copy.deepcopy(stored.body))


@handles("appendCadNarrative")
async def append_cad_narrative(call: Call) -> JSONResponse:
    body = await call.json()
    with call.data.lock:
        stored = _find(call, call.path_param("externalId"))
        stored.body["narratives"].extend(body["narratives"])
        return JSONResponse(copy.deepcopy(stored.body))
