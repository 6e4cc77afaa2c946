"""The HTTP API: ``create_app(settings)``; schemas are separate from domain types."""

from fyp.api.app import create_app

__all__ = ["create_app"]
