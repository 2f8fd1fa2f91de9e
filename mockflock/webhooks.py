"""LPR hotlist alert webhooks: match plate reads against custom hotlists and POST alerts.

When a read is ingested or injected, `on_read` looks the plate up on the
organization's custom hotlists. For each enabled hotlist alert
subscription whose audience filter lets a match through, it POSTs one
alert with every matched source to the subscription's callback URL,
authenticated with the subscription's credentials: none, HTTP Basic, an API
key header, or a bearer token fetched from the subscriber's token endpoint
(OAuth 2.0 client credentials, cached until shortly before it expires).

Deliveries run on the server's event loop. A connection error, a timeout,
a 5xx or a 429 is retried with exponential backoff, and so is one 401 of an
OAuth 2.0 subscription, after fetching a fresh token. Each attempt,
token request included, must finish within `timeout` seconds in total,
and at most 64 KiB of any response body is read. Every attempt is
recorded in `deliveries(mock)` and served at GET /_mockflock/webhooks/deliveries;
clearing that log (as a reset does) also cancels the deliveries still in
flight or waiting to retry. Credentials and tokens are never logged or
recorded, and user info in URLs is masked.

What is modeled: the alert fields come from the read and, where the
Device API knows the device, from the device. Subscriptions with
`contentType: application/xml` receive the same fields as XML elements.
Reads from other organizations' shared cameras are not modeled, so
`enabledFirstResponderJurisdictionAlerts` changes nothing.

The `webhooks` mapping of the configuration file tunes delivery:
`max_attempts` (5), `base_delay` (0.2 s, doubled after each failure),
`max_delay` (5 s), `timeout` (5 s per attempt) and `history` (1000
recorded attempts).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import hashlib
import json
import logging
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mockflock.admin import admin_route, environment_of, mock_of
from mockflock.apis.custom_hotlists import find_matches, parse_timestamp
from mockflock.apis.plate_lookup import normalize_plate
from mockflock.errors import ApiError, ConfigError, MockflockError
from mockflock.jsonbody import json_type, parse_json
from mockflock.store import OrgData

if TYPE_CHECKING:
    from mockflock.server import MockServer

logger = logging.getLogger(__name__)

SUBSCRIPTIONS = "hotlist_alert_subscriptions"
READS = "reads"
USER_AGENT = "mockflock-webhooks/1"
# The most of a subscriber's response body that is read; the rest is discarded.
MAX_RESPONSE_BYTES = 64 * 1024
# Characters that XML 1.0 does not allow in a document, not even as references.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
READ_FIELDS = {
    "id": str,
    "plate": str,
    "timestamp": str,
    "deviceId": str,
    "networkId": str,
    "state": str,
    "latitude": (int, float),
    "longitude": (int, float),
    "plateConfidence": (int, float),
    "stateConfidence": (int, float),
    "imageUrl": str,
    "source": str,
}


@dataclass(frozen=True)
class WebhookSettings:
    """Retry and history limits of webhook delivery."""

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    timeout: float = 5.0
    history: int = 1000


def parse_settings(raw: Any, source: str = "the configuration") -> WebhookSettings:
    """Check the `webhooks` mapping of a configuration and return its settings."""
    if raw is None:
        return WebhookSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"webhooks in {source} must be a mapping, not {type(raw).__name__}")
    defaults = WebhookSettings()
    unknown = set(raw) - set(defaults.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"webhooks has {sorted(unknown)} in {source}; expected some of {sorted(defaults.__dataclass_fields__)}")
    values: dict[str, Any] = {}
    for name in ("max_attempts", "history"):
        value = raw.get(name, getattr(defaults, name))
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"webhooks.{name}={value!r} in {source} must be a whole number of at least 1")
        values[name] = value
    for name in ("base_delay", "max_delay", "timeout"):
        value = raw.get(name, getattr(defaults, name))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"webhooks.{name}={value!r} in {source} must be a number of seconds, 0 or more")
        values[name] = float(value)
    if values["timeout"] == 0:
        raise ConfigError(f"webhooks.timeout=0 in {source} must be more than 0 seconds")
    return WebhookSettings(**values)


class TokenRequestError(MockflockError):
    """The subscriber's OAuth 2.0 token endpoint did not issue a token."""


