"""The service's errors: failures a caller can act on, whoever calls (the API or the CLI).

Each names the status and code it reads as over HTTP; apikeys/http_errors.py writes them
out, as it does every other error.
"""

from __future__ import annotations

from typing import Any

from apikeys.crypto import masked


class ServiceError(Exception):
    """A failure the caller can act on; ``status`` and ``code`` say how it reads over HTTP."""

    status = 400
    code = "invalid_request"
    message = "The request is invalid"
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        # A message may quote what a caller sent (an id, a scope): never a key.
        self.message = masked(message or self.message)
        super().__init__(self.message)
        self.details = details


class InvalidRequest(ServiceError):
    pass


class InvalidScope(ServiceError):
    code = "invalid_scope"
    message = "One or more scopes are not recognized"


class NameTaken(ServiceError):
    code = "name_taken"
    message = "A key with this name already exists in your organization"


class PolicyViolation(ServiceError):
    code = "policy_violation"
    message = "The change breaks your organization's key policy"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"
    # One message for missing, malformed, unknown, expired and revoked keys alike.
    message = "Missing or invalid API key"
    headers = {"WWW-Authenticate": 'Bearer realm="api"'}


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"
    message = "Your key lacks the required scope for this operation"


class NotFound(ServiceError):
    status = 404
    code = "not_found"
    message = "The specified resource does not exist"


class OrganizationNotFound(NotFound):
    message = "No such organization"


class KeyNotFound(NotFound):
    message = "The specified key_id does not exist"


class KeyRevoked(KeyNotFound):
    """A write to a revoked key: revocation is final, and to its owner the key is gone."""


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; back off and retry after the time in Retry-After"


class ServiceUnavailable(ServiceError):
    status = 503
    code = "service_unavailable"
    message = "The service cannot answer now; retry shortly"


class OutcomeUnknown(ServiceUnavailable):
    """The database failed, or stopped answering, while it committed the request's change:
    no client of a database can tell whether the change was made."""

    message = (
        "The database failed while committing the change, which may or may not have been "
        "made: check before you retry"
    )
