"""Health report and tasks run in-process (embedded default) with their periodic jobs."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from litestar.testing import TestClient
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from marketplace.app import create_app
from marketplace.core.identity.models import LoginSession, RevokedAccessToken
from marketplace.core.identity.tasks import purge_expired_task
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.core.tasks import InProcessScheduler, PeriodicJob, celery_app, configure_celery, enqueue
from marketplace.core.types import utcnow
from tests.conftest import TEST_ORIGIN
from tests.factories import make_login_session, make_org, make_user


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _expired_records(engine: Engine) -> None:
    user = make_user(engine, make_org(engine, OrgKind.buyer))
    make_login_session(engine, user, ttl_seconds=3600)
    with Session(engine) as session:
        session.add(LoginSession(token_hash="e" * 64, user_id=user.id, expires_at=utcnow() - timedelta(seconds=5)))
        session.add(RevokedAccessToken(jti="old", client_id="mkc_x", expires_at=utcnow() - timedelta(seconds=5)))
        session.add(RevokedAccessToken(jti="live", client_id="mkc_x", expires_at=utcnow() + timedelta(hours=1)))
        session.commit()


def test_health_reports_each_dependency(client: TestClient, settings: Settings) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["database"]["backend"] == ("sqlite" if settings.resolved_database_url.startswith("sqlite") else "postgresql")
    assert body["cache"] == {"ok": True, "backend": "redis" if settings.redis_url else "in-process"}
    if settings.redis_url:
        assert body["tasks"]["mode"] == "celery"
        assert body["tasks"]["workers"] == 0, "no worker was started for this test"
        assert body["status"] == "degraded"
    else:
        assert body["tasks"] == {"mode": "in-process", "ok": True, "workers": 0}
        assert body["status"] == "ok"


def test_health_is_503_when_the_database_is_gone(settings: Settings, tmp_path: object) -> None:
    broken = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none", "redis_url": None})
    with TestClient(app=create_app(broken), base_url=TEST_ORIGIN) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["database"]["ok"] is False
    assert response.json()["status"] == "failing"


def test_purge_task_is_idempotent_and_keeps_live_records(engine: Engine, settings: Settings) -> None:
    _expired_records(engine)
    configure_celery(settings.model_copy(update={"redis_url": None}))
    first = purge_expired_task.apply().get()
    assert first == {"sessions": 1, "revoked_tokens": 1}
    assert purge_expired_task.apply().get() == {"sessions": 0, "revoked_tokens": 0}
    assert _count(engine, LoginSession) == 1
    assert _count(engine, RevokedAccessToken) == 1


def test_periodic_jobs_run_in_process_without_redis(engine: Engine, settings: Settings) -> None:
    _expired_records(engine)
    configure_celery(settings.model_copy(update={"redis_url": None}))
    scheduler = InProcessScheduler([PeriodicJob(purge_expired_task.name, 0.2)])
    scheduler.start()
    try:
        deadline = time.monotonic() + 15
        while _count(engine, LoginSession) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop()
    assert _count(engine, LoginSession) == 1
    assert scheduler.runs[purge_expired_task.name] >= 1


def test_every_periodic_job_is_a_registered_task(settings: Settings) -> None:
    app = configure_celery(settings)
    schedule = app.conf.beat_schedule
    assert "identity.purge_expired_task" in schedule
    for entry in schedule.values():
        assert entry["task"] in celery_app.tasks


def test_enqueue_runs_in_process_without_blocking_the_caller(engine: Engine, settings: Settings) -> None:
    _expired_records(engine)
    configure_celery(settings.model_copy(update={"redis_url": None}))
    future = enqueue(purge_expired_task)
    assert future.result(timeout=30).get() == {"sessions": 1, "revoked_tokens": 1}


def test_eager_task_called_inside_an_event_loop_still_runs(engine: Engine, settings: Settings) -> None:
    _expired_records(engine)
    configure_celery(settings.model_copy(update={"redis_url": None}))

    async def from_a_request() -> dict[str, int]:
        return purge_expired_task.apply().get()  # type: ignore[no-any-return]

    assert asyncio.run(from_a_request()) == {"sessions": 1, "revoked_tokens": 1}
