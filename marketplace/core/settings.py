"""The one settings class of the platform, read from ``MARKET_*`` environment variables.

Settings are read when the application (or a command) is created, never at import time, so
tests and tools can build apps with different settings in one process.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "development-only-secret-key-change-me"  # noqa: S105 - the known default, refused in production


class Environment(StrEnum):
    """Where the platform runs; production refuses insecure defaults."""

    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    """All configuration. The embedded default (no variable set) runs on SQLite under ./var."""

    model_config = SettingsConfigDict(env_prefix="MARKET_", extra="ignore")

    env: Environment = Environment.development
    var_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None, description="sqlite:///path or postgresql://user:pass@host/db; default SQLite under var_dir"
    )
    redis_url: str | None = Field(default=None, description="Redis for tasks, cache and throttles; in-process if unset")
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    jwt_private_key: SecretStr | None = Field(
        default=None, description="PEM private key (EC P-256) signing access tokens; generated under var_dir if unset"
    )
    ledger_private_key: SecretStr | None = Field(
        default=None, description="PEM Ed25519 key signing ledger checkpoints; generated under var_dir if unset"
    )
    data_dir: Path | None = Field(default=None, description="Folder of data resource contents (Parquet); default var_dir/data")
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Secret key of the keyed hashing that pseudonymises direct identifiers (at least 32 characters); "
        "generated under var_dir if unset",
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024, description="Largest accepted resource upload")
    max_proof_bytes: int = Field(default=10 * 1024**2, ge=1024, description="Largest accepted proof of a purpose (PDF, image)")
    delivery_rate_per_second: float = Field(default=20.0, gt=0, description="Sustained delivery calls per second per client")
    delivery_burst: int = Field(default=40, ge=1, description="Delivery calls a client may make at once before the rate applies")
    delivery_access_lease: bool = Field(
        default=True,
        description="PostgreSQL: keep delivery access answers under a per-process lease (LISTEN/NOTIFY on a direct "
        "connection; turn off behind a pooler in transaction mode, and every call reads its access state)",
    )
    export_link_ttl_seconds: int = Field(default=900, ge=30, le=86400, description="How long a signed export link works")
    sandbox_timeout_seconds: float = Field(default=5.0, gt=0, le=300, description="Longest a sandbox query may run")
    sandbox_memory_mb: int = Field(default=512, ge=64, description="Memory a sandbox query may use")
    ledger_origin: str = Field(default="", description="Checkpoint origin line; defaults to the public host + /ledger")
    public_url: str = Field(default="", description="Public base URL, used as the OAuth issuer")
    host: str = "127.0.0.1"
    port: int = 8000
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    session_ttl_seconds: int = Field(default=12 * 3600, ge=300)
    cookie_secure: bool | None = Field(default=None, description="Secure flag on cookies; on by default in production")
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=15 * 60, ge=1)
    default_locale: str = "en"
    run_periodic_in_process: bool = Field(default=True, description="Without Redis, run periodic jobs inside the web process")
    stripe_api_key: SecretStr | None = Field(
        default=None, description="Stripe secret key (sk_test_... or sk_live_...); Stripe is offered when set"
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of the Stripe webhook endpoint (whsec_...)"
    )
    stripe_api_base: str | None = Field(default=None, description="Another address for Stripe's API (tests run a loopback one)")
    invoice_due_days: int = Field(default=14, ge=1, le=120, description="Days a buyer has to pay an invoice by bank transfer")
    renewal_notice_days: int = Field(
        default=7, ge=1, le=60, description="Days before a period ends that its renewal invoice is issued"
    )

    @model_validator(mode="after")
    def _refuse_defaults_in_production(self) -> Settings:
        if self.env is Environment.production:
            problems = []
            if self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY or len(self.secret_key.get_secret_value()) < 32:
                problems.append("MARKET_SECRET_KEY must be set to a random value of at least 32 characters")
            if self.jwt_private_key is None:
                problems.append("MARKET_JWT_PRIVATE_KEY must hold the PEM key that signs access tokens")
            if self.ledger_private_key is None:
                problems.append("MARKET_LEDGER_PRIVATE_KEY must hold the PEM Ed25519 key that signs ledger checkpoints")
            if self.pseudonym_key is None or len(self.pseudonym_key.get_secret_value()) < 32:
                problems.append("MARKET_PSEUDONYM_KEY must hold a random key of at least 32 characters")
            if not self.public_url.startswith("https://"):
                problems.append("MARKET_PUBLIC_URL must be the https:// address of the platform")
            if self.database_url is None or self.database_url.startswith("sqlite"):
                problems.append("MARKET_DATABASE_URL must point at PostgreSQL")
            if self.stripe_api_key is not None and self.stripe_webhook_secret is None:
                problems.append("MARKET_STRIPE_WEBHOOK_SECRET must be set with MARKET_STRIPE_API_KEY")
            if problems:
                raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def stripe_enabled(self) -> bool:
        """Whether Stripe is offered as a payment method."""
        return self.stripe_api_key is not None

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{(self.var_dir / 'market.db').resolve()}"

    @property
    def resolved_data_dir(self) -> Path:
        """Where resource contents are stored."""
        return self.data_dir or self.var_dir / "data"

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies carry the Secure flag."""
        return self.cookie_secure if self.cookie_secure is not None else self.env is Environment.production

    @property
    def checkpoint_origin(self) -> str:
        """The origin line of ledger checkpoints (c2sp.org/tlog-checkpoint): a schema-less URL prefix."""
        if self.ledger_origin:
            return self.ledger_origin
        return self.issuer.split("://", 1)[-1] + "/ledger"

    @property
    def issuer(self) -> str:
        """OAuth issuer identifier (RFC 8414): the public URL without trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (used by tests and commands)."""
    return Settings(**overrides)  # type: ignore[arg-type]
