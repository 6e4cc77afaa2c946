"""The HTTP API: ``create_app(settings)``; schemas are separate from domain types.

``create_app`` is imported when first asked for: the schemas (``fyp.api.schemas``) are
what the client (``fyp.client``) reuses, and an app backend importing it should not load
the server (FastAPI, the engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fyp.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from fyp.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
