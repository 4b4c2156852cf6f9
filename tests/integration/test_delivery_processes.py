"""A licence suspended through one server process stops the very next delivery call through another.

Two real uvicorn processes of the app share the database under test (and Redis on the production profile). On
PostgreSQL each keeps access answers under its access lease (``marketplace.delivery.services.access_lease``), so
this is what proves that keeping them stays exact across processes: a suspension's answer comes only once every
process has stopped using what it read before it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine

from marketplace.core.http import CSRF_HEADER, SESSION_COOKIE
from marketplace.core.identity.models import Role
from marketplace.core.settings import Settings
from tests.factories import make_api_client, make_login_session, make_user
from tests.marketplace.factories import make_market

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_") or k.startswith("MARKET_TEST_")}
    env.update(
        MARKET_ENV="test",
        MARKET_DATABASE_URL=str(settings.database_url),
        MARKET_VAR_DIR=str(settings.var_dir),
        MARKET_PUBLIC_URL=settings.public_url,
        MARKET_RUN_PERIODIC_IN_PROCESS="false",
        MARKET_DELIVERY_RATE_PER_SECOND="100000",
        MARKET_DELIVERY_BURST="100000",
        MARKET_PORT=str(port),
    )
    if settings.redis_url:
        env["MARKET_REDIS_URL"] = settings.redis_url
    return env


@contextmanager
def _server(settings: Settings) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "marketplace.app:create_app", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"], cwd=REPO, env=_environment(settings, port)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server process stopped at start-up"
            try:
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_suspension_through_one_process_refuses_the_next_call_through_another(settings: Settings, engine: Engine) -> None:
    market = make_market(engine, settings.resolved_data_dir)
    owner_admin = make_user(engine, market.owner, Role.admin)
    program = make_api_client(engine, market.buyer_a)
    rows = f"/data/v1/products/{market.product.id}/rows?limit=2"
    licence = f"/api/licensing/licences/{market.licence.id}"

    with _server(settings) as office, _server(settings) as delivery:
        token = httpx.post(
            f"{delivery}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(program.client_id, program.secret),
        ).json()["access_token"]
        buyer = httpx.Client(base_url=delivery, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        owner = httpx.Client(base_url=office, timeout=10)
        owner.cookies.set(SESSION_COOKIE, make_login_session(engine, owner_admin))
        owner.headers[CSRF_HEADER] = owner.get("/api/auth/csrf").json()["csrf_token"]

        # A program calling all along, through the other process: every call it *sends* after the suspension's
        # answer must be refused, and every call sent after the reinstatement's answer allowed again.
        calls: list[tuple[float, float, int, str]] = []
        stop = threading.Event()

        def call_all_along() -> None:
            with httpx.Client(base_url=delivery, headers={"Authorization": f"Bearer {token}"}, timeout=10) as program:
                while not stop.is_set():
                    sent = time.monotonic()
                    answer = program.get(rows)
                    code = answer.json().get("code", "") if answer.status_code != 200 else ""
                    calls.append((sent, time.monotonic(), answer.status_code, code))

        for _ in range(20):  # the process has read and kept the licence's state
            assert buyer.get(rows).status_code == 200
        caller = threading.Thread(target=call_all_along, daemon=True)
        caller.start()
        changes: list[tuple[str, float, float]] = []  # (state, requested, answered)
        try:
            for round_ in range(4):
                time.sleep(0.3)
                requested = time.monotonic()
                suspended = owner.post(f"{licence}/suspend", json={"reason": f"Audit finding {round_}"})
                assert suspended.status_code == 200, suspended.text
                changes.append(("suspended", requested, time.monotonic()))
                refused = buyer.get(rows)
                assert refused.status_code == 403, refused.text
                assert refused.json()["code"] == "licence_suspended"
                time.sleep(0.3)
                requested = time.monotonic()
                reinstated = owner.post(f"{licence}/reinstate", json={"reason": f"Finding {round_} closed"})
                assert reinstated.status_code == 200, reinstated.text
                changes.append(("granted", requested, time.monotonic()))
                assert buyer.get(rows).status_code == 200
        finally:
            stop.set()
            caller.join(timeout=20)
        buyer.close()
        owner.close()

    assert len(calls) > 50, "the program behind hardly called"
    checked = 0
    for sent, answered, status, code in calls:
        if any(requested < answered and done > sent for _state, requested, done in changes):
            continue  # sent while a change was on its way: it may go either way
        latest = [state for state, _requested, done in changes if done < sent]
        if latest and latest[-1] == "suspended":
            assert (status, code) == (403, "licence_suspended"), (sent, latest)
        else:
            assert status == 200, (sent, code, latest)
        checked += 1
    assert checked > 40
    assert {status for _s, _a, status, _c in calls} == {200, 403}