class _Stale(Exception):
    """The delivery log was cleared while this delivery was running."""


class WebhookDeliveries:
    """The delivery attempts of one mock server, its OAuth 2.0 token cache and its in-flight count."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=settings.history)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._tasks: set[Any] = set()
        # Cache key -> (access token, time.monotonic() after which it is refreshed).
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        # Bumped by `clear`; a delivery from an older generation sends and records nothing more.
        self.generation = 0

    def records(
        self,
        *,
        environment: str | None = None,
        organization: str | None = None,
        subscription_id: str | None = None,
        read_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return copies of the recorded attempts, oldest first, filtered by the given ids."""
        wanted = {"environment": environment, "organization": organization, "subscriptionId": subscription_id, "readId": read_id}
        with self._lock:
            return [
                copy.deepcopy(record)
                for record in self._records
                if all(value is None or record[key] == value for key, value in wanted.items())
            ]

    @property
    def pending(self) -> int:
        """The number of alerts still being delivered or waiting to retry."""
        with self._lock:
            return self._pending

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is in flight; return False if `timeout` seconds pass first.

        Must not be called on the server's event loop, which runs the deliveries.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def clear(self) -> None:
        """Forget the recorded attempts and cached tokens, and cancel every delivery in flight or waiting to retry.

        Safe to call from any thread. No attempt of a cancelled delivery is
        sent or recorded afterwards, even if its task has not stopped yet.
        """
        with self._lock:
            self.generation += 1
            self._records.clear()
            self._tokens.clear()
            tasks = list(self._tasks)
        for task in tasks:
            _cancel(task)

    def current(self, generation: int) -> bool:
        """Tell whether a delivery started in `generation` may still send and record attempts."""
        with self._lock:
            return generation == self.generation

    def _record(self, record: dict[str, Any], generation: int) -> bool:
        with self._lock:
            if generation != self.generation:
                return False
            self._records.append(record)
            return True

    def _started(self) -> None:
        with self._lock:
            self._pending += 1

    def _finished(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _done(self, future: Any) -> None:
        with self._lock:
            self._tasks.discard(future)
        self._finished()


def _cancel(task: Any) -> None:
    """Cancel an asyncio task or a concurrent future from any thread."""
    if isinstance(task, asyncio.Task):
        loop = task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
    else:
        task.cancel()


_CREATE_LOCK = threading.Lock()


def deliveries(mock: MockServer) -> WebhookDeliveries:
    """Return the mock's delivery log, creating it from the `webhooks` configuration on first use."""
    existing = getattr(mock, "webhooks", None)
    if existing is not None:
        return existing
    with _CREATE_LOCK:
        existing = getattr(mock, "webhooks", None)
        if existing is None:
            existing = WebhookDeliveries(parse_settings(mock.config.raw.get("webhooks"), mock.config.source))
            mock.webhooks = existing
    return existing


# Reads


def inject_read(mock: MockServer, env_name: str, organization: str, read_fields: dict[str, Any]) -> dict[str, Any]:
    """Store a plate read for `organization` in `env_name`, alert its subscribers and return the read.

    `read_fields` needs `plate` and `deviceId`, and `networkId` unless the
    Device API has a record of the device. `id` and `timestamp` default to a new UUID
    and the mock's current time, `source` to "injected"; `state`,
    `latitude`, `longitude`, `plateConfidence`, `stateConfidence` and
    `imageUrl` are optional. Latitude and longitude default to the
    device's. Raises ApiError naming the field when a value is missing or
    invalid.
    """
    if env_name not in mock.environments:
        raise ApiError(f"Environment {env_name!r} is not served; expected one of {sorted(mock.environments)}.")
    if organization not in mock.config.organizations:
        raise ApiError(
            f"Organization {organization!r} is not configured; expected one of {sorted(mock.config.organizations)}.",
            extra={"field": "organization"},
        )
    data = mock.store.org(env_name, organization)
    read = _check_read_fields(read_fields, data, mock)
    with data.lock:
        data.collection(READS)[read["id"]] = read
    logger.info("Injected read %s in %s/%s", read["id"], env_name, organization)
    on_read(mock, env_name, data, dict(read))
    return dict(read)


def _check_read_fields(fields: dict[str, Any], data: OrgData, mock: MockServer) -> dict[str, Any]:
    unknown = set(fields) - set(READ_FIELDS)
    if unknown:
        raise ApiError(f"Read fields {sorted(unknown)} are not known; expected some of {sorted(READ_FIELDS)}.")

    for name, kind in READ_FIELDS.items():
        value = fields.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ApiError(f"Read field {name!r} has the wrong type; received {value!r}.", extra={"field": name})

    read = {name: value for name, value in fields.items() if value is not None}
    for name in ("plate", "deviceId"):
        if not str(read.get(name, "")).strip():
            raise ApiError(f"Read field {name!r} is required and must not be blank.", extra={"field": name})
    # Injected reads are stored like uploaded ones: upper case, no spaces or hyphens.
    read["plate"] = normalize_plate(read["plate"])
    if not read["plate"]:
        raise ApiError(
            f"Read field 'plate' must contain letters or digits; received {fields['plate'][:80]!r}.", extra={"field": "plate"}
        )

    device = _device(data, read["deviceId"])
    if "networkId" not in read:
        network_id = (device.get("network") or {}).get("id") if device else None
        if not network_id:
            raise ApiError(
                f"Read field 'networkId' is required because device {read['deviceId']!r} is not registered "
                "with the Device API.",
                extra={"field": "networkId"},
            )
        read["networkId"] = network_id

    if "timestamp" in read:
        try:
            parse_timestamp(read["timestamp"])
        except ValueError:
            raise ApiError(
                f"Read field 'timestamp' must be an RFC 3339 date-time such as 2025-05-01T10:00:00Z; received {read['timestamp'][:80]!r}.",
                extra={"field": "timestamp"},
            ) from None
    else:
        read["timestamp"] = _iso(mock.clock.now())

    read.setdefault("id", str(uuid.uuid4()))
    read.setdefault("source", "injected")
    location = (device or {}).get("location") or {}
    if "latitude" not in read and "longitude" not in read and "latitude" in location and "longitude" in location:
        read["latitude"] = location["latitude"]
        read["longitude"] = location["longitude"]
    if "state" in read:
        read["state"] = read["state"].lower()
    return read


def _device(data: OrgData, device_id: str) -> dict[str, Any] | None:
    """Return the Device API's record of `device_id` as a dict, if it has one."""
    with data.lock:
        device = data.collection("devices").get(device_id)
    if isinstance(device, dict):
        return device
    to_json = getattr(device, "to_json", None)
    return to_json() if callable(to_json) else None


def _network(data: OrgData, network_id: str, device: dict[str, Any] | None) -> dict[str, Any]:
    """Return the record of `network_id` from the seeded networks or the device, or {}."""
    with data.lock:
        network = data.collection("networks").get(network_id)
    if isinstance(network, dict):
        return network
    network = (device or {}).get("network") or {}
    return network if network.get("id") == network_id else {}


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Matching and scheduling


def on_read(mock: MockServer, env_name: str, data: OrgData, read: dict[str, Any]) -> None:
    """Send a hotlist alert for `read` to each subscriber whose filter lets a match through.

    Safe to call on the server's event loop or from any other thread; it
    only schedules the deliveries and returns at once. It never raises, so
    that a webhook problem cannot fail the ingest that stored the read: a
    read without `id`, `plate`, `timestamp`, `deviceId` or `networkId` is
    logged and skipped.
    """
    try:
        _alert_subscribers(mock, env_name, data, read)
    except Exception:
        logger.exception("Hotlist alerts for read %s in %s/%s failed", read.get("id"), env_name, data.organization)


def _alert_subscribers(mock: MockServer, env_name: str, data: OrgData, read: dict[str, Any]) -> None:
    missing = [name for name in ("id", "plate", "timestamp", "deviceId", "networkId") if not read.get(name)]
    if missing:
        logger.warning("Read %s lacks %s; no hotlist alert is sent", read.get("id"), ", ".join(missing))
        return
    try:
        at = parse_timestamp(read["timestamp"])
    except (TypeError, ValueError):
        logger.warning("Read %s has timestamp %r, which is not RFC 3339; no hotlist alert is sent",
                       read["id"], read["timestamp"])
        return
    matches = find_matches(data, read["plate"], read.get("state"), at)
    if not matches:
        return
    with data.lock:
        subscriptions = [copy.deepcopy(sub) for sub in data.collection(SUBSCRIPTIONS).values() if sub.get("enabled", True)]
    if not subscriptions:
        logger.debug("Read %s matched %d hotlist entries, but %s/%s has no enabled subscription",
                     read.get("id"), len(matches), env_name, data.organization)
        return
    device = _device(data, read["deviceId"])
    network = _network(data, read["networkId"], device)
    log = deliveries(mock)
    for subscription in subscriptions:
        audiences = ("organization", "restricted") if subscription.get("customHotlistAudienceFilter") == "any" else ("organization",)
        sources = [_source(hotlist.name, hotlist.audience, entry) for hotlist, entry in matches if hotlist.audience in audiences]
        if not sources:
            continue
        alert = build_alert(read, device, network, sources)
        job = _Delivery(mock, log, env_name, data.organization, subscription, read["id"], alert)
        _schedule(mock, log, job.run())


def _source(name: str, audience: str, entry: dict[str, Any]) -> dict[str, Any]:
    source = {"name": name, "reason": entry["reason"], "customHotlistAudience": audience}
    if entry.get("caseNumber"):
        source["caseNumber"] = entry["caseNumber"]
    return source


def build_alert(
    read: dict[str, Any], device: dict[str, Any] | None, network: dict[str, Any] | None, sources: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the alert body of a read with the matched sources; device and network fill in names where known."""
    device = device or {}
    network = network or {}
    location = device.get("location") or {}
    alert: dict[str, Any] = {"deviceExternalId": read["deviceId"]}
    latitude = read.get("latitude", location.get("latitude"))
    longitude = read.get("longitude", location.get("longitude"))
    if latitude is not None and longitude is not None:
        alert["deviceLat"] = latitude
        alert["deviceLong"] = longitude
    if device.get("name"):
        alert["deviceName"] = device["name"]
    alert["networkExternalId"] = read["networkId"]
    if network.get("name"):
        alert["networkName"] = network["name"]
    alert["objectId"] = read["id"]
    alert["eventTime"] = read["timestamp"]
    if read.get("imageUrl"):
        alert["imageUrl"] = read["imageUrl"]
    ocr: dict[str, Any] = {"label": read["plate"], "state": read.get("state"), "stateConfidence": read.get("stateConfidence")}
    if read.get("plateConfidence") is not None:
        ocr["labelConfidence"] = read["plateConfidence"]
    alert["ocr"] = ocr
    alert["sources"] = sources
    return alert


def render_alert(alert: dict[str, Any], content_type: str) -> bytes:
    """Serialize an alert as JSON, or as XML elements named like the JSON fields."""
    if content_type != "application/xml":
        return json.dumps(alert).encode()
    root = ElementTree.Element("LprHotlistAlert")
    _xml_fill(root, alert)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_fill(parent: ElementTree.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _xml_fill(ElementTree.SubElement(parent, key), item)
    elif isinstance(value, list):
        for item in value:
            _xml_fill(ElementTree.SubElement(parent, "source"), item)
    elif value is None:
        parent.set("nil", "true")
    elif isinstance(value, bool):
        parent.text = "true" if value else "false"
    else:
        parent.text = XML_FORBIDDEN.sub("", str(value))


def _schedule(mock: MockServer, log: WebhookDeliveries, coroutine: Coroutine[Any, Any, None]) -> None:
    loop = mock.loop
    if loop is None or loop.is_closed() or not loop.is_running():
        coroutine.close()
        logger.warning("The server's event loop is not running; a hotlist alert was dropped")
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    log._started()
    if running is loop:
        future: Any = loop.create_task(coroutine)
    else:
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:
            # The loop closed between the check above and now.
            coroutine.close()
            log._finished()
            logger.warning("The server's event loop stopped; a hotlist alert was dropped")
            return
    # Hold a reference until the delivery ends, so that it is not garbage collected mid-flight.
    with log._lock:
        log._tasks.add(future)
    future.add_done_callback(lambda done: log._done(done))


# Delivery


def redact_url(url: str) -> str:
    """Return `url` with any user info (which may hold a password or token) replaced by ***, for logs and records."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    end = min((index for index in (rest.find(mark) for mark in "/?#") if index >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rpartition('@')[2]}{rest[end:]}"


class _Delivery:
    """One alert to one subscription, with its retries."""

    def __init__(
        self,
        mock: MockServer,
        log: WebhookDeliveries,
        environment: str,
        organization: str,
        subscription: dict[str, Any],
        read_id: str,
        alert: dict[str, Any],
    ) -> None:
        self.mock = mock
        self.log = log
        self.settings = log.settings
        self.environment = environment
        self.organization = organization
        self.subscription = subscription
        self.read_id = read_id
        self.alert = alert
        self.id = str(uuid.uuid4())
        self.url = subscription["callbackUrl"]
        self.generation = log.generation

    async def run(self) -> None:
        try:
            await self._run()
        except (asyncio.CancelledError, _Stale):
            logger.info("Delivery %s of read %s was cancelled when the delivery log was cleared", self.id, self.read_id)
        except Exception:
            logger.exception("Delivery %s of read %s to subscription %s failed unexpectedly",
                             self.id, self.read_id, self.subscription["id"])

    async def _run(self) -> None:
        content_type = self.subscription.get("contentType", "application/json")
        body = render_alert(self.alert, content_type)
        credentials = self.subscription["credentials"]
        refreshed_after_401 = False
        async with httpx.AsyncClient(timeout=self.settings.timeout, follow_redirects=False) as client:
            for attempt in range(1, self.settings.max_attempts + 1):
                if not self.log.current(self.generation):
                    return
                started = time.monotonic()
                status: int | None = None
                error: str | None = None
                retry_after: float | None = None
                try:
                    # One deadline for the whole attempt: a receiver that trickles bytes cannot stretch it.
                    status, retry_after = await asyncio.wait_for(
                        self._attempt(client, credentials, content_type, body), self.settings.timeout
                    )
                except TokenRequestError as exc:
                    error = str(exc)
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                except asyncio.TimeoutError:
                    error = f"timed out: no complete response within {self.settings.timeout:g} s"
                retryable = status is None or status >= 500 or status == 429
                if status == 401 and credentials["scheme"] == "oauth2" and not refreshed_after_401:
                    # The cached token may have been revoked: fetch a new one once.
                    self._forget_token(credentials)
                    refreshed_after_401 = True
                    retryable = True
                if status is not None and 200 <= status < 300:
                    outcome = "delivered"
                elif retryable and attempt < self.settings.max_attempts:
                    outcome = "retrying"
                else:
                    outcome = "failed"
                if not self._record(attempt, status, error, outcome, time.monotonic() - started):
                    return
                if outcome != "retrying":
                    self._log_outcome(outcome, attempt, status, error)
                    return
                delay = min(self.settings.base_delay * 2 ** (attempt - 1), self.settings.max_delay)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.settings.max_delay))
                logger.info(
                    "Delivery %s to subscription %s failed (attempt %d: %s); retrying in %.2f s",
                    self.id, self.subscription["id"], attempt, status or error, delay,
                )
                await asyncio.sleep(delay)

    async def _attempt(
        self, client: httpx.AsyncClient, credentials: dict[str, Any], content_type: str, body: bytes
    ) -> tuple[int, float | None]:
        """POST the alert once; return the status and the Retry-After seconds, if any."""
        headers = await self._auth_headers(client, credentials)
        headers.update({"Content-Type": content_type, "User-Agent": USER_AGENT})
        if not self.log.current(self.generation):
            raise _Stale
        response, _ = await _post_capped(client, self.url, content=body, headers=headers)
        return response.status_code, _retry_after(response)

    def _record(self, attempt: int, status: int | None, error: str | None, outcome: str, seconds: float) -> bool:
        return self.log._record({
            "deliveryId": self.id,
            "attempt": attempt,
            "outcome": outcome,
            "statusCode": status,
            "error": error,
            "time": _iso(self.mock.clock.now()),
            "durationMs": round(seconds * 1000, 1),
            "environment": self.environment,
            "organization": self.organization,
            "subscriptionId": self.subscription["id"],
            "readId": self.read_id,
            "url": redact_url(self.url),
            "scheme": self.subscription["credentials"]["scheme"],
            "contentType": self.subscription.get("contentType", "application/json"),
            "alert": self.alert,
        }, self.generation)

    def _log_outcome(self, outcome: str, attempt: int, status: int | None, error: str | None) -> None:
        if outcome == "delivered":
            logger.info("Delivered read %s to subscription %s (%s, attempt %d, status %s)",
                        self.read_id, self.subscription["id"], redact_url(self.url), attempt, status)
        else:
            logger.warning("Gave up delivering read %s to subscription %s (%s) after attempt %d: %s",
                           self.read_id, self.subscription["id"], redact_url(self.url), attempt, status or error)

    async def _auth_headers(self, client: httpx.AsyncClient, credentials: dict[str, Any]) -> dict[str, str]:
        scheme = credentials["scheme"]
        if scheme == "apiKey":
            return {credentials["apiKey"]["headerName"]: credentials["apiKey"]["key"]}
        if scheme == "basic":
            basic = credentials["basic"]
            pair = f"{basic['username']}:{basic['password']}".encode()
            return {basic["headerName"]: "Basic " + base64.b64encode(pair).decode()}
        if scheme == "oauth2":
            oauth2 = credentials["oauth2"]
            return {oauth2["headerName"]: "Bearer " + await self._token(client, oauth2)}
        return {}

    def _token_key(self, oauth2: dict[str, Any]) -> str:
        fields = {name: oauth2.get(name) for name in ("tokenEndpoint", "tokenScheme", "clientId", "clientSecret", "grantType", "scope", "customFields")}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        return f"{self.subscription['id']}:{digest}"

    def _forget_token(self, credentials: dict[str, Any]) -> None:
        with self.log._lock:
            self.log._tokens.pop(self._token_key(credentials["oauth2"]), None)

    async def _token(self, client: httpx.AsyncClient, oauth2: dict[str, Any]) -> str:
        key = self._token_key(oauth2)
        lock = self.log._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            with self.log._lock:
                cached = self.log._tokens.get(key)
            if cached and time.monotonic() < cached[1]:
                return cached[0]
            token, lifetime = await self._fetch_token(client, oauth2)
            # Refresh a little before expiry, so a token never expires in flight.
            refresh_at = time.monotonic() + lifetime - min(30.0, lifetime * 0.1)
            with self.log._lock:
                if self.generation == self.log.generation:
                    self.log._tokens[key] = (token, refresh_at)
            return token

    async def _fetch_token(self, client: httpx.AsyncClient, oauth2: dict[str, Any]) -> tuple[str, float]:
        endpoint = oauth2["tokenEndpoint"]
        form = {str(name): str(value) for name, value in (oauth2.get("customFields") or {}).items()}
        form["grant_type"] = oauth2.get("grantType") or "client_credentials"
        if oauth2.get("scope"):
            form["scope"] = oauth2["scope"]
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if oauth2.get("tokenScheme") == "basic":
            # RFC 6749 2.3.1: form-encode the id and secret before joining them.
            pair = f"{quote(oauth2['clientId'], safe='')}:{quote(oauth2['clientSecret'], safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = oauth2["clientId"]
            form["client_secret"] = oauth2["clientSecret"]

        where = f"token endpoint {redact_url(endpoint)}"
        try:
            response, content = await _post_capped(client, endpoint, data=form, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise TokenRequestError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise TokenRequestError(f"{where} returned status {response.status_code}")
        if content is None:
            raise TokenRequestError(f"{where} returned a body of more than {MAX_RESPONSE_BYTES} bytes")

        try:
            body = json.loads(content)
        except (ValueError, RecursionError):
            raise TokenRequestError(f"{where} returned a body that is not JSON") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenRequestError(f"{where} returned no access_token")

        lifetime = body.get("expires_in", 3600)
        if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = 3600
        logger.debug("Fetched a token for subscription %s from %s", self.subscription["id"], where)
        return token, float(lifetime)


async def _post_capped(client: httpx.AsyncClient, url: str, **options: Any) -> tuple[httpx.Response, bytes | None]:
    """POST and read at most MAX_RESPONSE_BYTES of the body; return it, or None when the body was longer.

    The rest of a longer body is never read: the connection is closed instead.
    """
    async with client.stream("POST", url, **options) as response:
        content = bytearray()
        async for chunk in response.aiter_bytes():
            content += chunk
            if len(content) > MAX_RESPONSE_BYTES:
                return response, None
        return response, bytes(content)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Admin API


@admin_route("/reads", ["POST"])
async def admin_inject_read(request: Request) -> Response:
    """Inject a plate read into the requesting environment and send its hotlist alerts."""
    mock = mock_of(request)
    try:
        body = parse_json(await request.body())
    except ValueError:
        raise ApiError("The body must be a JSON object such as {\"plate\": \"ABC123\", \"deviceId\": \"...\", \"networkId\": \"...\"}.") from None
    if not isinstance(body, dict):
        raise ApiError(f"The body must be a JSON object, not {json_type(body)}.")
    organizations = list(mock.config.organizations)
    organization = body.pop("organization", organizations[0] if organizations else None)
    if not isinstance(organization, str):
        raise ApiError(f"Field 'organization' must be a string; received {organization!r}.", extra={"field": "organization"})
    read = inject_read(mock, environment_of(request).name, organization, body)
    return JSONResponse(read, status_code=201)


@admin_route("/webhooks/deliveries", ["GET"])
async def admin_list_deliveries(request: Request) -> Response:
    """List the recorded webhook delivery attempts of the requesting environment, oldest first.

    Query parameters organization, subscriptionId and readId filter the list.
    """
    log = deliveries(mock_of(request))
    params = request.query_params
    records = log.records(
        environment=environment_of(request).name,
        organization=params.get("organization"),
        subscription_id=params.get("subscriptionId"),
        read_id=params.get("readId"),
    )
    return JSONResponse({"pending": log.pending, "deliveries": records})


@admin_route("/webhooks/deliveries", ["DELETE"])
async def admin_clear_deliveries(request: Request) -> Response:
    """Forget every recorded delivery attempt and cached subscriber token."""
    deliveries(mock_of(request)).clear()
    return Response(status_code=204)
