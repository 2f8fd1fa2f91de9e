"""Hotlist Alerts Subscription API: where an organization's LPR hotlist alerts are POSTed.

What is modeled, beyond the published operations:

- The unique constraint behind 409: an organization has at most one
  subscription per callback URL, compared as sent. Creating a second one,
  or moving one onto another's URL with PUT, is rejected with 409.
- `callbackUrl` and `oauth2.tokenEndpoint` must be http or https URIs
  (RFC 3986) with a host; anything else is rejected with 400. Flock may
  also try the credentials when a subscription is saved; mockflock does
  not.
- Only the credentials object that `scheme` names is stored; the others
  are dropped.
- Secrets (the API key, the Basic password, the OAuth 2.0 client secret and
  the values of `customFields`) read back as `********` from every
  operation. A PUT that sends `********` for a secret keeps the stored value
  of the same scheme, so a client can send back what it read. Without such
  a stored value, `********` is stored as sent, and a warning is logged.
- The optional flags default to `customHotlistAudienceFilter: organization`,
  `enabledFirstResponderJurisdictionAlerts: false` and `enabled: true`.

Deliveries themselves live in mockflock.webhooks.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.responses import JSONResponse, Response

from mockflock import webhooks
from mockflock.apis.base import Call, handles
from mockflock.errors import ApiError

logger = logging.getLogger(__name__)

REDACTED = "********"
# Secret fields of each credentials scheme; customFields values are secret too.
SECRETS = {"apiKey": ("key",), "basic": ("password",), "oauth2": ("clientSecret",)}
DEFAULTS = {
    "customHotlistAudienceFilter": "organization",
    "enabledFirstResponderJurisdictionAlerts": False,
    "enabled": True,
}
FIELDS = ("name", "callbackUrl", "credentials", "contentType", *DEFAULTS)

# An http or https URI by the grammar of RFC 3986 section 3. The JSON
# schema validator does not check `format: uri`, so the handler does.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT_ENCODED = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT_ENCODED})"
HTTP_URI = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://"
    rf"(?:(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT_ENCODED})*@)?"
    rf"(?P<host>\[[0-9A-Fa-f:.]+\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT_ENCODED})*)"
    r"(?::[0-9]*)?"
    rf"(?:/{_PCHAR}*)*"
    rf"(?:\?(?:{_PCHAR}|[/?])*)?"
    rf"(?:#(?:{_PCHAR}|[/?])*)?"
)


def subscriptions(call: Call) -> dict[str, dict[str, Any]]:
    """Return the organization's subscriptions by id, secrets included."""
    return call.data.collection(webhooks.SUBSCRIPTIONS)


