"""Liveness and the state of database, cache and task queue."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Response, get
from litestar.datastructures import State
from sqlalchemy import text

from marketplace.core.http import problems
from marketplace.core.tasks import worker_state


async def health_report(state: State) -> tuple[bool, dict[str, Any]]:
    """Check each dependency; the platform is healthy when database and cache answer."""
    try:
        async with state.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        database = {"ok": True, "backend": state.db.engine.dialect.name}
    except Exception as exc:
        database = {"ok": False, "backend": state.db.engine.dialect.name, "error": exc.__class__.__name__}
    cache = {"ok": await state.cache.ping(), "backend": "redis" if state.settings.redis_url else "in-process"}
    tasks = await anyio.to_thread.run_sync(worker_state, state.settings)
    healthy = bool(database["ok"] and cache["ok"])
    status = "ok" if healthy and tasks["ok"] else ("degraded" if healthy else "failing")
    return healthy, {"status": status, "database": database, "cache": cache, "tasks": tasks}


class HealthController(Controller):
    tags = ["health"]
    opt = {"accepts_token": True}

    @get(
        "/health",
        summary="Liveness and dependencies",
        description="503 (with the same report) when the database or cache does not answer.",
        responses=problems(),
    )
    async def health(self, state: State) -> Response[dict[str, Any]]:
        healthy, report = await health_report(state)
        return Response(content=report, status_code=200 if healthy else 503)
