"""Failed logins slow down the address and the account they came from: after a few free failures each
further one doubles the wait (up to a cap), and until it has passed a login from there is answered 429 with
"try again in N s" before any database or password work is done. Kept in the web process's memory, bounded
in size; a failure is forgotten after a quiet window."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class Throttle:
    def __init__(self, *, free: int, base_seconds: float, max_seconds: float, window_seconds: float) -> None:
        self.free = free
        self.base = base_seconds
        self.max = max_seconds
        self.window = window_seconds
        self.max_entries = 100_000  # an attacker inventing e-mails cannot grow this without bound
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds before ``key`` may try again (0 when it may now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return 0.0
            if now - entry.last_failure > self.window and now >= entry.locked_until:
                del self._entries[key]
                return 0.0
            return max(0.0, entry.locked_until - now)

    def failed(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.pop(key, None) or _Entry()
            if now - entry.last_failure > self.window:
                entry.failures = 0
            entry.failures += 1
            entry.last_failure = now
            over = entry.failures - self.free
            if over > 0:
                entry.locked_until = now + min(self.max, self.base * 2 ** min(over - 1, 30))
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


class LoginThrottle:
    """Per address and per account; a correct password clears the account's failures (not the address's)."""

    def __init__(self, *, account_free: int = 5, address_free: int = 20, max_seconds: float = 900.0) -> None:
        self.accounts = Throttle(free=account_free, base_seconds=1.0, max_seconds=max_seconds, window_seconds=900.0)
        self.addresses = Throttle(free=address_free, base_seconds=1.0, max_seconds=max_seconds, window_seconds=900.0)

    def retry_after(self, *, address: str, email: str) -> int:
        """Whole seconds to wait before this login may be tried (0: now)."""
        wait = max(self.addresses.wait(address), self.accounts.wait(_account(email)))
        return math.ceil(wait)

    def failed(self, *, address: str, email: str) -> None:
        self.addresses.failed(address)
        self.accounts.failed(_account(email))

    def succeeded(self, *, email: str) -> None:
        self.accounts.forget(_account(email))


def _account(email: str) -> str:
    return email.strip().lower()[:320]


_THROTTLE: LoginThrottle | None = None
_THROTTLE_LOCK = threading.Lock()


def login_throttle() -> LoginThrottle:
    global _THROTTLE
    with _THROTTLE_LOCK:
        if _THROTTLE is None:
            from app.core.config import get_settings

            settings = get_settings()
            _THROTTLE = LoginThrottle(
                account_free=settings.login_free_failures_per_account,
                address_free=settings.login_free_failures_per_address,
                max_seconds=settings.login_max_delay_seconds,
            )
        return _THROTTLE


def reset_login_throttle() -> None:
    """Forget every failure (tests, and a process that re-reads its settings)."""
    global _THROTTLE
    with _THROTTLE_LOCK:
        _THROTTLE = None
