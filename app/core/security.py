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

API_KEY_PREFIX = "rfy_"


def hash_password(password: str) -> str:
    with _HASHING:
        return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        with _HASHING:
            return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


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
