"""Every table of every domain, imported in one place for migrations and test set-up."""

from __future__ import annotations

from sqlmodel import SQLModel

from licensing import models as licensing_models
from marketplace.core.identity import models as identity_models
from supervision import models as supervision_models

__all__ = ["SQLModel", "identity_models", "licensing_models", "metadata", "supervision_models"]

metadata = SQLModel.metadata
