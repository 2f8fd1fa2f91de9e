"""Inbound Alerts API: alerts that an integration shows in Flock's web app.

What is modeled, where Flock publishes nothing:

- An alert names a tracked subject by the Flock `subjectId` that the
  Geolocation API returns, not by the subject's external id. An unknown
  `subjectId` is rejected with 400. An alert with a subject must send
  `location: null` and is stored with a null location. An alert without a
  subject must send a location, or it is rejected with 400.
- `vendorId` is the client id of the app whose token created the alert,
  and `vendorName` that app's name. Alert ids are UUIDs.
- An alert is active while its status is `open` and its TTL has not run
  out. The TTL counts from the last create or update; an expired alert
  keeps the status `open`. `GET /alerts` lists active alerts, newest
  created first, and adds closed and expired ones with
  `includeInactive=true`.
- `PUT` replaces the alert's content and restarts its TTL; the id, vendor,
  status and `createdAt` stay, so a closed alert stays closed. Optional
  fields the body leaves out are removed, and `attachments` and `metadata`
  become empty.
- Closing an alert that is already closed changes nothing and returns 204.
- `eventTime` must be an RFC 3339 date-time with a time zone offset, and an
  attachment's `url` an absolute URI; others are rejected with 400.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock.apis.base import Call, handles
from mockflock.apis.cad import parse_date_time
from mockflock.apis.geolocation import find_subject_by_subject_id, subjects
from mockflock.errors import ApiError
from mockflock.seed import format_timestamp
from mockflock.store import OrgData

logger = logging.getLogger(__name__)

COLLECTION = "inbound_alerts"
MAX_ECHO = 80
# RFC 3986: an absolute URI starts with a scheme and contains no whitespace or control characters.
ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f]+")
CONTENT_FIELDS = (
    "title",
    "description",
    "type",
    "subType",
    "priority",
    "eventTime",
    "subjectId",
    "ttl",
    "location",
)


@dataclass
class StoredAlert:
    """One alert: the body that the API returns, plus when its TTL started."""

    body: dict[str, Any]
    ttl_start: float

    def is_active(self, now: float) -> bool:
        ttl = self.body.get("ttl")
        # Compared as an age so that a very large ttl cannot overflow a float sum.
        return self.body["status"] == "open" and (ttl is None or now - self.ttl_start < ttl)


def alerts(data: OrgData) -> dict[str, StoredAlert]:
    """Return the organization's alerts by id, in creation order."""
    return data.collection(COLLECTION)


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _find(call: Call) -> StoredAlert:
    alert_id = call.path_param("alertId")
    stored = alerts(call.data).get(alert_id)
    if stored is None:
        raise ApiError(
            f"No alert has id {_echo(alert_id)}. GET /api/v3/alerts?includeInactive=true lists the organization's alerts.",
            status=404,
            error="not_found",
        )
    return stored


def _check_content(call: Call, request: dict[str, Any]) -> None:
    """Check what the contract cannot express: the subject, the location, dates and URLs."""
    parse_date_time(request["eventTime"], "eventTime")
    subject_id = request.get("subjectId")
    if subject_id is not None and find_subject_by_subject_id(call.data, subject_id) is None:
        hint = ""
        if subject_id in subjects(call.data):
            hint = (
                f" {_echo(subject_id)} is the externalId of a tracked subject; "
                "send that subject's subjectId instead."
            )
        raise ApiError(
            f"subjectId {_echo(subject_id)} names no tracked subject.{hint} "
            "PUT /api/v3/geo/subjects returns a subject's subjectId.",
            error="invalid_request",
            extra={"field": "subjectId"},
        )
    if subject_id is None and request["location"] is None:
        raise ApiError(
            "location is required when the alert has no subjectId; received null. "
            "Send the location's latitude and longitude, or a subjectId.",
            error="invalid_request",
            extra={"field": "location"},
        )
    for index, attachment in enumerate(request.get("attachments", [])):
        if not ABSOLUTE_URI.fullmatch(attachment["url"]):
            raise ApiError(
                f"attachments[{index}].url must be an absolute URI, such as https://example.com/report; "
                f"received {_echo(attachment['url'])}.",
                error="invalid_request",
                extra={"field": f"attachments[{index}].url"},
            )


def _content(request: dict[str, Any]) -> dict[str, Any]:
    content = {name: copy.deepcopy(request[name]) for name in CONTENT_FIELDS if name in request}
    content["attachments"] = copy.deepcopy(request.get("attachments", []))
    content["metadata"] = copy.deepcopy(request.get("metadata", {}))
    return content


def _vendor_name(call: Call) -> str:
    app = call.env.clients.get(call.principal.client_id)
    return app.name if app is not None else call.principal.client_id


@handles("listAlerts")
async def list_alerts(call: Call) -> JSONResponse:
    params = call.query()
    now = call.env.clock.now()
    include_inactive = params.get("includeInactive", "false") == "true"
    offset = params.get("offset", 0)
    limit = params.get("limit", 100)
    with call.data.lock:
        selected = [
            stored.body
            for stored in reversed(alerts(call.data).values())
            if include_inactive or stored.is_active(now)
        ]
        return JSONResponse({"results": copy.deepcopy(selected[offset : offset + limit])})


@handles("createAlert")
async def create_alert(call: Call) -> JSONResponse:
    request = await call.json()
    now = call.env.clock.now()
    with call.data.lock:
        _check_content(call, request)
        created = format_timestamp(now)
        body = {
            "id": str(uuid.uuid4()),
            "createdAt": created,
            "updatedAt": created,
            "vendorId": call.principal.client_id,
            "vendorName": _vendor_name(call),
            "status": "open",
            **_content(request),
        }
        alerts(call.data)[body["id"]] = StoredAlert(body=body, ttl_start=now)
        logger.debug(
            "Created alert %s in %s/%s", body["id"], call.data.environment, call.data.organization
        )
        return JSONResponse(copy.deepcopy(body))


@handles("getAlert")
async def get_alert(call: Call) -> JSONResponse:
    with call.data.lock:
        return JSONResponse(copy.deepcopy(_find(call).body))


@handles("updateAlert")
async def update_alert(call: Call) -> JSONResponse:
    request = await call.json()
    now = call.env.clock.now()
    with call.data.lock:
        stored = _find(call)
        _check_content(call, request)
        unchanged = {
            name: stored.body[name]
            for name in ("id", "createdAt", "vendorId", "vendorName", "status")
        }
        stored.body = {**unchanged, "updatedAt": format_timestamp(now), **_content(request)}
        stored.ttl_start = now
        return JSONResponse(copy.deepcopy(stored.body))


@handles("closeAlert")
async def close_alert(call: Call) -> Response:
    now = call.env.clock.now()
    with call.data.lock:
        stored = _find(call)
        if stored.body["status"] != "closed":
            stored.body["status"] = "closed"
            stored.body["updatedAt"] = format_timestamp(now)
    return Response(status_code=204)
