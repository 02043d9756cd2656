"""callmeter's server: ingest records over HTTP into the store, query calls and statistics.

Needs the ``server`` extra: ``pip install 'callmeter[server]'``. Run it with
``callmeter serve``; :func:`create_app` builds the ASGI app on a :class:`~callmeter.store.Store`.
"""

from .app import Limits, create_app, render_metrics
from .auth import Token, Tokens

__all__ = ["Limits", "Token", "Tokens", "create_app", "render_metrics"]
