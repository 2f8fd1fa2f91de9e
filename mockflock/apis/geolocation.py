"""Geolocation API: tracked subjects on Flock's map and the subject types they belong to.

What is modeled, where Flock publishes nothing:

- A subject's type and subtype must be registered under `/geo/types`
  before `PUT /geo/subjects` accepts it; otherwise the request is rejected
  with 400. Subtypes compare exactly, case included.
- `PUT /geo/subjects` replaces the subject: optional fields the body leaves
  out return to their defaults (`altitude` 0, `additionalMetadata` {},
  `deviceLink` "", `deviceStatus` null, `isRecording` false, `nickname` "",
  `isLawEnforcement` false). `subjectId` (a UUID) and `createdAt` stay from
  the first time the external id was sent. `updatedAt` is the body's value,
  or the request time.
- A subject type's `ttlSeconds` (0 or absent: no TTL) sets a subject's
  `disableAt` to its `updatedAt` plus the TTL at each update, unless that
  falls after the year 9999. A subject whose `disableAt` has passed is
  inactive.
- `DELETE /geo/subjects/{externalSubjectId}` disables the subject instead of
  removing it: `disableAt` becomes the request time, unless the subject is
  already inactive. `GET` still returns it, lists show it only with
  `showInactive=true`, and the next `PUT` of the subject enables it again.
- Deleting a subject type removes every subject of that type and subtype;
  `GET` of such a subject then returns 404.
- `GET /geo/subjects` lists subjects in the order they were created, 100
  to a page; a page past the last one is empty. `since` keeps subjects
  whose `updatedAt` is at or after that Unix time.
- Subject types have a UUID `id`, which `DELETE /geo/types/{typeId}` takes.
  `ttlSeconds` is returned as 0 when it was not sent.
"""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

from mockflock.apis.base import Call, handles
from mockflock.apis.cad import parse_date_time
from mockflock.errors import ApiError
from mockflock.seed import format_timestamp
from mockflock.store import OrgData

logger = logging.getLogger(__name__)

SUBJECTS = "geo_subjects"
SUBJECT_TYPES = "geo_subject_types"
PAGE_SIZE = 100
LATEST_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
MAX_ECHO = 80
# Optional subject fields and the values they take when a body leaves them out.
SUBJECT_DEFAULTS: dict[str, Any] = {
    "altitude": 0.0,
    "additionalMetadata": {},
    "deviceLink": "",
    "deviceStatus": None,
    "isRecording": False,
    "nickname": "",
    "isLawEnforcement": False,
}


@dataclass
class StoredSubject:
    """One tracked subject: the body that the API returns, plus parsed times."""

    body: dict[str, Any]
    updated: float
    disable_at: float | None

    def is_active(self, now: float) -> bool:
        return self.disable_at is None or self.disable_at > now


def subjects(data: OrgData) -> dict[str, StoredSubject]:
    """Return the organization's tracked subjects by external id, in creation order."""
    return data.collection(SUBJECTS)


def subject_types(data: OrgData) -> dict[str, dict[str, Any]]:
    """Return the organization's subject types by id, in creation order."""
    return data.collection(SUBJECT_TYPES)


def find_subject_by_subject_id(data: OrgData, subject_id: str) -> dict[str, Any] | None:
    """Return the stored body of the subject whose Flock `subjectId` is `subject_id`, if any."""
    with data.lock:
        for stored in subjects(data).values():
            if stored.body["subjectId"] == subject_id:
                return copy.deepcopy(stored.body)
    return None


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _type_of(data: OrgData, kind: str, subtype: str) -> dict[str, Any] | None:
    for subject_type in subject_types(data).values():
        if subject_type["subjectType"] == kind and subject_type["subjectSubtype"] == subtype:
            return subject_type
    return None


def _find_subject(call: Call) -> StoredSubject:
    external_id = call.path_param("externalSubjectId")
    stored = subjects(call.data).get(external_id)
    if stored is None:
        raise ApiError(
            f"No tracked subject has externalSubjectId {_echo(external_id)}. "
            "Create it with PUT /api/v3/geo/subjects, or list subjects with GET /api/v3/geo/subjects.",
            status=404,
            error="not_found",
        )
    return stored


