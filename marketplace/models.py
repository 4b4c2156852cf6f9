"""Every table of every domain, imported in one place for migrations and test set-up."""

from __future__ import annotations

from sqlmodel import SQLModel

from billing import models as billing_models
from licensing import models as licensing_models
from marketplace.catalog import models as catalog_models
from marketplace.core.identity import models as identity_models
from marketplace.delivery import models as delivery_models
from marketplace.subscriptions import models as subscription_models
from supervision import explorer as supervision_explorer
from supervision import findings as supervision_findings
from supervision import models as supervision_models
from supervision import rollup as supervision_rollup

__all__ = [
    "SQLModel",
    "billing_models",
    "catalog_models",
    "delivery_models",
    "identity_models",
    "licensing_models",
    "metadata",
    "subscription_models",
    "supervision_explorer",
    "supervision_findings",
    "supervision_models",
    "supervision_rollup",
]

metadata = SQLModel.metadata
