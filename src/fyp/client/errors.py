"""What the client raises: the API's refusals, each carrying the API's own message
(``detail``), and a server that could not be reached."""

from __future__ import annotations

from typing import Any


def _detail_text(detail: Any) -> str:
    """The API's ``detail``: a sentence, or (a request its validation refused) a list of
    ``{"loc": [...], "msg": ...}`` issues, told as ``where: what; ...``."""
    if isinstance(detail, list):
        parts = []
        for issue in detail:
            if isinstance(issue, dict):
                loc = ".".join(str(p) for p in issue.get("loc", []))
                parts.append(f"{loc}: {issue.get('msg', issue)}" if loc else str(issue.get("msg")))
            else:
                parts.append(str(issue))
        return "; ".join(parts)
    return str(detail)


class FypError(Exception):
    """Anything the client raises. ``route`` is the route's template (``GET
    /v1/users/{user_id}``), never the path, which can hold a user's id."""

    def __init__(self, message: str, route: str) -> None:
        super().__init__(message)
        self.route = route


class ApiError(FypError):
    """The API answered with an error status. ``detail`` is the body's ``detail`` as
    sent (a sentence, or a list of validation issues); ``retry_after`` the seconds its
    ``Retry-After`` asked for, if any."""

    def __init__(
        self, route: str, status_code: int, detail: Any, retry_after: float | None = None
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"{route}: HTTP {status_code}: {_detail_text(detail)}", route)


class BadRequestError(ApiError):
    """400."""


class AuthError(ApiError):
    """401 (no key, a wrong, revoked or expired one) or 403 (a scope or user it lacks)."""


class NotFoundError(ApiError):
    """404: no such user, video or route."""


class ConflictError(ApiError):
    """409: for example a user being erased."""


class PayloadTooLargeError(ApiError):
    """413: a batch or body over the server's limits; nothing of it stored."""


class NotHomedError(ApiError):
    """421: the user is not homed in this deployment's region."""


class InvalidRequestError(ApiError):
    """422: the request (not one item of a batch: those are in the batch's result)."""


class RateLimitedError(ApiError):
    """429, still after the retries."""


class UnavailableError(ApiError):
    """503 (storage unavailable, the learning loop stopped), still after the retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    421: NotHomedError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def api_error(
    route: str, status_code: int, detail: Any, retry_after: float | None = None
) -> ApiError:
    """The error of ``status_code`` (:class:`ApiError` itself for a status without a
    class of its own)."""
    return _BY_STATUS.get(status_code, ApiError)(route, status_code, detail, retry_after)


class UnreachableError(FypError):
    """No answer: the server could not be reached, or the connection failed before an
    answer came (still after the retries, where the call may be retried)."""
