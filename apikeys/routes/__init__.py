"""HTTP routes: a blueprint per resource; views parse, call the domain and return."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from flask_smorest import Blueprint

from apikeys.auth import SECURITY, requires
from schemas.errors import ErrorSchema


def protected(blp: Blueprint, scope: str, *errors: int) -> Callable:
    """Require ``scope``, and document the security and every error the view can answer."""

    def decorator(view: Callable) -> Callable:
        view = requires(scope)(view)
        for status in sorted({401, 403, 429, *errors}):
            description = HTTPStatus(status).phrase
            view = blp.alt_response(status, schema=ErrorSchema, description=description)(view)
        return blp.doc(security=SECURITY)(view)

    return decorator
