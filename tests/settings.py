"""Which database (and whether Redis) the suite runs on, from MARKET_TEST_* variables."""

from __future__ import annotations

import os


def database_profile() -> str:
    """'sqlite' (embedded profile, default) or 'postgres' (production profile, with Redis)."""
    profile = os.environ.get("MARKET_TEST_DATABASE", "sqlite")
    if profile not in {"sqlite", "postgres"}:
        raise RuntimeError(f"MARKET_TEST_DATABASE must be 'sqlite' or 'postgres', not {profile!r}")
    return profile


def postgres_admin_url() -> str:
    """URL of the private PostgreSQL server started by deploy/with_services.py."""
    url = os.environ.get("MARKET_TEST_POSTGRES_URL")
    if not url:
        raise RuntimeError(
            "MARKET_TEST_DATABASE=postgres needs MARKET_TEST_POSTGRES_URL: run the suite through `make test` "
            "(deploy/with_services.py starts a private PostgreSQL)"
        )
    return url


def redis_url() -> str | None:
    """URL of the private Redis server, when one was started."""
    return os.environ.get("MARKET_TEST_REDIS_URL") or None
