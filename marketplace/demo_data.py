"""Generated contents of the demo province's data resources (DESIGN.md §9).

Every table is generated from a fixed seed, so the demo is the same every time. The people in the
outpatient visits and the population register are invented: their names, identity numbers and phone
numbers follow the real formats but belong to no one.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from licensing.models import FieldTag, FieldType, Grade, UpdateFrequency
from licensing.schemas import FieldSpec

S, INT, D, B, DT, TS = (
    FieldType.string,
    FieldType.integer,
    FieldType.decimal,
    FieldType.boolean,
    FieldType.date,
    FieldType.timestamp,
)
DIRECT, QUASI, SENSITIVE, NONE = FieldTag.direct_identifier, FieldTag.quasi_identifier, FieldTag.sensitive, FieldTag.none

DISTRICTS = ("Old Harbour", "Riverside", "Eastgate", "Northwind", "Lakeside", "Hillcrest", "Westbank", "Greenfield")
POSTCODES = {d: f"5{100 + 10 * i:03d}" for i, d in enumerate(DISTRICTS)}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰"
INDUSTRIES = ("manufacturing", "retail", "logistics", "software", "construction", "catering", "finance", "agriculture")


@dataclass(frozen=True)
class DemoDepartment:
    code: str
    name: str
    name_zh: str


@dataclass(frozen=True)
class DemoResource:
    """A demo data resource: its description, fields and a generator of its rows."""

    code: str
    department: str
    title: str
    title_zh: str
    description: str
    description_zh: str
    grade: Grade
    update_frequency: UpdateFrequency
    fields: tuple[FieldSpec, ...]
    rows: Callable[[random.Random], Iterator[Sequence[Any]]]


DEPARTMENTS = (
    DemoDepartment("market", "Market Regulation Bureau", "市场监督管理局"),
    DemoDepartment("ecology", "Ecology and Environment Bureau", "生态环境局"),
    DemoDepartment("transport", "Transport Bureau", "交通运输局"),
    DemoDepartment("health", "Health Commission", "卫生健康委员会"),
    DemoDepartment("housing", "Natural Resources and Housing Bureau", "自然资源和住房局"),
    DemoDepartment("security", "Public Security Bureau", "公安局"),
)


def _f(name: str, kind: FieldType, tag: FieldTag = NONE, description: str = "") -> FieldSpec:
    return FieldSpec(name=name, type=kind, tag=tag, description=description)


def _enterprises(rng: random.Random) -> Iterator[Sequence[Any]]:
    for n in range(1, 1201):
        district = rng.choice(DISTRICTS)
        industry = rng.choice(INDUSTRIES)
        established = date(1995, 1, 1) + timedelta(days=rng.randrange(0, 30 * 365 - 400))
        yield (
            f"91440100MA{n:07d}{rng.choice('ABCDEFGHJK')}",
            f"{district} {industry.title()} Co. {n:04d}",
            district,
            industry,
            round(rng.lognormvariate(14, 1.2), 2),
            established.isoformat(),
            rng.choices(("active", "suspended", "deregistered"), (90, 4, 6))[0],
            int(rng.lognormvariate(3, 1.1)) + 1,
        )


def _air_quality(rng: random.Random) -> Iterator[Sequence[Any]]:
    start = datetime(2026, 10, 1)
    for station, district in enumerate(DISTRICTS, 1):
        base = rng.uniform(20, 55)
        for hour in range(0, 24 * 30, 3):
            pm25 = max(2.0, rng.gauss(base, 12))
            yield (
                f"AQ{station:03d}",
                district,
                (start + timedelta(hours=hour)).isoformat(sep=" "),
                round(pm25, 1),
                round(pm25 * rng.uniform(1.3, 1.9), 1),
                round(max(3.0, rng.gauss(32, 9)), 1),
                round(max(5.0, rng.gauss(70, 20)), 1),
                int(min(300, pm25 * 1.4 + rng.uniform(0, 15))),
            )


def _traffic(rng: random.Random) -> Iterator[Sequence[Any]]:
    start = datetime(2026, 10, 1)
    roads = ("Harbour Avenue", "Ring Road 2", "Riverside Expressway", "North Street", "Station Road", "Airport Link")
    for sensor, road in enumerate(roads * 2, 1):
        district = DISTRICTS[sensor % len(DISTRICTS)]
        for hour in range(24 * 21):
            peak = 1.8 if hour % 24 in (7, 8, 17, 18) else (0.3 if hour % 24 < 6 else 1.0)
            vehicles = int(max(0, rng.gauss(900 * peak, 120)))
            speed = max(8.0, 62 - vehicles / 40 + rng.gauss(0, 4))
            yield (
                f"TF{sensor:03d}",
                road,
                district,
                (start + timedelta(hours=hour)).isoformat(sep=" "),
                vehicles,
                round(speed, 1),
                round(min(10.0, vehicles / 200), 2),
            )


def _id_number(rng: random.Random, born: date) -> str:
    body = f"4401{rng.randrange(1, 20):02d}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def _person(rng: random.Random) -> tuple[str, str, str, date, str]:
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 80 * 365))
    name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    return name, _id_number(rng, born), f"1{rng.choice('3589')}{rng.randrange(0, 10**9):09d}", born, rng.choice(("F", "M"))


def _outpatient(rng: random.Random) -> Iterator[Sequence[Any]]:
    diagnoses = ("J06.9", "I10", "E11.9", "K29.7", "M54.5", "J45.9", "N39.0", "R51", "H10.9", "L30.9")
    departments = ("internal medicine", "paediatrics", "orthopaedics", "dermatology", "ophthalmology", "cardiology")
    for _ in range(4000):
        name, id_number, phone, born, sex = _person(rng)
        district = rng.choice(DISTRICTS)
        visit = date(2026, 5, 1) + timedelta(days=rng.randrange(0, 180))
        yield (
            id_number,
            name,
            phone,
            born.isoformat(),
            sex,
            POSTCODES[district] + f"{rng.randrange(0, 100):02d}",
            district,
            visit.isoformat(),
            rng.choice(departments),
            rng.choice(diagnoses),
            round(rng.lognormvariate(5.2, 0.7), 2),
        )


def _property(rng: random.Random) -> Iterator[Sequence[Any]]:
    for n in range(1, 2401):
        district = rng.choice(DISTRICTS)
        area = round(rng.uniform(38, 180), 1)
        per_sqm = round(rng.gauss(28000, 6000) * (1.3 if district in ("Old Harbour", "Riverside") else 1.0), 0)
        deal = date(2025, 6, 1) + timedelta(days=rng.randrange(0, 520))
        _name, id_number, _phone, born, _sex = _person(rng)
        yield (
            f"PT{deal:%Y}{n:06d}",
            district,
            f"{district} Garden {rng.randrange(1, 40)}",
            area,
            round(area * per_sqm, 2),
            per_sqm,
            deal.isoformat(),
            id_number,
            deal.year - born.year,
        )


def _population(rng: random.Random) -> Iterator[Sequence[Any]]:
    for _ in range(600):
        name, id_number, phone, born, sex = _person(rng)
        district = rng.choice(DISTRICTS)
        yield (
            id_number,
            name,
            sex,
            born.isoformat(),
            phone,
            f"{rng.randrange(1, 300)} {district} Road",
            district,
            rng.random() < 0.2,
        )


RESOURCES: tuple[DemoResource, ...] = (
    DemoResource(
        "enterprise-registry",
        "market",
        "Enterprise registry",
        "企业登记信息",
        "Registered enterprises: credit code, name, district, industry, capital, founding date, status, staff.",
        "登记企业：统一社会信用代码、名称、所在区、行业、注册资本、成立日期、状态、从业人数。",
        Grade.L1,
        UpdateFrequency.daily,
        (
            _f("credit_code", S, description="unified social credit code"),
            _f("company_name", S),
            _f("district", S),
            _f("industry", S),
            _f("registered_capital", D, description="CNY"),
            _f("established_on", DT),
            _f("status", S),
            _f("employees", INT),
        ),
        _enterprises,
    ),
    DemoResource(
        "air-quality",
        "ecology",
        "Air quality monitoring",
        "空气质量监测",
        "Three-hourly readings of the province's monitoring stations.",
        "全省监测站每三小时的空气质量读数。",
        Grade.L1,
        UpdateFrequency.realtime,
        (
            _f("station_id", S),
            _f("district", S),
            _f("measured_at", TS),
            _f("pm25", D),
            _f("pm10", D),
            _f("no2", D),
            _f("o3", D),
            _f("aqi", INT),
        ),
        _air_quality,
    ),
    DemoResource(
        "traffic-flow",
        "transport",
        "Traffic flow",
        "道路交通流量",
        "Hourly vehicle counts, speeds and congestion from road sensors.",
        "道路传感器每小时的车流量、平均车速和拥堵指数。",
        Grade.L2,
        UpdateFrequency.realtime,
        (
            _f("sensor_id", S),
            _f("road", S),
            _f("district", S),
            _f("hour", TS),
            _f("vehicles", INT),
            _f("avg_speed_kmh", D),
            _f("congestion_index", D),
        ),
        _traffic,
    ),
    DemoResource(
        "outpatient-visits",
        "health",
        "Outpatient visits",
        "门诊就诊记录",
        "Outpatient visits of public hospitals, with patients' personal data: sandbox use only, de-identified.",
        "公立医院门诊就诊记录，含患者个人信息：仅限沙箱使用，须去标识化。",
        Grade.L3,
        UpdateFrequency.daily,
        (
            _f("id_number", S, DIRECT, "resident identity card number"),
            _f("patient_name", S, DIRECT),
            _f("phone", S, DIRECT),
            _f("birth_date", DT, QUASI),
            _f("sex", S, QUASI),
            _f("postcode", S, QUASI),
            _f("district", S),
            _f("visit_date", DT),
            _f("clinic", S),
            _f("diagnosis_code", S, SENSITIVE, "ICD-10"),
            _f("cost", D, description="CNY"),
        ),
        _outpatient,
    ),
    DemoResource(
        "property-transactions",
        "housing",
        "Property transactions",
        "房产交易记录",
        "Registered sales of homes: district, community, area, price, date, and the buyer's identity and age.",
        "住宅交易登记：区、小区、面积、价格、日期，以及买方身份证号和年龄。",
        Grade.L2,
        UpdateFrequency.weekly,
        (
            _f("transaction_id", S),
            _f("district", S, QUASI),
            _f("community", S, QUASI),
            _f("area_sqm", D),
            _f("total_price", D, description="CNY"),
            _f("price_per_sqm", D, description="CNY"),
            _f("deal_date", DT),
            _f("buyer_id_number", S, DIRECT),
            _f("buyer_age", INT, QUASI),
        ),
        _property,
    ),
    DemoResource(
        "population-register",
        "security",
        "Population register (core)",
        "人口基础信息（核心）",
        "The core register of residents. Core data: never licensed for operation.",
        "常住人口基础信息库。核心数据：不得授权运营。",
        Grade.L4,
        UpdateFrequency.daily,
        (
            _f("id_number", S, DIRECT),
            _f("name", S, DIRECT),
            _f("sex", S, QUASI),
            _f("birth_date", DT, QUASI),
            _f("phone", S, DIRECT),
            _f("address", S, DIRECT),
            _f("district", S, QUASI),
            _f("is_registered_elsewhere", B),
        ),
        _population,
    ),
)


def write_csv(resource: DemoResource, path: Path, seed: int) -> int:
    """Write the resource's generated rows as a UTF-8 CSV with a header; returns the row count."""
    rng = random.Random(f"{seed}:{resource.code}")  # noqa: S311 - deterministic demo data
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([f.name for f in resource.fields])
        for row in resource.rows(rng):
            writer.writerow(["true" if v is True else "false" if v is False else v for v in row])
            count += 1
    return count
