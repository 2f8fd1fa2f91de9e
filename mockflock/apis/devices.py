"""Device API: the organization's devices, which the seed data fills per organization.

What is modeled, where Flock publishes nothing:

- The `radius` of the area filter of `GET /devices` is in miles, the unit
  of the plate lookup's radius filter. A device matches when its great
  circle distance from the center is at most the radius. Devices located
  only by address never match an area filter.
- `page` counts from 1 and `pageSize` defaults to 25 (at most 100).
  Devices are listed by creation time, then id. A page past the last one
  returns no results, with the totals.
- A device registered through the API has the type `external` and joins
  the organization's default network (seed.yaml names it).
- `PATCH` replaces each top-level field it is given (name, location,
  metadata) as a whole; it does not merge inside `location` or `metadata`.
- Decommissioning keeps the device, which list and get still return, and
  the Vehicle Detections Ingest API rejects its uploads. Decommissioning it
  again changes nothing and returns 204 too.
"""

from __future__ import annotations

import copy
import logging
import math
import uuid
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock.apis.base import Call, handles
from mockflock.errors import ApiError
from mockflock.seed import default_network_id, format_timestamp
from mockflock.store import OrgData

logger = logging.getLogger(__name__)

# The fields of Flock's Device schema; the stored record adds networkId,
# status and decommissionedAt for the mock's own use.
DEVICE_FIELDS = ("id", "type", "name", "location", "network", "metadata", "createdAt", "modifiedAt")
AREA_PARAMETERS = ("latitude", "longitude", "radius")
DEFAULT_PAGE_SIZE = 25
EARTH_RADIUS_MILES = 3958.8


def now(call: Call) -> float:
    """Return the mock clock's time, which tests can advance."""
    return call.request.app.state.mock.clock.now()


def devices(data: OrgData) -> dict[str, dict[str, Any]]:
    return data.collection("devices")


def find_device(call: Call, device_id: str) -> dict[str, Any]:
    """Return the stored device record, or raise 404 naming the id."""
    device = devices(call.data).get(device_id)
    if device is None:
        raise ApiError(
            f"No device has id {device_id[:80]!r} in organization {call.data.organization!r}. "
            "GET /devices lists the organization's devices.",
            status=404,
            error="not_found",
        )
    return device


def render_device(device: dict[str, Any]) -> dict[str, Any]:
    """Return the Device body of a stored device record."""
    return {name: copy.deepcopy(device[name]) for name in DEVICE_FIELDS}


def distance_miles(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great circle distance between two points, by the haversine formula."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(a)))


def _area_filter(params: dict[str, Any]) -> tuple[float, float, float] | None:
    given = [name for name in AREA_PARAMETERS if name in params]
    if not given:
        return None
    missing = [name for name in AREA_PARAMETERS if name not in params]
    if missing:
        raise ApiError(
            f"The area filter needs latitude, longitude and radius together; received {', '.join(given)} "
            f"without {', '.join(missing)}. Send all three, or none to list every device.",
            status=422,
            error="invalid_request",
            extra={"field": missing[0], "rule": "dependentRequired"},
        )
    return params["latitude"], params["longitude"], params["radius"]


def _within(device: dict[str, Any], area: tuple[float, float, float]) -> bool:
    location = device["location"]
    if "latitude" not in location or "longitude" not in location:
        return False
    latitude, longitude, radius = area
    return (
        distance_miles(latitude, longitude, location["latitude"], location["longitude"]) <= radius
    )


@handles("listDevices")
async def list_devices(call: Call) -> Response:
    params = call.query()
    area = _area_filter(params)
    page = params.get("page", 1)
    page_size = params.get("pageSize", DEFAULT_PAGE_SIZE)
    with call.data.lock:
        matching = [
            device
            for device in devices(call.data).values()
            if area is None or _within(device, area)
        ]
        matching.sort(key=lambda device: (device["createdAt"], device["id"]))
        start = (page - 1) * page_size
        results = [render_device(device) for device in matching[start : start + page_size]]
    return JSONResponse(
        {
            "results": results,
            "totalItems": len(matching),
            "totalPages": math.ceil(len(matching) / page_size),
        }
    )


@handles("createDevice")
async def create_device(call: Call) -> Response:
    body = await call.json()
    timestamp = format_timestamp(now(call))
    with call.data.lock:
        network = _default_network(call.data)
        device = {
            "id": str(uuid.uuid4()),
            "type": "external",
            "name": body["name"],
            "location": copy.deepcopy(body["location"]),
            "network": dict(network),
            "metadata": copy.deepcopy(body.get("metadata", {})),
            "createdAt": timestamp,
            "modifiedAt": timestamp,
            "networkId": network["id"],
            "status": "active",
            "decommissionedAt": None,
        }
        devices(call.data)[device["id"]] = device
    logger.info("Device %s created in %s/%s", device["id"], call.env.name, call.data.organization)
    return JSONResponse(render_device(device), status_code=201)


def _default_network(data: OrgData) -> dict[str, Any]:
    networks = data.collection("networks")
    network = networks.get(default_network_id(data))
    if network is None:
        if not networks:
            raise ApiError(
                f"Organization {data.organization!r} has no device network for new devices.",
                status=422,
                error="invalid_request",
            )
        network = next(iter(networks.values()))
    return network


@handles("getDevice")
async def get_device(call: Call) -> Response:
    with call.data.lock:
        body = render_device(find_device(call, call.path_param("deviceId")))
    return JSONResponse(body)


@handles("updateDevice")
async def update_device(call: Call) -> Response:
    body = await call.json()
    with call.data.lock:
        device = find_device(call, call.path_param("deviceId"))
        for name in ("name", "location", "metadata"):
            if name in body:
                device[name] = copy.deepcopy(body[name])
        device["modifiedAt"] = format_timestamp(now(call))
    return Response(status_code=204)


@handles("decommissionDevice")
async def decommission_device(call: Call) -> Response:
    with call.data.lock:
        device = find_device(call, call.path_param("deviceId"))
        if device["status"] != "decommissioned":
            timestamp = format_timestamp(now(call))
            device["status"] = "decommissioned"
            device["decommissionedAt"] = timestamp
            device["modifiedAt"] = timestamp
            logger.info(
                "Device %s decommissioned in %s/%s",
                device["id"],
                call.env.name,
                call.data.organization,
            )
    return Response(status_code=204)
