"""Password hashing, API keys and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Argon2 takes 64 MB for each hash by design; a burst of logins (or of guesses) on the web's forty
# threads would otherwise take gigabytes. Two at a time keep a login fast and the memory flat.
_HASHING = threading.BoundedSemaphore(2)
# A caller waits this long for a slot; past it the server is saturated and answers "busy" rather than piling
# up request threads. (A flood from one address is throttled before it gets here; twenty people logging in at
# once, on a busy machine, wait a few seconds at most.)
HASHING_WAIT_SECONDS = 10.0

API_KEY_PREFIX = "rfy_"


class HashingBusy(RuntimeError):
    """Both hashing slots stayed taken for HASHING_WAIT_SECONDS."""


def _slot() -> None:
    if not _HASHING.acquire(timeout=HASHING_WAIT_SECONDS):
        raise HashingBusy()


def hash_password(password: str) -> str:
    _slot()
    try:
        return str(_hasher.hash(password))
    finally:
        _HASHING.release()


def verify_password(password_hash: str, password: str) -> bool:
    _slot()
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False
    finally:
        _HASHING.release()


_DUMMY: list[str] = []


def dummy_password_hash() -> str:
    """A hash of a random password with the same parameters as real ones: verifying a login for an unknown
    e-mail against it costs what verifying a known one does, so timing does not tell which accounts exist."""
    if not _DUMMY:
        _DUMMY.append(str(_hasher.hash(secrets.token_urlsafe(16))))
    return _DUMMY[0]


def new_api_key() -> str:
    """A high-entropy key; only its SHA-256 is stored, so a leaked database does not leak keys."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, sent: str | None) -> bool:
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())
