"""Domain errors. Services raise these, never HTTPException; each carries its HTTP status and a code."""

from __future__ import annotations


class RefineryError(Exception):
    status_code = 400
    code = "bad_request"
    retry_after: int | None = None  # seconds, sent as Retry-After (busy and rate-limited answers)

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class NotFound(RefineryError):
    status_code = 404
    code = "not_found"


class Forbidden(RefineryError):
    status_code = 403
    code = "forbidden"


class Unauthorized(RefineryError):
    status_code = 401
    code = "unauthorized"


class Conflict(RefineryError):
    status_code = 409
    code = "conflict"


class InvalidInput(RefineryError):
    status_code = 422
    code = "invalid_input"


class TooLarge(RefineryError):
    status_code = 413
    code = "too_large"


class UnsupportedMedia(RefineryError):
    status_code = 415
    code = "unsupported_media_type"


class InsufficientStorage(RefineryError):
    status_code = 507
    code = "insufficient_storage"


class ServiceUnavailable(RefineryError):
    status_code = 503
    code = "unavailable"
    retry_after = 2


class TooManyRequests(RefineryError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)
        self.retry_after = retry_after


class ConfigurationError(RuntimeError):
    """Start-up cannot continue; the message says what to run or set."""
