"""Domain errors. Each carries a stable machine-readable ``code`` and the HTTP status it maps to.

Services raise these; the web layer turns them into RFC 9457 problem+json answers. Domain code
never imports the web framework to signal an error.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refused request, with a stable ``code`` that callers can rely on."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidInput(DomainError):
    status, code, title = 400, "invalid_input", "Invalid input"


class NotAuthenticated(DomainError):
    status, code, title = 401, "not_authenticated", "Authentication required"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class TooManyRequests(DomainError):
    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(detail, code=code, retry_after=retry_after)
        self.retry_after = retry_after
