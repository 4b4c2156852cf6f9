"""create_app(): composes every router, plugin and lifecycle hook of the platform."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from jinja2 import Environment
from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

import supervision.services
import supervision.tasks
from billing.api import BILLING_CONTROLLERS
from billing.services import usage as billing_usage
from billing.stripe_gateway import StripeGateway
from licensing.api import CONTROLLERS as LICENSING_CONTROLLERS
from marketplace.catalog import reactions as catalog_reactions
from marketplace.catalog.api import CONTROLLERS as CATALOG_CONTROLLERS
from marketplace.core import events
from marketplace.core.cache import create_cache
from marketplace.core.db import Database
from marketplace.core.health import HealthController
from marketplace.core.http import (
    EXCEPTION_HANDLERS,
    AuthenticationMiddleware,
    CsrfProtection,
    csrf_config,
    enforce_central_rules,
    provide_db_session,
    record_supervisory_reads,
)
from marketplace.core.identity.api import ApiClientController, AuthController, OAuthController, OrganisationController
from marketplace.core.identity.oauth import TokenServer
from marketplace.core.keys import load_signing_key
from marketplace.core.settings import Settings, load_settings
from marketplace.core.tasks import PERIODIC_JOBS, InProcessScheduler, configure_celery
from marketplace.delivery.api import CONTROLLERS as DELIVERY_CONTROLLERS
from marketplace.delivery.api import delivery_lifespan
from marketplace.delivery.services.billing_feed import DeliveryUsage
from marketplace.subscriptions.api import CONTROLLERS as SUBSCRIPTION_CONTROLLERS
from marketplace.web import i18n
from marketplace.web.billing_pages import BillingPageController
from marketplace.web.buyer_pages import BuyerPageController
from marketplace.web.catalog_pages import CatalogPageController
from marketplace.web.disclosure_pages import DisclosurePageController
from marketplace.web.ledger_pages import LedgerPageController
from marketplace.web.licensing_pages import LicensingPageController
from marketplace.web.operator_pages import OperatorPageController
from marketplace.web.pages import LocaleMiddleware, PageController, install_page_globals, prepare_error_page
from marketplace.web.supervision_alerts import SupervisionAlertsController
from marketplace.web.supervision_dashboard import SupervisionDashboardController
from marketplace.web.supervision_drill import SupervisionDrillController
from marketplace.web.supervision_pages import SupervisionPageController
from supervision.alerts_api import AlertController
from supervision.api import EngagementController, LedgerController
from supervision.dashboard_api import DashboardController
from supervision.disclosure_api import DisclosureController
from supervision.explorer_api import ExplorerController
from supervision.export_api import PeriodExportController
from supervision.findings_api import FindingController
from supervision.leak_api import LeakTraceController
from supervision.signing import load_ledger_signer
from supervision.trail_api import TrailController

WEB_DIR = Path(__file__).parent / "web"
log = logging.getLogger(__name__)
#: Every domain's task module, registered with Celery by the composition root.
DOMAIN_TASK_MODULES = [
    "supervision.tasks",
    "licensing.tasks",
    "marketplace.catalog.tasks",
    "marketplace.subscriptions.tasks",
    "marketplace.delivery.tasks",
    "billing.tasks",
]


def connect_domains() -> None:
    """Wire the domains together: every domain event core publishes goes to the ledger, in its transaction, the
    catalog follows listing decisions and licence changes, and billing reads metered use from delivery."""
    events.subscribe(supervision.services.record)
    supervision.services.watch_appends(supervision.tasks.queue_alert_rules_after_commit)
    events.subscribe(catalog_reactions.on_domain_event)
    billing_usage.use_source(DeliveryUsage())


def _jinja(engine: JinjaTemplateEngine) -> None:
    env: Environment = engine.engine
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(i18n.gettext_, i18n.ngettext_, newstyle=True)  # type: ignore[attr-defined]
    install_page_globals(env)


#: Whether this process moved its start-up objects out of the collector's way (once per process).
_FROZE_STARTUP_OBJECTS: list[bool] = []


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application from settings (read from ``MARKET_*`` variables when not given)."""
    settings = settings or load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    signing_key = load_signing_key(settings)
    token_server = TokenServer(
        signing_key=signing_key, issuer=settings.issuer, access_token_ttl=settings.access_token_ttl_seconds
    )
    ledger_signer = load_ledger_signer(settings)
    stripe_gateway = StripeGateway(settings) if settings.stripe_enabled else None
    connect_domains()
    configure_celery(settings, DOMAIN_TASK_MODULES)
    i18n.load_catalogues()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.db = Database(settings.resolved_database_url)
        app.state.cache = create_cache(settings.redis_url)
        scheduler = None
        if not settings.redis_url and settings.run_periodic_in_process:
            scheduler = InProcessScheduler(PERIODIC_JOBS)
            scheduler.start()
        app.state.scheduler = scheduler
        if not _FROZE_STARTUP_OBJECTS:
            # What start-up made (routes, schemas, templates, catalogues) lives as long as the process: out of the
            # collector's way, so that the full collections requests' garbage triggers do not walk it every time.
            gc.freeze()
            _FROZE_STARTUP_OBJECTS.append(True)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            await app.state.cache.close()
            await app.state.db.dispose()

    return Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            OrganisationController,
            ApiClientController,
            OAuthController,
            LedgerController,
            EngagementController,
            LeakTraceController,
            PeriodExportController,
            ExplorerController,
            DashboardController,
            FindingController,
            AlertController,
            DisclosureController,
            TrailController,
            *LICENSING_CONTROLLERS,
            *CATALOG_CONTROLLERS,
            *SUBSCRIPTION_CONTROLLERS,
            *DELIVERY_CONTROLLERS,
            *BILLING_CONTROLLERS,
            PageController,
            LedgerPageController,
            SupervisionPageController,
            SupervisionDashboardController,
            SupervisionDrillController,
            SupervisionAlertsController,
            LicensingPageController,
            CatalogPageController,
            BuyerPageController,
            OperatorPageController,
            BillingPageController,
            DisclosurePageController,
            create_static_files_router(path="/static", directories=[WEB_DIR / "static"], include_in_schema=False),
        ],
        dependencies={"db_session": Provide(provide_db_session)},
        before_send=[record_supervisory_reads],
        middleware=[
            DefineMiddleware(
                CsrfProtection, config=csrf_config(settings.secret_key.get_secret_value(), secure=settings.secure_cookies)
            ),
            AuthenticationMiddleware,
            LocaleMiddleware,
        ],
        guards=[enforce_central_rules],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        template_config=TemplateConfig(directory=WEB_DIR / "templates", engine=JinjaTemplateEngine, engine_callback=_jinja),
        openapi_config=OpenAPIConfig(
            title="Authorised data operation marketplace",
            version="0.1.0",
            description="Owner, operators, buyers, regulators and auditors on one verifiable ledger. "
            "Errors are RFC 9457 problem+json with a stable `code`.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024),
        state=State(
            {
                "settings": settings,
                "signing_key": signing_key,
                "token_server": token_server,
                "ledger_signer": ledger_signer,
                "prepare_error_page": prepare_error_page,
                # Stripe when configured (checkout, webhooks, refunds of its payments); bank transfer otherwise.
                "stripe_gateway": stripe_gateway,
                "refund_gateway": stripe_gateway,
            }
        ),
        lifespan=[lifespan, delivery_lifespan],  # delivery's runtime needs the database; its meter flushes first
        request_max_body_size=1024 * 1024,
        debug=False,
    )
