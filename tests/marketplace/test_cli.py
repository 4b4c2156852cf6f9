"""The `marketplace` command: migrate, demo (idempotent, exact accounts file), create-user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, func, select, text

from marketplace.app import create_app
from marketplace.core.http import CSRF_HEADER
from marketplace.core.identity.models import ApiClient, Organisation, User
from marketplace.core.principal import OrgKind
from marketplace.core.settings import Settings
from tests.conftest import TEST_ORIGIN
from tests.helpers import csrf, login


def _cli(*args: str, env: dict[str, str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marketplace.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        input=input_text,
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, engine: Engine) -> dict[str, str]:
    return {"MARKET_DATABASE_URL": database_url, "MARKET_VAR_DIR": str(tmp_path / "var"), "MARKET_ENV": "development"}


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(int(conn.execute(select(func.count()).select_from(m)).scalar_one()) for m in (Organisation, User, ApiClient))  # type: ignore[return-value]


def test_migrate_on_a_fresh_sqlite_file_then_again(tmp_path: Path) -> None:
    env = {"MARKET_VAR_DIR": str(tmp_path / "var"), "MARKET_ENV": "development"}
    env.pop("MARKET_DATABASE_URL", None)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "marketplace.cli", "migrate"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
    assert (tmp_path / "var" / "market.db").exists()


def test_demo_is_idempotent_and_writes_the_accounts_file(cli_env: dict[str, str], engine: Engine, settings: Settings) -> None:
    first = _cli("demo", env=cli_env)
    assert first.returncode == 0, first.stderr
    counts = _counts(engine)
    accounts_path = Path(cli_env["MARKET_VAR_DIR"]) / "demo-accounts.json"
    data = json.loads(accounts_path.read_text(encoding="utf-8"))
    second = _cli("demo", "--quiet", env=cli_env)
    assert second.returncode == 0, second.stderr
    assert _counts(engine) == counts, "running the demo again must create nothing"
    assert json.loads(accounts_path.read_text(encoding="utf-8")) == data, "the demo is the same every time"
    assert oct(accounts_path.stat().st_mode & 0o777) == "0o600"

    assert set(data) == {"accounts", "clients"}
    assert all(set(a) == {"email", "password", "org", "kind", "role"} for a in data["accounts"])
    assert all(set(c) == {"org", "client_id", "client_secret"} for c in data["clients"])
    kinds = {a["kind"] for a in data["accounts"]}
    assert kinds == {k.value for k in OrgKind}
    buyers = {a["org"] for a in data["accounts"] if a["kind"] == "buyer"}
    assert len(buyers) >= 3
    assert {c["org"] for c in data["clients"]} == buyers
    assert len({a["org"] for a in data["accounts"] if a["kind"] == "operator"}) >= 2
    for account in data["accounts"]:
        assert account["email"] in first.stdout
        assert account["password"] in first.stdout

    # Billing: six months of payments by both methods, a refund, a renewal left unpaid, and statements.
    with engine.connect() as conn:
        gateways = set(conn.execute(text("SELECT DISTINCT gateway FROM payment")).scalars())
        months = conn.execute(text("SELECT count(DISTINCT period) FROM settlement_statement")).scalar_one()
        statuses = set(conn.execute(text("SELECT DISTINCT status FROM settlement_statement")).scalars())
        refunds = conn.execute(text("SELECT count(*) FROM refund")).scalar_one()
        past_due = conn.execute(text("SELECT count(*) FROM subscription WHERE status = 'past_due'")).scalar_one()
        overdue = conn.execute(text("SELECT count(*) FROM invoice WHERE status = 'overdue' AND kind = 'renewal'")).scalar_one()
        usage_invoices = conn.execute(text("SELECT count(*) FROM invoice WHERE kind = 'usage'")).scalar_one()
    assert gateways == {"invoice", "stripe"}
    assert months >= 6
    assert {"acknowledged", "issued"} <= statuses
    assert (refunds, past_due, overdue) == (1, 1, 1)
    assert usage_invoices >= 1
    # Supervision: the audit firm's engagement and a finding in progress, with its evidence in the ledger.
    with engine.connect() as conn:
        engagements = conn.execute(text("SELECT count(*) FROM engagement WHERE revoked_at IS NULL")).scalar_one()
        finding = conn.execute(text("SELECT status, evidence_json FROM finding")).one()
        suspended = (
            conn.execute(text("SELECT leaf_index FROM ledger_entry WHERE event_type = 'licence.suspended'")).scalars().all()
        )
    assert engagements == 1
    assert finding[0] == "responded"
    assert set(json.loads(finding[1])) <= set(suspended)
    assert json.loads(finding[1])

    # Every demo account signs in, and every buyer's client gets a token that /api/me accepts.
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        for account in data["accounts"]:
            response = login(client, account["email"], account["password"])
            assert response.status_code == 200, account
            assert response.json()["org"]["kind"] == account["kind"]
        for made in data["clients"]:
            token = client.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made["client_id"], made["client_secret"])
            )
            assert token.status_code == 200, made
            me = client.get("/api/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            assert me.json()["org"]["name"] == made["org"]
        # The file left as "leaked" is traced back to the demo buyer it was exported for.
        leaked = Path(cli_env["MARKET_VAR_DIR"]) / "demo-leaked-export.csv"
        assert str(leaked) in first.stdout
        regulator = next(a for a in data["accounts"] if a["kind"] == "regulator")
        login(client, regulator["email"], regulator["password"])
        traced = client.post("/api/supervision/leak-trace", content=leaked.read_bytes(), headers={CSRF_HEADER: csrf(client)})
        assert traced.status_code == 200, traced.text
        assert traced.json()["found"] is True
        assert traced.json()["buyer_name"] in buyers


def test_demo_is_refused_in_production(cli_env: dict[str, str]) -> None:
    env = {
        **cli_env,
        "MARKET_ENV": "production",
        "MARKET_SECRET_KEY": "s" * 40,
        "MARKET_JWT_PRIVATE_KEY": "pem",
        "MARKET_LEDGER_PRIVATE_KEY": "pem",
        "MARKET_PSEUDONYM_KEY": "p" * 40,
        "MARKET_PUBLIC_URL": "https://market.example.cn",
        "MARKET_DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
    }
    done = _cli("demo", env=env)
    assert done.returncode != 0
    assert "production" in done.stderr


def test_create_user_creates_org_and_user_that_can_sign_in(cli_env: dict[str, str], settings: Settings, engine: Engine) -> None:
    done = _cli(
        "create-user",
        "--org",
        "Westlake Data Bureau",
        "--kind",
        "owner",
        "--email",
        "Chief@Westlake.test-market.cn",
        "--name",
        "Chief",
        "--password",
        "a long enough password",
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr
    assert "chief@westlake.test-market.cn" in done.stdout
    with TestClient(app=create_app(settings), base_url=TEST_ORIGIN) as client:
        response = login(client, "chief@westlake.test-market.cn", "a long enough password")
        assert response.status_code == 200
        assert response.json()["org"]["kind"] == "owner"
        assert response.json()["user"]["role"] == "admin"
    again = _cli(
        "create-user",
        "--org",
        "Westlake Data Bureau",
        "--email",
        "chief@westlake.test-market.cn",
        "--name",
        "Chief",
        "--password",
        "a long enough password",
        env=cli_env,
    )
    assert again.returncode != 0
    assert "already exists" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "Nowhere", "--email", "a@b.test-market.cn", "--name", "A", "--password", "a long enough password"], "--kind"),
        (
            ["--org", "X", "--kind", "buyer", "--email", "not-an-email", "--name", "A", "--password", "a long enough password"],
            "email",
        ),
        (["--org", "X", "--kind", "buyer", "--email", "a@b.test-market.cn", "--name", "A", "--password", "short"], "password"),
        (
            [
                "--org",
                "X",
                "--kind",
                "emperor",
                "--email",
                "a@b.test-market.cn",
                "--name",
                "A",
                "--password",
                "a long enough password",
            ],
            "kind",
        ),
    ],
)
def test_create_user_rejects_bad_input_and_writes_nothing(
    cli_env: dict[str, str], engine: Engine, args: list[str], message: str
) -> None:
    done = _cli("create-user", *args, env=cli_env)
    assert done.returncode != 0
    assert message in done.stderr
    assert _counts(engine) == (0, 0, 0)


def test_settings_refuse_defaults_in_production() -> None:
    with pytest.raises(ValueError) as refused:
        Settings(env="production")  # type: ignore[arg-type]
    text = str(refused.value)
    for variable in (
        "MARKET_SECRET_KEY",
        "MARKET_JWT_PRIVATE_KEY",
        "MARKET_LEDGER_PRIVATE_KEY",
        "MARKET_PSEUDONYM_KEY",
        "MARKET_PUBLIC_URL",
        "MARKET_DATABASE_URL",
    ):
        assert variable in text


def test_settings_embedded_default_needs_nothing() -> None:
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.resolved_database_url.startswith("sqlite:///")
    assert default.resolved_database_url.endswith("var/market.db")
