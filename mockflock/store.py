"""In-memory state of the mocked APIs, kept apart per environment and organization."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

Seeder = Callable[["OrgData"], None]


class OrgData:
    """The records one organization has in one environment.

    Collections are plain dicts keyed by record id, created on first use.
    Handlers run on the server's event loop; `lock` guards changes made
    from other threads (the admin API's Python side, the pytest plugin).
    """

    def __init__(self, environment: str, organization: str) -> None:
        self.environment = environment
        self.organization = organization
        self.lock = threading.RLock()
        self._collections: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def collection(self, name: str) -> dict[str, Any]:
        return self._collections.setdefault(name, {})

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"


class Store:
    """Every organization's data, created and seeded on first access."""

    def __init__(self, seeders: list[Seeder] | None = None) -> None:
        self.seeders = list(seeders or [])
        self._orgs: dict[tuple[str, str], OrgData] = {}
        self._lock = threading.Lock()

    def org(self, environment: str, organization: str) -> OrgData:
        key = (environment, organization)
        data = self._orgs.get(key)
        if data is None:
            with self._lock:
                data = self._orgs.get(key)
                if data is None:
                    data = OrgData(environment, organization)
                    for seed in self.seeders:
                        seed(data)
                    self._orgs[key] = data
        return data

    def reset(self) -> None:
        """Forget every record; the next access seeds afresh."""
        with self._lock:
            self._orgs.clear()