def redact(subscription: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `subscription` with every secret replaced by `********`."""
    redacted = copy.deepcopy(subscription)
    credentials = redacted["credentials"]
    scheme = credentials["scheme"]
    settings = credentials.get(scheme)
    if settings:
        for name in SECRETS.get(scheme, ()):
            settings[name] = REDACTED
        if "customFields" in settings:
            settings["customFields"] = {name: REDACTED for name in settings["customFields"]}
    return redacted


def _now(call: Call) -> str:
    moment = datetime.fromtimestamp(call.env.clock.now(), timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_uri(value: str, field: str) -> None:
    match = HTTP_URI.fullmatch(value)
    valid = match is not None
    if match and match.group("host").startswith("["):
        try:
            ipaddress.IPv6Address(match.group("host")[1:-1])
        except ValueError:
            valid = False
    if not valid:
        raise ApiError(
            f"{field} must be an http or https URI (RFC 3986) such as https://example.com/flock/alerts, with "
            f"characters such as spaces percent-encoded; received {value[:80]!r}.",
            extra={"field": field},
        )


def _credentials(sent: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Return the credentials to store: the scheme's own settings, with stored secrets put back where sent redacted."""
    if "oauth2" in sent:
        # Checked even when another scheme is active, because the contract's format applies wherever it appears.
        _check_uri(sent["oauth2"]["tokenEndpoint"], "credentials.oauth2.tokenEndpoint")
    scheme = sent["scheme"]
    credentials: dict[str, Any] = {"scheme": scheme}
    if scheme == "none":
        return credentials
    settings = copy.deepcopy(sent[scheme])
    previous = (stored or {}).get(scheme) if (stored or {}).get("scheme") == scheme else None
    unrestored = []
    for name in SECRETS[scheme]:
        if settings[name] == REDACTED:
            if previous:
                settings[name] = previous[name]
            else:
                unrestored.append(f"credentials.{scheme}.{name}")
    if scheme == "oauth2":
        settings.setdefault("tokenScheme", "body")
        old_fields = (previous or {}).get("customFields") or {}
        for name, value in (settings.get("customFields") or {}).items():
            if value == REDACTED:
                if name in old_fields:
                    settings["customFields"][name] = old_fields[name]
                else:
                    unrestored.append(f"credentials.oauth2.customFields.{name}")
    if unrestored:
        logger.warning(
            "%s sent as the redaction placeholder %s with no stored value of the %s scheme to restore; "
            "stored as sent", ", ".join(unrestored), REDACTED, scheme,
        )
    credentials[scheme] = settings
    return credentials


def _prepare(call: Call, body: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    _check_uri(body["callbackUrl"], "callbackUrl")
    subscription = {name: body[name] for name in FIELDS if name in body}
    for name, default in DEFAULTS.items():
        subscription.setdefault(name, default)
    subscription["credentials"] = _credentials(body["credentials"], (stored or {}).get("credentials"))
    return subscription


def _check_unique(call: Call, callback_url: str, own_id: str | None) -> None:
    for other in subscriptions(call).values():
        if other["callbackUrl"] == callback_url and other["id"] != own_id:
            raise ApiError(
                f"Subscription {other['id']} already sends alerts to callbackUrl {callback_url[:80]!r}; an "
                "organization has one subscription per callback URL. Update that subscription instead.",
                status=409,
                error="conflict",
                extra={"field": "callbackUrl", "subscriptionId": other["id"]},
            )


def _find(call: Call, subscription_id: str) -> dict[str, Any]:
    subscription = subscriptions(call).get(subscription_id)
    if subscription is None:
        raise ApiError(
            f"No subscription with id {subscription_id[:80]!r} exists in this organization; "
            "GET /integrations/lpr/alerts/subscriptions lists the ids.",
            status=404,
            error="not_found",
        )
    return subscription


@handles("listSubscriptions")
async def list_subscriptions(call: Call) -> Response:
    with call.data.lock:
        body = [redact(subscription) for subscription in subscriptions(call).values()]
    return JSONResponse(body)


@handles("createSubscription")
async def create_subscription(call: Call) -> Response:
    body = await call.json()
    subscription = _prepare(call, body, None)
    now = _now(call)
    with call.data.lock:
        _check_unique(call, subscription["callbackUrl"], None)
        subscription = {"id": str(uuid.uuid4()), **subscription, "createdAt": now, "updatedAt": now}
        subscriptions(call)[subscription["id"]] = subscription
    logger.info(
        "Created hotlist alert subscription %s (%s credentials) in %s/%s",
        subscription["id"], subscription["credentials"]["scheme"], call.env.name, call.data.organization,
    )
    return JSONResponse(redact(subscription), status_code=201)


@handles("updateSubscription")
async def update_subscription(call: Call) -> Response:
    body = await call.json()
    with call.data.lock:
        stored = _find(call, body["id"])
        subscription = _prepare(call, body, stored)
        _check_unique(call, subscription["callbackUrl"], stored["id"])
        subscription = {"id": stored["id"], **subscription, "createdAt": stored["createdAt"], "updatedAt": _now(call)}
        subscriptions(call)[stored["id"]] = subscription
    return JSONResponse(redact(subscription))


@handles("getSubscription")
async def get_subscription(call: Call) -> Response:
    with call.data.lock:
        body = redact(_find(call, call.path_param("id")))
    return JSONResponse(body)


@handles("deleteSubscription")
async def delete_subscription(call: Call) -> Response:
    with call.data.lock:
        subscription = _find(call, call.path_param("id"))
        del subscriptions(call)[subscription["id"]]
    logger.info("Deleted hotlist alert subscription %s in %s/%s", subscription["id"], call.env.name, call.data.organization)
    return Response(status_code=204)
