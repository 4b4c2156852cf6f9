"""Alembic environment: runs migrations with the sync driver of the configured database."""

from __future__ import annotations

from alembic import context

from marketplace.core.db import create_sync_engine, is_sqlite
from marketplace.migrations.env_filters import include_name
from marketplace.models import metadata

config = context.config
url: str = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") or ""
if not url:
    from marketplace.core.settings import load_settings

    url = load_settings().resolved_database_url


def run_migrations_online() -> None:
    """Run every pending migration in one transaction per migration."""
    engine = create_sync_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=is_sqlite(url),
            compare_type=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
