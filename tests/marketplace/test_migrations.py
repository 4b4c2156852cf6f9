"""Alembic migrations: they build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from marketplace.core.db import create_sync_engine
from marketplace.migrations import downgrade, upgrade
from marketplace.migrations.env_filters import include_name
from marketplace.models import metadata


def test_migrations_match_the_models(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    engine = create_sync_engine(fresh_database_url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "include_name": include_name}
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: write a migration ({diff})"


def test_downgrade_to_base_and_upgrade_again(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    downgrade(fresh_database_url, "base")
    engine = create_sync_engine(fresh_database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(fresh_database_url)
        assert {"organisation", "user_account", "api_client", "login_session", "revoked_access_token"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
