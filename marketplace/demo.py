"""The demo province (DESIGN.md §9): organisations of every party, their people and buyers' API clients.

Deterministic (fixed seed) and idempotent: running it again creates only what is missing and writes
the same ``var/demo-accounts.json``. Later domains extend it with their records.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.identity import services as identity
from marketplace.core.identity.schemas import CLIENT_SCOPES, UserCreate
from marketplace.core.principal import OrgKind, Principal, Role
from marketplace.core.settings import Settings
from marketplace.demo_catalog import seed_catalog
from marketplace.demo_leak import seed_leaked_export
from marketplace.demo_licensing import principal_of, seed_licensing
from marketplace.demo_supervision import seed_supervision

SEED = 20261122


@dataclass(frozen=True)
class DemoOrg:
    key: str
    name: str
    name_zh: str
    kind: OrgKind
    domain: str
    members: tuple[tuple[str, str, Role], ...]


DEMO_ORGS: tuple[DemoOrg, ...] = (
    DemoOrg(
        "authority",
        "Riverside Provincial Data Authority",
        "河畔省数据局",
        OrgKind.owner,
        "data-authority.demo-province.cn",
        (("admin", "Lin Wei", Role.admin), ("reviewer", "Zhou Min", Role.member)),
    ),
    DemoOrg(
        "harbour",
        "Harbour Data Operations Co.",
        "港湾数据运营有限公司",
        OrgKind.operator,
        "harbour-data.demo-province.cn",
        (("admin", "Chen Jie", Role.admin), ("products", "Wang Fang", Role.member)),
    ),
    DemoOrg(
        "summit",
        "Summit Analytics Ltd.",
        "峰顶数据分析有限公司",
        OrgKind.operator,
        "summit-analytics.demo-province.cn",
        (("admin", "Liu Yang", Role.admin),),
    ),
    DemoOrg(
        "eastgate",
        "Eastgate Credit Services",
        "东门征信服务公司",
        OrgKind.buyer,
        "eastgate-credit.demo-province.cn",
        (("admin", "Zhang Li", Role.admin), ("dev", "Huang Lei", Role.member)),
    ),
    DemoOrg(
        "northwind",
        "Northwind Logistics",
        "北风物流",
        OrgKind.buyer,
        "northwind-logistics.demo-province.cn",
        (("admin", "Zhao Qiang", Role.admin),),
    ),
    DemoOrg(
        "lakeside",
        "Lakeside Health Research Institute",
        "湖畔健康研究院",
        OrgKind.buyer,
        "lakeside-health.demo-province.cn",
        (("admin", "Sun Yue", Role.admin),),
    ),
    DemoOrg(
        "supervision",
        "Provincial Data Supervision Office",
        "省数据监管办公室",
        OrgKind.regulator,
        "supervision.demo-province.cn",
        (("inspector", "Ma Jun", Role.admin),),
    ),
    DemoOrg(
        "clearview",
        "Clearview Assurance LLP",
        "明鉴会计师事务所",
        OrgKind.auditor,
        "clearview-assurance.demo-province.cn",
        (("auditor", "Gao Ping", Role.admin),),
    ),
)


def _password(rng: random.Random) -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "demo-" + "".join(rng.choice(alphabet) for _ in range(12))


def _token(rng: random.Random, prefix: str, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


async def seed_demo(session: AsyncSession, settings: Settings | None = None) -> dict[str, Any]:
    """Create whatever of the demo is missing; return the accounts and client credentials.

    With ``settings`` (where resource contents are stored), also the licensing demo: departments,
    resources with generated contents, licences and listing reviews.
    """
    rng = random.Random(SEED)  # noqa: S311 - the demo is deliberately reproducible; refused in production
    accounts: list[dict[str, str]] = []
    clients: list[dict[str, str]] = []
    people: dict[str, Principal] = {}
    supervisors: dict[str, Principal] = {}
    for demo in DEMO_ORGS:
        org = await identity.find_organisation(session, demo.name)
        if org is None:
            org = await identity.create_organisation(session, name=demo.name, kind=demo.kind, name_zh=demo.name_zh)
        admin_id = None
        for local, display_name, role in demo.members:
            email = f"{local}@{demo.domain}"
            password = _password(rng)
            user = await identity.find_user(session, email)
            if user is None:
                user = await identity.add_user(
                    session, org_id=org.id, data=UserCreate(email=email, display_name=display_name, role=role, password=password)
                )
            admin_id = admin_id or user.id
            if demo.kind is not OrgKind.regulator and demo.kind is not OrgKind.auditor and role is Role.admin:
                people[demo.key] = principal_of(org, user)
            elif role is Role.admin:
                supervisors[demo.key] = principal_of(org, user)
            if demo.key == "authority" and local == "reviewer":
                people["reviewer"] = principal_of(org, user)
            accounts.append({"email": email, "password": password, "org": demo.name, "kind": demo.kind.value, "role": role.value})
        if demo.kind is OrgKind.buyer:
            client_id, secret = _token(rng, "mkc_demo_", 16), _token(rng, "mks_demo_", 40)
            if await identity.find_client(session, client_id) is None:
                await identity.add_api_client(
                    session,
                    org_id=org.id,
                    name=f"{demo.name} data pipeline",
                    scopes=sorted(CLIENT_SCOPES),
                    client_id=client_id,
                    secret=secret,
                    created_by=admin_id,
                )
            clients.append({"org": demo.name, "client_id": client_id, "client_secret": secret})
    if settings is not None:
        licensing = await seed_licensing(session, settings, people, SEED)
        if licensing["created"]:
            await seed_catalog(session, settings, people, licensing, SEED)
            await seed_supervision(session, people, supervisors)
            await seed_leaked_export(session, settings)
    return {"accounts": accounts, "clients": clients}


def write_accounts(path: Path, demo: dict[str, Any]) -> None:
    """Write the demo accounts file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(demo, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
