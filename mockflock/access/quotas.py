"""Request quotas on the v3 APIs (modeled: Flock publishes no figures).

Machine tokens of one organization share one cap; each user's user tokens
have their own, higher cap. Both count requests in fixed windows on the
mock's clock: a window opens with the first request after the previous
window closed and lasts `window_seconds`. A request over the cap gets 429
with Retry-After and is not counted. Tests make a window as long as they
need and end it with `server.clock.advance`, so results never depend on
how fast the machine is.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mockflock.errors import ConfigError, ProtocolError
from mockflock.users import load_user_oauth_contract

if TYPE_CHECKING:
    from starlette.requests import Request

    from mockflock.access.bearer import Principal
    from mockflock.clock import Clock
    from mockflock.contracts import Api, Operation

logger = logging.getLogger(__name__)

SETTING_NAMES = ("window_seconds", "organization_requests_per_window", "user_requests_per_window")


@dataclass(frozen=True)
class QuotaSettings:
    """The configuration's `quotas` section, with the contract's defaults."""

    enabled: bool
    window_seconds: float
    organization_requests_per_window: int
    user_requests_per_window: int


def default_quota_settings() -> QuotaSettings:
    return parse_quota_settings({}, "the defaults")


def parse_quota_settings(body: Any, source: str) -> QuotaSettings:
    """Check the `quotas` section; every value missing from it comes from contracts/user-oauth.yaml."""
    if not isinstance(body, dict):
        raise ConfigError(f"quotas in {source} must be a mapping, not {type(body).__name__}")
    unknown = set(body) - {"enabled", *SETTING_NAMES}
    if unknown:
        raise ConfigError(
            f"quotas has {sorted(unknown)} in {source}; expected some of {['enabled', *SETTING_NAMES]}"
        )
    contract = load_user_oauth_contract()["quotas"]
    values: dict[str, Any] = {}
    for name in SETTING_NAMES:
        value = body.get(name, contract[name]["value"])
        whole = name != "window_seconds"
        if (
            isinstance(value, bool)
            or not isinstance(value, int if whole else (int, float))
            or value <= 0
        ):
            kind = "a positive whole number" if whole else "a positive number of seconds"
            raise ConfigError(f"quotas.{name}={value!r} in {source} must be {kind}")
        values[name] = value
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"quotas.enabled={enabled!r} in {source} must be true or false")
    return QuotaSettings(enabled=enabled, **values)


@dataclass
class Window:
    started: float
    count: int = 0


class QuotaCounter:
    """Request counts per quota key in one environment."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._windows: dict[tuple[str, str], Window] = {}
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str], limit: int, window_seconds: float) -> float | None:
        """Count one request; return None if admitted, else seconds until the window closes."""
        now = self.clock.now()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window.started + window_seconds:
                window = self._windows[key] = Window(started=now)
            if window.count < limit:
                window.count += 1
                return None
            return window.started + window_seconds - now

    def used(self, key: tuple[str, str], window_seconds: float) -> int:
        """Return how many requests the current window of `key` has counted."""
        window = self._windows.get(key)
        if window is None or self.clock.now() >= window.started + window_seconds:
            return 0
        return window.count

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


def check_quota(request: Request, principal: Principal, api: Api, operation: Operation) -> None:
    """Count the request against its quota, or reject it with 429 when the quota is used up."""
    env = request.app.state.environment
    settings: QuotaSettings = env.config.quotas
    if not settings.enabled:
        return
    if principal.level == "user":
        user = env.users.get(principal.subject)
        limit = (user.requests_per_window if user else None) or settings.user_requests_per_window
        key = ("user", principal.subject)
    else:
        limit = settings.organization_requests_per_window
        key = ("organization", principal.organization)

    retry_in = env.quotas.take(key, limit, settings.window_seconds)
    if retry_in is not None:
        raise _quota_exceeded(key, limit, settings.window_seconds, retry_in, env.name)


def _quota_exceeded(
    key: tuple[str, str], limit: int, window: float, retry_in: float, environment: str
) -> ProtocolError:
    kind, owner = key
    retry_after = max(1, math.ceil(retry_in))
    if kind == "user":
        quota_name = f"The per-user quota of user {owner!r}"
        fix = "Send fewer requests per user, or raise users.<id>.requests_per_window or quotas.user_requests_per_window."
    else:
        quota_name = f"The organization quota of {owner!r}, shared by all its machine tokens,"
        fix = "Send fewer requests, use a user token (each user has its own quota), or raise quotas.organization_requests_per_window."
    rejection = load_user_oauth_contract()["quotas"]["rejection"]
    logger.debug("Quota %s %s exhausted in %s; retry in %.3f s", kind, owner, environment, retry_in)
    return ProtocolError(
        f"{quota_name} is used up: {limit} requests per {window:g} s window in the {environment} environment. "
        f"Retry after {retry_after} s. {fix}",
        status=rejection["status"],
        error=rejection["error"],
        headers={"Retry-After": str(retry_after)},
        extra={
            "quota": kind,
            kind: owner,
            "limit": limit,
            "window_seconds": window,
            "retry_after": retry_after,
        },
        reason=f"{kind}_quota_exceeded",
    )
