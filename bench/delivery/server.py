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
    _experiments(app)
    return app


def _experiments(app: Litestar) -> None:  # temporary: BENCH_SKIP=meter,state,page
    import os

    skip = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
    from marketplace.delivery.services import access, rows
    from marketplace.delivery.services.metering import Meter

    if "meter" in skip:
        Meter.record = lambda self, *a, **k: None  # type: ignore[method-assign]
    if "state" in skip:
        real = access.read_state
        memo: dict[Any, Any] = {}

        async def cached(session: Any, org: Any, product: Any, month: str) -> Any:
            if (org, product) not in memo:
                memo[(org, product)] = await real(session, org, product, month)
            return memo[(org, product)]

        access.read_state = cached  # type: ignore[assignment]
    if "page" in skip:
        real_page = rows.deliver_page
        pages: dict[Any, Any] = {}

        def canned(projection: Any, query: Any, key: bytes) -> Any:
            if "p" not in pages:
                pages["p"] = real_page(projection, query, key)
            return pages["p"]

        rows.deliver_page = canned  # type: ignore[assignment]
