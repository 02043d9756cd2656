"""The web dashboard served by ``callmeter serve`` at ``/``: overview, calls, call detail,
live calls and login. Server-rendered HTML with inline SVG charts; the only script
(``static/live.js``) keeps the live page current over server-sent events. Nothing is loaded
from another origin."""

from .demo import dashboard_command, demo_store
from .routes import dashboard_router

__all__ = ["dashboard_command", "dashboard_router", "demo_store"]
