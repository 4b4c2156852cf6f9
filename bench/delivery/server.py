"""The benchmark's app factory: the platform's app (settings from ``MARKET_*``), delivery's lifespan, and one
trivial route, ``GET /bench/hello``, that goes through the same middleware (CSRF, authentication, locale,
compression, guards) and answers a small JSON object without touching the database.

Run by bench.py as ``uvicorn --factory --app-dir bench/delivery server:create``.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get

from marketplace.app import create_app
from marketplace.delivery.api import delivery_lifespan


@get("/bench/hello", opt={"accepts_token": True}, include_in_schema=False)
async def hello() -> dict[str, Any]:
    """Hello, world."""
    return {"hello": "world"}


def create() -> Litestar:
    """The app under test, with the hello route and delivery's lifespan (until marketplace.app wires it)."""
    app = create_app()
    app.register(hello)
    if delivery_lifespan not in app._lifespan_managers:
        app._lifespan_managers.append(delivery_lifespan)
    return app
