"""Tasks through Redis: `marketplace worker` (worker + beat) runs queued tasks; /health sees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from marketplace.app import create_app
from marketplace.core.identity.models import LoginSession
from marketplace.core.identity.tasks import purge_expired_task
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from marketplace.core.tasks import configure_celery
from marketplace.core.types import utcnow
from tests.conftest import TEST_ORIGIN
from tests.factories import make_org, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(redis_url: str, database_url: str, var_dir: Path, engine: Engine) -> Iterator[subprocess.Popen[bytes]]:
    """A real `marketplace worker` process on the private Redis and the test database."""
    env = {
        **os.environ,
        "MARKET_REDIS_URL": redis_url,
        "MARKET_DATABASE_URL": database_url,
        "MARKET_VAR_DIR": str(var_dir),
        "MARKET_ENV": "test",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "marketplace.cli", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_worker_runs_queued_tasks_and_health_sees_it(
    worker: subprocess.Popen[bytes], settings: Settings, redis_url: str, engine: Engine
) -> None:
    with_redis = settings.model_copy(update={"redis_url": redis_url})
    with TestClient(app=create_app(with_redis), base_url=TEST_ORIGIN) as client:
        deadline = time.monotonic() + 60
        body = client.get("/health").json()
        while body["tasks"]["workers"] < 1 and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.5)
            body = client.get("/health").json()
        assert body["tasks"] == {"mode": "celery", "ok": True, "workers": 1}
        assert body["status"] == "ok"
        assert body["cache"] == {"ok": True, "backend": "redis"}

    user = make_user(engine, make_org(engine, OrgKind.buyer))
    with Session(engine) as session:
        session.add(LoginSession(token_hash="f" * 64, user_id=user.id, expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    configure_celery(with_redis)
    result = purge_expired_task.delay()
    purged = result.get(timeout=30)
    # The worker's beat also runs this task on its schedule and may have purged the session first.
    assert purged["sessions"] in (0, 1)
    assert purged["revoked_tokens"] == 0
    with Session(engine) as session:
        assert session.exec(select(LoginSession).where(LoginSession.token_hash == "f" * 64)).first() is None


def test_worker_refuses_to_start_without_redis(var_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MARKET_REDIS_URL"}
    env["MARKET_VAR_DIR"] = str(var_dir)
    done = subprocess.run(
        [sys.executable, "-m", "marketplace.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "MARKET_REDIS_URL" in done.stderr
