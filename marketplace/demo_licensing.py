"""The licensing part of the demo province: departments, six graded resources with generated contents,
licences to the two operators (one suspended and reinstated, one suspended now), and listing reviews
approved, pending and rejected. Everything goes through the licensing services, so the ledger holds
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
from licensing.schemas import DepartmentCreate, LicenceCreate, ListingSubmission, ResourceCreate
from licensing.services import licences, resources, reviews
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


def _rules(keep: list[str], **special: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"field": name, "action": "keep"} for name in keep] + [{"field": name, **rule} for name, rule in special.items()]


async def seed_licensing(session: AsyncSession, settings: Settings, people: dict[str, Principal], seed: int) -> dict[str, Any]:
    """Create the licensing demo when it is missing; ``people`` maps "authority", "reviewer", "harbour", "summit"."""
    owner, reviewer, harbour, summit = people["authority"], people["reviewer"], people["harbour"], people["summit"]
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

    async def submit(
        operator: Principal, licence_id: uuid.UUID, name: str, code: str, mode: DeliveryMode, **body: Any
    ) -> uuid.UUID:
        submission = ListingSubmission.model_validate(
            {"licence_id": licence_id, "product_name": name, "mode": mode, "resource_id": ids[code], **body}
        )
        return (await reviews.submit_for_listing(session, operator, settings, submission)).id

    enterprise_fields = [f.name for f in RESOURCES[0].fields]
    credit = await submit(
        harbour,
        harbour_licence,
        "Enterprise credit profile API",
        "enterprise-registry",
        DeliveryMode.api,
        rules=_rules(enterprise_fields),
        purposes=[Purpose.credit_assessment, Purpose.market_analysis],
        plans=[
            {"type": "monthly", "price": "1800.00", "name": "Standard"},
            {"type": "metered", "price": "0.05", "name": "Pay per call"},
        ],
    )
    await reviews.approve(session, reviewer, settings, credit, "Public registry data; checks passed; prices within the caps")
    traffic = await submit(
        harbour,
        harbour_licence,
        "Traffic flow hourly file",
        "traffic-flow",
        DeliveryMode.file,
        rules=_rules(["sensor_id", "road", "district", "hour", "vehicles", "avg_speed_kmh", "congestion_index"]),
        purposes=[Purpose.logistics_planning, Purpose.public_welfare],
        plans=[
            {"type": "one_off", "price": "6000.00", "name": "Quarter extract"},
            {"type": "free", "price": "0", "name": "Public welfare"},
        ],
    )
    await reviews.approve(session, reviewer, settings, traffic, "Aggregated sensor data without personal information")
    visits = await submit(
        summit,
        summit_licence,
        "Outpatient visits research sandbox",
        "outpatient-visits",
        DeliveryMode.sandbox,
        rules=_rules(
            ["sex", "district", "visit_date", "clinic", "diagnosis_code", "cost"],
            id_number={"action": "drop"},
            patient_name={"action": "drop"},
            phone={"action": "pseudonymise"},
            birth_date={"action": "generalise", "method": "year"},
            postcode={"action": "generalise", "method": "suppress"},
        ),
        purposes=[Purpose.academic_research, Purpose.healthcare_management],
        plans=[{"type": "monthly", "price": "6000.00", "name": "Research seat"}],
    )
    await reviews.approve(
        session,
        reviewer,
        settings,
        visits,
        "L3 data in the sandbox only; identifiers removed; k-anonymity above the licence's minimum",
    )
    await submit(
        harbour,
        harbour_licence,
        "Property market by district",
        "property-transactions",
        DeliveryMode.api,
        rules=_rules(
            ["transaction_id", "district", "area_sqm", "total_price", "price_per_sqm", "deal_date"],
            buyer_id_number={"action": "pseudonymise"},
            buyer_age={"action": "generalise", "method": "bucket", "size": 20},
        ),
        purposes=[Purpose.market_analysis],
        plans=[{"type": "monthly", "price": "2500.00", "name": "Analyst"}],
    )  # left pending: the reviewer's queue has work
    air = await submit(
        summit,
        summit_licence,
        "Air quality alerts feed",
        "air-quality",
        DeliveryMode.api,
        rules=_rules(["station_id", "district", "measured_at", "pm25", "pm10", "aqi"]),
        purposes=[Purpose.environmental_monitoring],
        plans=[{"type": "monthly", "price": "900.00", "name": "Alerts"}],
    )
    await reviews.reject(
        session, reviewer, air, "The product description promises real-time alerts the three-hourly source cannot give"
    )
    summit_road = await submit(
        summit,
        summit_traffic,
        "Congestion index API",
        "traffic-flow",
        DeliveryMode.api,
        rules=_rules(["road", "district", "hour", "congestion_index"]),
        purposes=[Purpose.urban_planning],
        plans=[{"type": "metered", "price": "0.10", "name": "Per call"}],
    )
    await reviews.approve(session, reviewer, settings, summit_road, "Checks passed")

    await licences.suspend_licence(
        session,
        owner,
        summit_traffic,
        "Volume cap exceeded three months running; suspended pending the operator's remediation plan",
    )
    return {"created": True, "licences": [str(harbour_licence), str(summit_licence), str(summit_traffic)]}
