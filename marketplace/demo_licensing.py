"""The licensing part of the demo province: departments, six graded resources with generated contents, and
licences to the two operators (one suspended and reinstated). Products and their listing reviews come with the
catalog demo (``marketplace.demo_catalog``). Everything goes through the licensing services, so the ledger holds
every step. Runs once: it does nothing when the owner already has departments.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode, PlanType, Purpose
from licensing.schemas import DepartmentCreate, LicenceCreate, ResourceCreate
from licensing.services import licences, resources
from licensing.storage import local_store
from marketplace.core.identity.models import Organisation, User
from marketplace.core.principal import Principal
from marketplace.core.settings import Settings
from marketplace.demo_data import DEPARTMENTS, RESOURCES, write_csv


def principal_of(org: Organisation, user: User) -> Principal:
    """The demo acts as a person of the organisation, as if signed in."""
    return Principal(
        org_id=org.id,
        org_kind=org.kind,
        org_name=org.name,
        org_name_zh=org.name_zh,
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=user.role,
    )


async def seed_licensing(session: AsyncSession, settings: Settings, people: dict[str, Principal], seed: int) -> dict[str, Any]:
    """Create the licensing demo when it is missing; ``people`` maps "authority", "reviewer", "harbour", "summit"."""
    owner, harbour, summit = people["authority"], people["harbour"], people["summit"]
    if await resources.list_departments(session, owner):
        return {"created": False}
    departments = {}
    for department in DEPARTMENTS:
        made = await resources.create_department(
            session, owner, DepartmentCreate(code=department.code, name=department.name, name_zh=department.name_zh)
        )
        departments[department.code] = made.id
    store = local_store(settings.resolved_data_dir)
    ids: dict[str, uuid.UUID] = {}
    with tempfile.TemporaryDirectory() as folder:
        for demo in RESOURCES:
            resource = await resources.register_resource(
                session,
                owner,
                ResourceCreate(
                    department_id=departments[demo.department],
                    code=demo.code,
                    title=demo.title,
                    title_zh=demo.title_zh,
                    description=demo.description,
                    description_zh=demo.description_zh,
                    grade=demo.grade,
                    update_frequency=demo.update_frequency,
                    fields=list(demo.fields),
                ),
            )
            ids[demo.code] = resource.id
            source = Path(folder) / f"{demo.code}.csv"
            write_csv(demo, source, seed)

            async def receive(path: Path, source: Path = source) -> None:
                shutil.copyfile(source, path)

            await resources.upload_version(session, owner, resource.id, source_format="csv", receive=receive, store=store)

    today = date.today()
    start = today - timedelta(days=180)

    async def licence(operator: Principal, codes: list[str], **terms: Any) -> uuid.UUID:
        body = LicenceCreate.model_validate(
            {
                "operator_id": operator.org_id,
                "resource_ids": [ids[c] for c in codes],
                "starts_on": start,
                "ends_on": start + timedelta(days=3 * 365),
                "territory": "Riverside Province",
                "reason": "Franchise tender 2026-03, lot awarded by the data authority's board",
                **terms,
            }
        )
        created = await licences.create_licence(session, owner, body)
        await licences.grant_licence(
            session, owner, created.id, "Granted after the tender award and the operator's security review"
        )
        return created.id

    harbour_licence = await licence(
        harbour,
        ["enterprise-registry", "traffic-flow", "property-transactions", "air-quality"],
        purposes=[Purpose.credit_assessment, Purpose.logistics_planning, Purpose.market_analysis, Purpose.public_welfare],
        modes=[DeliveryMode.api, DeliveryMode.file, DeliveryMode.sandbox],
        price_caps={PlanType.free: "0", PlanType.one_off: "20000", PlanType.monthly: "5000", PlanType.metered: "0.50"},
        volume_caps={"rows_per_month": 5_000_000, "calls_per_month": 500_000},
        fee_rate="0.12",
        reductions={Purpose.public_welfare: 100},
    )
    summit_licence = await licence(
        summit,
        ["outpatient-visits", "air-quality"],
        purposes=[
            Purpose.academic_research,
            Purpose.healthcare_management,
            Purpose.environmental_monitoring,
            Purpose.public_welfare,
        ],
        modes=[DeliveryMode.sandbox, DeliveryMode.api],
        price_caps={PlanType.free: "0", PlanType.monthly: "8000", PlanType.metered: "2.00"},
        volume_caps={"rows_per_month": 1_000_000, "calls_per_month": 100_000},
        min_k=5,
        fee_rate="0.10",
        reductions={Purpose.academic_research: 50, Purpose.public_welfare: 100},
    )
    summit_traffic = await licence(
        summit,
        ["traffic-flow"],
        purposes=[Purpose.logistics_planning, Purpose.urban_planning],
        modes=[DeliveryMode.api, DeliveryMode.file],
        price_caps={PlanType.monthly: "3000", PlanType.metered: "0.20"},
        fee_rate="0.15",
    )

    await licences.suspend_licence(session, owner, harbour_licence, "Quarterly audit: delivery logs missing for two weeks")
    await licences.reinstate_licence(session, owner, harbour_licence, "Delivery logs restored and verified by the auditor")

    return {
        "created": True,
        "resources": ids,
        "licences": {"harbour": harbour_licence, "summit": summit_licence, "summit_traffic": summit_traffic},
    }
