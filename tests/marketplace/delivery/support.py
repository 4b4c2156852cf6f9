"""Helpers of the delivery tests: the app with delivery's lifespan, bearer tokens of buyer programs, waiting for
export tasks, and reading metering records."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from marketplace.app import create_app
from marketplace.core.identity.models import Organisation
from marketplace.core.settings import Settings
from marketplace.core.tasks import configure_celery
from marketplace.delivery.api import delivery_lifespan
from tests.conftest import TEST_ORIGIN
from tests.factories import make_api_client


def with_delivery_lifespan(app: Litestar) -> Litestar:
    """Register ``delivery_lifespan`` after the app's own (as ``marketplace.app`` is asked to), once."""
    managers = app._lifespan_managers
    if delivery_lifespan not in managers:
        managers.append(delivery_lifespan)
    return app


def tasks_in_process(settings: Settings) -> None:
    """Run tasks (export builds) on the in-process pool even on the PostgreSQL + Redis profile, which has no Celery
    worker in the suite (``tests/integration/test_worker.py`` covers the worker); rate limits stay on Redis."""
    configure_celery(settings.model_copy(update={"redis_url": None}))


def delivery_app(settings: Settings) -> Litestar:
    """A fresh app whose shutdown flushes the meter, its tasks run in-process."""
    app = with_delivery_lifespan(create_app(settings))
    tasks_in_process(settings)
    return app


@contextmanager
def delivery_client(settings: Settings) -> Iterator[TestClient[Litestar]]:
    """A test client of a fresh app; leaving it flushes every buffered delivery."""
    with TestClient(app=delivery_app(settings), base_url=TEST_ORIGIN) as client:
        yield client


def bearer(
    client: TestClient[Litestar], engine: Engine, org: Organisation, scopes: Sequence[str] | None = None
) -> dict[str, str]:
    """Headers carrying an access token of a new API client of ``org`` (all scopes unless given)."""
    made = make_api_client(engine, org, scopes=list(scopes) if scopes is not None else None)
    answer = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, made.secret))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def client_id_of(headers: dict[str, str]) -> str:
    """Not needed by most tests: the client id is in the token's claims."""
    import base64
    import json

    payload = headers["Authorization"].split()[1].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["client_id"])


def wait_for_exports(engine: Engine, timeout_s: float = 30.0) -> None:
    """Wait until no export is queued or running (their tasks run on an in-process pool)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            open_ = conn.execute(text("SELECT count(*) FROM export WHERE status IN ('queued', 'running')")).scalar_one()
        if open_ == 0:
            return
        time.sleep(0.05)
    raise AssertionError("exports still queued or running")


def wait_for_export(
    client: TestClient[Litestar], headers: dict[str, str], export_id: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll the export until it is ready or failed; its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = client.get(f"/data/v1/exports/{export_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] in ("ready", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"export {export_id} did not finish")


def deliveries(engine: Engine) -> list[dict[str, Any]]:
    """The delivery rows, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM delivery ORDER BY occurred_at")).mappings().all()
    return [dict(r) for r in rows]


def counters(engine: Engine, entitlement_id: uuid.UUID) -> dict[str, int]:
    """The usage counter of an entitlement (all months summed)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0), coalesce(sum(bytes), 0) FROM usage_counter WHERE entitlement_id = :e"
            ),
            {"e": entitlement_id.hex if engine.dialect.name == "sqlite" else entitlement_id},
        ).one()
    return {"calls": int(row[0]), "rows": int(row[1]), "bytes": int(row[2])}


def update(engine: Engine, model: type[Any], ident: Any, **changes: Any) -> None:
    """Change a record straight in the database (a state the other domains' services would reach), and, as their
    commits do, wait until no delivery process uses access answers read before the change."""
    from sqlmodel import Session

    from marketplace.delivery.services.access_lease import ACCESS_TABLES

    with Session(engine) as session:
        record = session.get(model, ident)
        assert record is not None
        for name, value in changes.items():
            setattr(record, name, value)
        session.add(record)
        session.commit()
    if model.__tablename__ in ACCESS_TABLES and engine.dialect.name == "postgresql":
        asyncio.run(_wait_for_delivery_processes(engine.url.render_as_string(hide_password=False)))


async def _wait_for_delivery_processes(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from marketplace.core.db import async_url
    from marketplace.delivery.services.access_lease import wait_for_delivery_processes

    changes = create_async_engine(async_url(url))
    try:
        await wait_for_delivery_processes(changes)
    finally:
        await changes.dispose()


def refusal_events(engine: Engine) -> list[dict[str, Any]]:
    """The ``delivery.refused`` events of the ledger."""
    from tests.licensing.factories import ledger_events

    return ledger_events(engine, "delivery.refused")


def rows_path(product_id: Any, query: str = "") -> str:
    """The rows route of a product."""
    return f"/data/v1/products/{product_id}/rows" + (f"?{query}" if query else "")


def terminate_backends(engine: Engine, statement_like: str) -> int:
    """Drop PostgreSQL's connections (other than this one) whose last statement contains ``statement_like``: a
    connection lost to a restart or a network fault, as the process holding it sees it. Returns how many."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND query LIKE :like"
                ),
                {"like": f"%{statement_like}%"},
            ).scalar_one()
        )
