"""Seed each organization with device networks, devices and license plate reads.

`seed_organization` is a `Store` seeder: it runs when an organization's
data is first used in an environment and again after every reset. What it
creates is described in seed.yaml beside this module. The same
organization always gets the same records within one run of the server.

Collections it fills, keyed by record id:
  networks  {id, name}
  devices   the fields of Flock's Device (id, type, name, location,
            network {id, name}, metadata, createdAt, modifiedAt) plus the
            mock's own `networkId`, `status` (active or decommissioned)
            and `decommissionedAt` (None while active)
  reads     {id, plate, state, timestamp, deviceId, networkId, latitude,
            longitude, plateConfidence, stateConfidence, source}
"""

from __future__ import annotations

import functools
import random
import string
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mockflock.errors import ConfigError
from mockflock.store import OrgData

SEED_FILE = Path(__file__).with_name("seed.yaml")
DAY = 86_400

# The instant that seeded timestamps count back from: when this module was
# first imported, to the minute. It stays fixed for the life of the process
# so that a reset re-creates identical reads.
SEED_ANCHOR = float(int(time.time()) // 60 * 60)


def format_timestamp(seconds: float) -> str:
    """Format seconds since the epoch as RFC 3339 UTC with milliseconds, e.g. 2024-07-26T17:31:51.000Z."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> float:
    """Return seconds since the epoch of an RFC 3339 timestamp; one without an offset is read as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@functools.cache
def load_seed_spec() -> dict[str, Any]:
    try:
        spec = yaml.safe_load(SEED_FILE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read the seed data {SEED_FILE}: {exc}") from None
    if not isinstance(spec, dict) or "default" not in spec:
        raise ConfigError(f"The seed data {SEED_FILE} must be a mapping with a 'default' entry.")
    return spec


def organization_spec(organization: str) -> dict[str, Any]:
    """Return the seed entry of `organization`, or the default entry."""
    spec = load_seed_spec()
    return (spec.get("organizations") or {}).get(organization) or spec["default"]


def default_network_id(data: OrgData) -> str:
    """Return the id of the network that devices created through the Device API join."""
    return organization_spec(data.organization)["default_network"]


def seed_organization(data: OrgData) -> None:
    """Fill `data` with the networks, devices and reads seed.yaml gives its organization."""
    spec = organization_spec(data.organization)
    window = float(load_seed_spec().get("window_days", 30)) * DAY
    rng = random.Random(f"mockflock-seed/{data.organization}")
    with data.lock:
        devices = _seed_networks_and_devices(data, spec)
        reads = data.collection("reads")
        for plate in spec.get("recurring_plates") or []:
            _seed_recurring_plate(reads, plate, devices, window, rng)
        _seed_random_reads(reads, spec, devices, window, rng)


def _seed_networks_and_devices(data: OrgData, spec: dict[str, Any]) -> list[dict[str, Any]]:
    networks = data.collection("networks")
    devices = data.collection("devices")
    created: list[dict[str, Any]] = []
    for network_spec in spec["networks"]:
        network = {"id": network_spec["id"], "name": network_spec["name"]}
        networks[network["id"]] = network
        for device_spec in network_spec.get("devices") or []:
            # Seeded devices were installed a year or more before the window.
            installed = format_timestamp(SEED_ANCHOR - (400 - len(created)) * DAY)
            decommissioned_at = None
            if device_spec.get("status", "active") == "decommissioned":
                decommissioned_at = format_timestamp(
                    SEED_ANCHOR - device_spec["decommissioned_days_ago"] * DAY
                )
            device = {
                "id": device_spec["id"],
                "type": "camera",
                "name": device_spec["name"],
                "location": {
                    "latitude": device_spec["latitude"],
                    "longitude": device_spec["longitude"],
                },
                "network": dict(network),
                "metadata": {},
                "createdAt": installed,
                "modifiedAt": decommissioned_at or installed,
                "networkId": network["id"],
                "status": "decommissioned" if decommissioned_at else "active",
                "decommissionedAt": decommissioned_at,
            }
            devices[device["id"]] = device
            created.append(device)
    return created


def _seed_recurring_plate(
    reads: dict[str, Any],
    plate: dict[str, Any],
    devices: list[dict[str, Any]],
    window: float,
    rng: random.Random,
) -> None:
    allowed = plate.get("networks")
    candidates = [device for device in devices if allowed is None or device["networkId"] in allowed]
    if not candidates:
        raise ConfigError(
            f"Seed plate {plate['plate']!r} names networks {allowed} that have no devices."
        )
    low_confidence = set(rng.sample(range(plate["reads"]), plate.get("low_confidence_reads", 0)))
    for index in range(plate["reads"]):
        confidence = rng.uniform(0.40, 0.69) if index in low_confidence else rng.uniform(0.80, 0.99)
        _add_read(
            reads, plate["plate"], plate["state"], rng.choice(candidates), window, rng, confidence
        )


def _seed_random_reads(
    reads: dict[str, Any],
    spec: dict[str, Any],
    devices: list[dict[str, Any]],
    window: float,
    rng: random.Random,
) -> None:
    weights = spec.get("random_states") or {"california": 1}
    states, state_weights = list(weights), list(weights.values())
    remaining = spec.get("random_reads", 0)
    while remaining > 0:
        plate = _random_plate(rng)
        state = rng.choices(states, state_weights)[0]
        # Most random plates pass once; some pass two or three times.
        times = min(remaining, rng.choices([1, 2, 3], [80, 15, 5])[0])
        for _ in range(times):
            _add_read(
                reads, plate, state, rng.choice(devices), window, rng, rng.uniform(0.75, 0.99)
            )
        remaining -= times


def _random_plate(rng: random.Random) -> str:
    # California's current format (digit, three letters, three digits) or
    # a plain three-letter, four-digit one.
    letters = "".join(rng.choices(string.ascii_uppercase, k=3))
    if rng.random() < 0.7:
        return f"{rng.randint(1, 9)}{letters}{rng.randint(0, 999):03d}"
    return f"{letters}{rng.randint(0, 9999):04d}"


def _add_read(
    reads: dict[str, Any],
    plate: str,
    state: str,
    device: dict[str, Any],
    window: float,
    rng: random.Random,
    plate_confidence: float,
) -> None:
    newest = SEED_ANCHOR - 60
    if device["decommissionedAt"] is not None:
        newest = parse_timestamp(device["decommissionedAt"]) - 60
    oldest = SEED_ANCHOR - window
    # Whole seconds, so that reads sort the same by timestamp text and by time.
    captured = float(int(rng.uniform(oldest, max(oldest, newest))))
    read_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    reads[read_id] = {
        "id": read_id,
        "plate": plate,
        "state": state,
        "timestamp": format_timestamp(captured),
        "deviceId": device["id"],
        "networkId": device["networkId"],
        "latitude": device["location"]["latitude"],
        "longitude": device["location"]["longitude"],
        "plateConfidence": round(plate_confidence, 3),
        "stateConfidence": round(rng.uniform(0.60, 0.99), 3),
        "source": "seed",
    }
