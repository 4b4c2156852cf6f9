"""Supervision benchmark: p95 of an explorer query filtered by operator and month, and of the dashboard's aggregates
(the whole dashboard of a six-month window; the same for one operator; one operator's scorecard; every operator's
scorecards), over 1,000,000 events on PostgreSQL (issue 7 target: < 200 ms).

The events are written straight into ``ledger_entry`` with PostgreSQL's COPY (their leaf hashes are random: the
explorer never reads them), then indexed by the explorer's own ``index_new_events`` (which also fills the dashboard's
rollups); the queries are ``supervision.explorer.explore`` (the service behind ``GET /api/supervision/events``) and
``supervision.dashboard.dashboard`` / ``supervision.scorecard.scorecard(s)`` (behind ``GET /api/supervision/dashboard``
and ``/scorecard``), called as the routes call them.
Without ``MARKET_TEST_POSTGRES_URL`` the script runs itself again inside ``deploy/with_services.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from marketplace.core.db import Database  # noqa: E402
from marketplace.migrations import upgrade  # noqa: E402
from supervision.dashboard import Period, dashboard  # noqa: E402
from supervision.engagements import Scope  # noqa: E402
from supervision.explorer import EventFilter, explore, index_new_events  # noqa: E402
from supervision.scorecard import scorecard, scorecards  # noqa: E402

SEED = 20261203
TYPES = ("delivery.recorded",) * 14 + (
    "payment.received",
    "invoice.issued",
    "subscription.activated",
    "entitlement.granted",
    "usage.billed",
    "payment.refunded",
)
MODES = ("api",) * 6 + ("file",) * 3 + ("sandbox",)
PURPOSES = ("public_welfare", "academic_research", "credit_assessment", "market_analysis", "logistics_planning")
START = date(2026, 1, 1)


def say(text: str) -> None:
    print(f"[supervision bench] {text}", file=sys.stderr, flush=True)


def generate(conn: psycopg.Connection, events: int, operators: list[str], buyers: list[str], owner: str) -> None:
    rng = random.Random(SEED)  # noqa: S311 - reproducible synthetic data
    with (
        conn.cursor() as cursor,
        cursor.copy("COPY ledger_entry (leaf_index, event_type, occurred_at, leaf_input, leaf_hash) FROM STDIN") as copy,
    ):
        for index in range(events):
            kind = rng.choice(TYPES)
            moment = datetime.combine(START, datetime.min.time(), UTC) + timedelta(seconds=rng.randrange(365 * 86400))
            number = rng.randrange(len(operators))
            operator = operators[number]
            # 400 products, 20 to an operator.
            product = str(uuid.UUID(int=number * 20 + rng.randrange(20)))
            payload: dict[str, object] = {"rows": rng.randrange(1000)}
            if kind in ("payment.received", "invoice.issued"):
                payload = {"amount": f"{rng.randrange(100000)}.{rng.randrange(100):02d}", "currency": "CNY"}
            elif kind == "payment.refunded":
                payload = {"amount": f"{rng.randrange(10000)}.{rng.randrange(100):02d}", "currency": "CNY"}
            elif kind == "delivery.recorded":
                payload = {"mode": rng.choice(MODES), "rows": rng.randrange(1000), "bytes": rng.randrange(10**6)}
            elif kind == "subscription.activated":
                payload = {"purpose": rng.choice(PURPOSES), "price": "100.00", "currency": "CNY", "reduction_percent": 0}
            elif kind == "usage.billed":
                payload = {"amount": f"{rng.randrange(1000)}.00", "currency": "CNY"}
            event = {
                "index": index,
                "type": kind,
                "time": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "actor": {"kind": "system", "id": "bench"},
                "orgs": sorted([operator, buyers[rng.randrange(len(buyers))], owner]),
                "subjects": {"product": product, "licence": str(uuid.UUID(int=1000 + int(operator[-4:], 16) % 50))},
                "payload": payload,
            }
            copy.write_row((index, kind, moment, json.dumps(event, separators=(",", ":")), rng.randbytes(32)))
        say(f"copied {events:,} events")
    # The parties are organisations of the identity tables: the rollups name an event's operator by its kind.
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO organisation (id, name, kind, created_at) VALUES (%s, %s, %s, now())",
            [
                (org, f"{kind.title()} {n}", kind)
                for kind, ids in (("operator", operators), ("buyer", buyers), ("owner", [owner]))
                for n, org in enumerate(ids)
            ],
        )
    # One settlement statement issued per operator and month (the franchise fee income).
    with conn.cursor() as cursor:
        rows = []
        for n, operator in enumerate(operators):
            for month in range(1, 13):
                index = events + len(rows)
                moment = datetime(2026, month, 2, 3, tzinfo=UTC)
                event = {
                    "index": index,
                    "type": "settlement.issued",
                    "time": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                    "actor": {"kind": "system", "id": "bench"},
                    "orgs": [operator, owner],
                    "subjects": {"statement": str(uuid.UUID(int=0xD0000 + n * 100 + month))},
                    "payload": {"currency": "CNY", "franchise_fee": f"{rng.randrange(100000)}.00", "period": f"2026-{month:02d}"},
                }
                rows.append((index, "settlement.issued", moment, json.dumps(event, separators=(",", ":")), rng.randbytes(32)))
        cursor.executemany(
            "INSERT INTO ledger_entry (leaf_index, event_type, occurred_at, leaf_input, leaf_hash) VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
        events += len(rows)
    conn.execute("UPDATE ledger_head SET size = %s WHERE id = 1", (events,))
    conn.commit()


async def measure(url: str, operators: list[str], runs: int) -> dict[str, dict[str, float]]:
    database = Database(url, pool_size=2)
    try:
        async with database.session() as session:
            started = time.perf_counter()
            indexed = await index_new_events(session)
            say(f"indexed {indexed:,} events in {time.perf_counter() - started:.0f} s")
        rng = random.Random(SEED + 1)  # noqa: S311
        timings = []
        for run in range(runs + 5):
            month = rng.randrange(1, 13)
            first = date(2026, month, 1)
            last = (date(2026, month + 1, 1) if month < 12 else date(2027, 1, 1)) - timedelta(days=1)
            wanted = EventFilter(org=uuid.UUID(operators[rng.randrange(len(operators))]), start=first, end=last)
            async with database.session() as session:
                started = time.perf_counter()
                page = await explore(session, None, wanted, limit=50)
                elapsed = time.perf_counter() - started
            assert page.items, "a month of an operator has events"
            if run >= 5:  # warm-up
                timings.append(elapsed * 1000)
        figures = {"explorer": _summary(timings)}
        # The dashboard's aggregates: a random six-month window of 2026.
        queries = {
            "dashboard": lambda session, period, operator: dashboard(session, None, period),
            "dashboard_operator": lambda session, period, operator: dashboard(
                session, Scope({operator: ((period.start, period.end),)}), period
            ),
            "dashboard_mid_month": lambda session, period, operator: dashboard(
                session, None, Period(period.start + timedelta(days=14), period.end + timedelta(days=14))
            ),
            "scorecard": lambda session, period, operator: scorecard(session, None, period, operator),
            "scorecards": lambda session, period, operator: scorecards(session, None, period),
        }
        for name, query in queries.items():
            timings = []
            for run in range(runs + 5):
                first = date(2026, rng.randrange(1, 8), 1)
                last = date(2026 + (first.month + 6 > 12), (first.month + 5) % 12 + 1, 1) - timedelta(days=1)
                operator = uuid.UUID(operators[rng.randrange(len(operators))])
                async with database.session() as session:
                    started = time.perf_counter()
                    answer = await query(session, Period(first, last), operator)
                    elapsed = time.perf_counter() - started
                assert answer, "six months have figures"
                if run >= 5:  # warm-up
                    timings.append(elapsed * 1000)
            figures[name] = _summary(timings)
        return figures
    finally:
        await database.dispose()


def _summary(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {"p50": statistics.median(timings), "p95": timings[max(0, round(0.95 * len(timings)) - 1)], "max": timings[-1]}


LABELS = {
    "explorer": "explorer: events of one operator in one month, newest 50",
    "dashboard": "dashboard: the whole answer, six months, every operator",
    "dashboard_operator": "dashboard: the whole answer, six months, one operator (an auditor's scope)",
    "dashboard_mid_month": "dashboard: the whole answer, six months from the 15th to the 14th, every operator",
    "scorecard": "scorecard of one operator, six months",
    "scorecards": "scorecards of every operator (20), six months",
}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--operators", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40)
    options = parser.parse_args(argv)
    admin_url = os.environ.get("MARKET_TEST_POSTGRES_URL")
    if not admin_url:
        say("no MARKET_TEST_POSTGRES_URL: running again inside deploy/with_services.py")
        command = [sys.executable, str(REPO / "deploy" / "with_services.py"), "--no-redis", "--"]
        os.execv(sys.executable, [*command, sys.executable, str(Path(__file__).resolve()), *argv])  # noqa: S606
    admin = make_url(admin_url)
    name = f"supervision_bench_{uuid.uuid4().hex[:8]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        operators = [str(uuid.UUID(int=0xA0000 + i)) for i in range(options.operators)]
        buyers = [str(uuid.UUID(int=0xB0000 + i)) for i in range(200)]
        owner = str(uuid.UUID(int=0xC0000))
        started = time.perf_counter()
        with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
            generate(conn, options.events, operators, buyers, owner)
            conn.execute("ANALYZE")
            conn.commit()
        say(f"generated in {time.perf_counter() - started:.0f} s")
        figures = asyncio.run(measure(url, operators, options.runs))
        with psycopg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
        ) as conn:
            conn.execute("ANALYZE")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"Supervision over {options.events:,} events, {options.operators} operators, {options.runs} timed queries each, {stamp}\n"
        )
        print("| query | p50 ms | p95 ms | max ms | target |")
        print("|---|---:|---:|---:|---|")
        for name, timing in figures.items():
            print(f"| {LABELS[name]} | {timing['p50']:.1f} | {timing['p95']:.1f} | {timing['max']:.1f} | p95 < 200 ms |")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
