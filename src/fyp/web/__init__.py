"""The browser front end: the feed player at ``/`` and the operator console at ``/console``.

Plain ES modules and CSS under ``static/``, served as they are (no build step)."""

from fyp.web.routes import install_web

__all__ = ["install_web"]
