"""What an auditor may read of the licensing records: only inside its firm's engagements in force (DESIGN.md §2).

A licence is covered when its operator is one an engagement in force covers and its term overlaps that
engagement's period; a listing review, when its licence is covered; a data resource (and its department), when a
covered licence names it. An auditor with no engagement in force is refused every licensing read, and an auditor
asking for one record outside its engagements is refused (403 ``outside_engagement``); both refusals are recorded in
the ledger (``records.read_refused``) by :mod:`supervision.engagements`.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import and_, col, select

from licensing.models import Licence, LicenceResource
from marketplace.core.principal import Principal
from supervision.auditor_reads import is_auditor, record_path, refuse_record, require_engagement
from supervision.engagements import spans_in_force

__all__ = ["covered_licence_ids", "covered_resource_ids", "is_auditor", "record_path", "refuse_record", "require_engagement"]


def covered_licence_ids(principal: Principal) -> Any:
    """A select of the ids of the licences the auditor's engagements in force cover."""
    spans = spans_in_force(principal.org_id)
    return (
        select(Licence.id)
        .join(spans, col(spans.c.operator_id) == col(Licence.operator_id))
        .where(and_(col(Licence.starts_on) <= spans.c.period_end, col(Licence.ends_on) >= spans.c.period_start))
    )


def covered_resource_ids(principal: Principal) -> Any:
    """A select of the ids of the data resources named by the licences the auditor's engagements cover."""
    return select(LicenceResource.resource_id).where(col(LicenceResource.licence_id).in_(covered_licence_ids(principal)))
