"""The ``marketplace`` command: serve, worker, migrate, demo, create-user."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from typing import Any

import click

from marketplace.core.db import Database
from marketplace.core.errors import DomainError
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Environment, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _run_in_session(settings: Settings, work: Any) -> Any:
    from marketplace.app import connect_domains

    connect_domains()

    async def main() -> Any:
        database = Database(settings.resolved_database_url, pool_size=2)
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(main())


@click.group()
def main() -> None:
    """Authorised data operation marketplace."""


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from marketplace.migrations import upgrade

    settings = _settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo(f"database is up to date ({settings.resolved_database_url.split('@')[-1]})")


@main.command()
@click.option("--quiet", is_flag=True, help="Do not print the accounts.")
def demo(quiet: bool) -> None:
    """Seed the demo province (idempotent) and write var/demo-accounts.json."""
    from marketplace.demo import seed_demo, write_accounts

    settings = _settings()
    if settings.env is Environment.production:
        raise click.ClickException("the demo has published passwords and is refused in production")
    from supervision.services import sign_checkpoint
    from supervision.signing import load_ledger_signer

    signer = load_ledger_signer(settings)

    async def seed_and_sign(session: Any) -> Any:
        seeded = await seed_demo(session, settings)
        await sign_checkpoint(session, signer)
        return seeded

    data = _run_in_session(settings, seed_and_sign)
    path = settings.var_dir / "demo-accounts.json"
    write_accounts(path, data)
    if quiet:
        return
    click.echo(f"\nDemo accounts (also in {path}):")
    for account in data["accounts"]:
        click.echo(f"  {account['kind']:<9} {account['role']:<6} {account['email']:<48} {account['password']}")
    click.echo("\nBuyers' API clients (POST /oauth/token, client credentials):")
    for client in data["clients"]:
        click.echo(f"  {client['org']:<36} {client['client_id']}  {client['client_secret']}")
    leaked = settings.var_dir / "demo-leaked-export.csv"
    if leaked.exists():
        click.echo(f"\nA file exported for a demo buyer, to trace on /supervision/exports: {leaked}")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default MARKET_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default MARKET_PORT or 8000).")
@click.option("--workers", default=1, show_default=True, help="Web worker processes.")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the web application and API."""
    import uvicorn

    settings = _settings()
    host, port = host or settings.host, port or settings.port
    # The app factory reads settings again in each worker: pass the chosen address on.
    os.environ["MARKET_HOST"], os.environ["MARKET_PORT"] = host, str(port)
    click.echo(f"serving on http://{host}:{port}/  (sign in at /login, API reference at /schema)")
    uvicorn.run(
        "marketplace.app:create_app", factory=True, host=host, port=port, workers=workers, proxy_headers=True, log_level="info"
    )


@main.command()
@click.option("--concurrency", default=2, show_default=True)
def worker(concurrency: int) -> None:
    """Run a Celery worker with the periodic scheduler (needs MARKET_REDIS_URL)."""
    from marketplace.core.tasks import configure_celery

    settings = _settings()
    if not settings.redis_url:
        raise click.ClickException("set MARKET_REDIS_URL: without Redis, tasks and periodic jobs run inside `marketplace serve`")
    from marketplace.app import DOMAIN_TASK_MODULES, connect_domains

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    connect_domains()
    app = configure_celery(settings, DOMAIN_TASK_MODULES)
    app.worker_main(
        [
            "worker",
            "--beat",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--schedule=" + str(settings.var_dir / "celerybeat-schedule"),
        ]
    )


@main.command("create-user")
@click.option("--org", "org_name", required=True, help="Organisation name (created if missing, with --kind).")
@click.option("--kind", type=click.Choice([k.value for k in OrgKind]), help="Party of a new organisation.")
@click.option("--email", required=True)
@click.option("--name", "display_name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.admin.value, show_default=True)
@click.option("--password", default=None, help="Read from a prompt when not given.")
def create_user(org_name: str, kind: str | None, email: str, display_name: str, role: str, password: str | None) -> None:
    """Create a user (and its organisation when missing)."""
    from pydantic import ValidationError

    from marketplace.core.identity import services
    from marketplace.core.identity.schemas import UserCreate

    settings = _settings()
    if password is None:
        password = getpass.getpass("Password (at least 12 characters): ")
    try:
        data = UserCreate(email=email, display_name=display_name, role=Role(role), password=password)
    except ValidationError as exc:
        raise click.ClickException("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc

    async def work(session: Any) -> str:
        org = await services.find_organisation(session, org_name)
        if org is None:
            if kind is None:
                raise click.ClickException(f"no organisation {org_name!r}; give --kind to create it")
            org = await services.create_organisation(session, name=org_name, kind=OrgKind(kind))
        user = await services.add_user(session, org_id=org.id, data=data)
        return f"created {user.email} ({user.role}) in {org.name} ({org.kind})"

    try:
        click.echo(_run_in_session(settings, work))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc


if __name__ == "__main__":
    sys.exit(main())