@handles("listSubjects")
async def list_subjects(call: Call) -> JSONResponse:
    params = call.query()
    now = call.env.clock.now()
    page = params.get("page", 1)
    with call.data.lock:
        selected = [
            stored.body for stored in subjects(call.data).values() if _matches(stored, params, now)
        ]
        page_items = selected[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return JSONResponse(copy.deepcopy(page_items))


def _matches(stored: StoredSubject, params: dict[str, Any], now: float) -> bool:
    if not params.get("showInactive", False) and not stored.is_active(now):
        return False
    if "since" in params and stored.updated < params["since"]:
        return False
    if "subjectType" in params and stored.body["subjectType"] != params["subjectType"]:
        return False
    if "subjectSubtype" in params and stored.body["subjectSubtype"] != params["subjectSubtype"]:
        return False
    return True


@handles("upsertSubject")
async def upsert_subject(call: Call) -> JSONResponse:
    body = await call.json()
    now = call.env.clock.now()
    updated = parse_date_time(body["updatedAt"], "updatedAt") if "updatedAt" in body else now
    with call.data.lock:
        subject_type = _type_of(call.data, body["subjectType"], body["subjectSubtype"])
        if subject_type is None:
            raise ApiError(
                f"subjectType {body['subjectType']!r} with subjectSubtype {_echo(body['subjectSubtype'])} "
                "is not a registered subject type. Register it with POST /api/v3/geo/types, "
                "or send a pair that GET /api/v3/geo/types lists.",
                error="invalid_request",
                extra={"field": "subjectSubtype"},
            )
        store = subjects(call.data)
        existing = store.get(body["externalId"])
        subject = {
            "subjectId": existing.body["subjectId"] if existing else str(uuid.uuid4()),
            "createdAt": existing.body["createdAt"] if existing else format_timestamp(now),
            **{name: copy.deepcopy(default) for name, default in SUBJECT_DEFAULTS.items()},
            **copy.deepcopy(body),
        }
        subject.setdefault("updatedAt", format_timestamp(now))
        disable_at = None
        ttl = subject_type.get("ttlSeconds") or 0
        # A TTL that ends after year 9999 cannot be written as a date-time, and never ends in practice.
        if 0 < ttl < LATEST_TIME - updated:
            disable_at = updated + ttl
            subject["disableAt"] = format_timestamp(disable_at)
        if existing is None:
            logger.debug(
                "Created tracked subject %r in %s/%s",
                body["externalId"],
                call.data.environment,
                call.data.organization,
            )
        store[body["externalId"]] = StoredSubject(
            body=subject, updated=updated, disable_at=disable_at
        )
        return JSONResponse(copy.deepcopy(subject))


@handles("getSubject")
async def get_subject(call: Call) -> JSONResponse:
    with call.data.lock:
        return JSONResponse(copy.deepcopy(_find_subject(call).body))


@handles("disableSubject")
async def disable_subject(call: Call) -> JSONResponse:
    now = call.env.clock.now()
    with call.data.lock:
        stored = _find_subject(call)
        if stored.is_active(now):
            stored.disable_at = now
            stored.body["disableAt"] = format_timestamp(now)
        return JSONResponse(copy.deepcopy(stored.body))


@handles("listSubjectTypes")
async def list_subject_types(call: Call) -> JSONResponse:
    with call.data.lock:
        return JSONResponse(copy.deepcopy(list(subject_types(call.data).values())))


@handles("createSubjectType")
async def create_subject_type(call: Call) -> JSONResponse:
    body = await call.json()
    with call.data.lock:
        existing = _type_of(call.data, body["subjectType"], body["subjectSubtype"])
        if existing is not None:
            raise ApiError(
                f"A subject type with subjectType {body['subjectType']!r} and subjectSubtype "
                f"{_echo(body['subjectSubtype'])} already exists, with id {existing['id']!r}. "
                "Use that type, or delete it with DELETE /api/v3/geo/types/{typeId} first.",
                status=409,
                error="conflict",
                extra={"id": existing["id"]},
            )
        subject_type = {"id": str(uuid.uuid4()), "ttlSeconds": 0, **copy.deepcopy(body)}
        subject_types(call.data)[subject_type["id"]] = subject_type
        return JSONResponse(copy.deepcopy(subject_type))


@handles("deleteSubjectType")
async def delete_subject_type(call: Call) -> JSONResponse:
    type_id = call.path_param("typeId")
    with call.data.lock:
        subject_type = subject_types(call.data).pop(type_id, None)
        if subject_type is None:
            raise ApiError(
                f"No subject type has id {_echo(type_id)}. GET /api/v3/geo/types lists the registered types and their ids.",
                status=404,
                error="not_found",
            )
        store = subjects(call.data)
        removed = [
            external_id
            for external_id, stored in store.items()
            if stored.body["subjectType"] == subject_type["subjectType"]
            and stored.body["subjectSubtype"] == subject_type["subjectSubtype"]
        ]
        for external_id in removed:
            del store[external_id]
        logger.debug("Deleted subject type %s and %d subjects of it", type_id, len(removed))
        return JSONResponse(subject_type)
