"""The mock's clock: real time plus an offset that tests can advance."""

from __future__ import annotations

import math
import threading
import time


class Clock:
    """The mock's current time, in seconds since the epoch.

    Every expiry decision in mockflock reads this clock, so advancing it
    expires tokens, codes and quotas without waiting.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds={seconds!r} must be a finite number of seconds, at least 0: the mock's clock only moves forward")
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0
