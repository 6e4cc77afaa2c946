"""The API's routes, one router per resource, each built by ``create_app`` over what it
needs (the settings, the guard of its scopes, the app's running parts)."""

from fyp.api.routes.audit import audit_router
from fyp.api.routes.events import events_router
from fyp.api.routes.feed import feed_router
from fyp.api.routes.moderation import moderation_router
from fyp.api.routes.operations import operations_router
from fyp.api.routes.tokens import tokens_router
from fyp.api.routes.users import users_router
from fyp.api.routes.videos import videos_router

__all__ = [
    "audit_router",
    "events_router",
    "feed_router",
    "moderation_router",
    "operations_router",
    "tokens_router",
    "users_router",
    "videos_router",
]
