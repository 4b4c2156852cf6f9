"""Catalog search: listed products found by words in both languages, filtered and counted by facets, sorted and paged.

Words. A product's names, summaries, descriptions, department and operator names are cut into words: Chinese with
jieba's search mode (``cut_for_search``, which also yields the short words inside long ones, e.g. 门诊就诊统计 ->
门诊, 就诊, 统计), English and digits as lower-case words. They are stored space-separated in the product's
``ProductSearchDocument.terms`` (the names' words also in ``name_terms``), together with copies of the product's
facets and sort keys: a search reads that one narrow table and never joins products, plans or licensing tables.
A query is cut with jieba's precise mode (its long words are in the documents too) and every word must match;
English words of three letters or more also match as prefixes (``hosp`` finds ``hospital``).

Relevance: products whose names contain every query word first, then the others; newest first within each.

Answering (``search_products``). Each process keeps an in-memory index of the catalog (``search_index``): facet
bitmaps, bitmaps of the frequent words (in at least ~0.5 % of the products), the newest/price/name orders, brought
up to date on every search from a version the writers bump (a committed change is seen by the very next search,
in every process). A frequent word is answered from its bitmap; any other word is asked of the database's
full-text engine, which returns few products by definition: SQLite's contentless FTS5 table ``product_fts``
(columns ``terms``, ``facets``, ``names``; migration 0004, kept in step by triggers), PostgreSQL's GIN index over
``to_tsvector('simple', terms)``. Facet counts are exact: one ``(result & value).bit_count()`` per facet value.

``search_in_database`` answers the same query with SQL alone (the reference the tests compare the index with):
SQLite counts facets over the matching rows, or by FTS5 doclist intersections when they are many; PostgreSQL in
one ``GROUPING SETS`` query.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from licensing.models import DeliveryMode, Department, Grade, PlanType
from marketplace.catalog import search_index
from marketplace.catalog.models import CatalogSearchChange, Domain, Product, ProductSearchDocument, ProductStatus
from marketplace.catalog.schemas import CatalogFacets, CatalogPage, CatalogQuery, CatalogSort, FacetValue, ProductSummary
from marketplace.catalog.search_index import CatalogIndex
from marketplace.catalog.services.common import PLAN_TYPE_ORDER, cents, names_of, public_plan_types, summary_fields
from marketplace.core.identity.models import Organisation
from marketplace.core.principal import OrgKind

#: Labels of the fixed facets' values, English and Chinese (pages translate the rest).
DOMAIN_LABELS: dict[str, tuple[str, str]] = {
    Domain.enterprise: ("Enterprise", "企业"),
    Domain.environment: ("Environment", "生态环境"),
    Domain.transport: ("Transport", "交通"),
    Domain.health: ("Health", "医疗卫生"),
    Domain.property: ("Property", "不动产"),
    Domain.population: ("Population", "人口"),
    Domain.finance: ("Finance", "金融"),
    Domain.other: ("Other", "其他"),
}
MODE_LABELS: dict[str, tuple[str, str]] = {
    DeliveryMode.api: ("API", "接口"),
    DeliveryMode.file: ("File", "文件"),
    DeliveryMode.sandbox: ("Sandbox", "沙箱"),
}
PLAN_TYPE_LABELS: dict[str, tuple[str, str]] = {
    PlanType.free: ("Free", "免费"),
    PlanType.one_off: ("One-off", "一次性"),
    PlanType.monthly: ("Monthly", "包月"),
    PlanType.metered: ("Metered", "按量计费"),
}
GRADE_LABELS: dict[str, tuple[str, str]] = {
    Grade.L1: ("L1 public", "一级（公开）"),  # noqa: RUF001 (Chinese text uses full-width punctuation)
    Grade.L2: ("L2 internal", "二级（内部）"),  # noqa: RUF001 (Chinese text uses full-width punctuation)
    Grade.L3: ("L3 sensitive", "三级（敏感）"),  # noqa: RUF001 (Chinese text uses full-width punctuation)
    Grade.L4: ("L4 core", "四级（核心）"),  # noqa: RUF001 (Chinese text uses full-width punctuation)
}

#: The facet words of the FTS5 'facets' column (the migration's triggers write the same words).
FACET_PREFIX = {
    "department": "zzdep_",
    "operator": "zzop_",
    "domain": "zzdom_",
    "mode": "zzmod_",
    "grade": "zzgra_",
    "plan_type": "zzpla_",
}
#: Facets of which each product has exactly one value (so one value's count is the total minus the others').
SINGLE_VALUED = ("department", "operator", "domain", "mode", "grade")
#: Up to this many matches, SQLite counts facets over the matching rows; beyond, by FTS5 doclist intersections.
FEW_MATCHES = 4000
#: English words this long or longer also match as prefixes.
PREFIX_MIN_CHARS = 3

_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"^[a-z0-9]+$")
_jieba_lock = threading.Lock()
_jieba: Any = None


def _segmenter() -> Any:
    """jieba, loaded once on first use (its dictionary takes about a second), with its logging silenced."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                with warnings.catch_warnings():  # jieba's own modules carry invalid escape sequences
                    warnings.simplefilter("ignore")
                    import jieba  # type: ignore[import-untyped]

                jieba.setLogLevel(logging.WARNING)
                logging.getLogger("jieba").setLevel(logging.WARNING)
                jieba.initialize()
                _jieba = jieba
    return _jieba


def _normalised(tokens: Iterable[str]) -> list[str]:
    words: list[str] = []
    for token in tokens:
        words.extend(_WORD.findall(token.lower()))
    return words


def document_words(text_value: str) -> list[str]:
    """The words of a text as stored in search documents: jieba's search mode (short words inside long ones too)."""
    return _normalised(_segmenter().cut_for_search(text_value)) if text_value else []


def query_words(q: str) -> list[str]:
    """The distinct words of a query: jieba's precise mode, lower case."""
    return list(dict.fromkeys(_normalised(_segmenter().cut(q)))) if q.strip() else []


def product_terms(product: Product, *, department: Department | None, operator: Organisation | None) -> str:
    """The words of a product's search document: its names first (they weigh more), then every word once."""
    names = document_words(f"{product.name} {product.name_zh}")
    texts = [
        product.name,
        product.name_zh,
        product.summary,
        product.summary_zh,
        product.description,
        product.description_zh,
    ]
    if department is not None:
        texts += [department.name, department.name_zh]
    if operator is not None:
        texts += [operator.name, operator.name_zh or ""]
    rest = dict.fromkeys(w for t in texts for w in document_words(t))
    return " ".join([*names, *rest])


def product_name_terms(product: Product) -> str:
    """The distinct words of a product's names (English and Chinese), space-separated: a document's ``name_terms``."""
    return " ".join(dict.fromkeys(document_words(f"{product.name} {product.name_zh}")))


# --- writing documents --------------------------------------------------------------------------------------------


async def reindex_product(session: AsyncSession, product: Product) -> None:
    """Write (or remove) ``product``'s search document in the caller's transaction: a listed product has one that
    matches its current words, facets, plans and price; any other product has none."""
    existing = (await session.exec(select(ProductSearchDocument).where(ProductSearchDocument.product_id == product.id))).first()
    if product.status is not ProductStatus.listed:
        if existing is not None:
            await session.delete(existing)
            await session.flush()
            await _record_change(session, product.id)
        return
    orgs, departments = await names_of(session, [product.operator_id], [product.department_id])
    types = (await public_plan_types(session, [product.id]))[product.id]
    document = existing or ProductSearchDocument(product_id=product.id, listed_at=product.listed_at or product.updated_at)  # type: ignore[call-arg]
    document.operator_id = product.operator_id
    document.department_id = product.department_id
    document.domain = product.domain
    document.mode = product.mode
    document.grade = product.grade
    document.plan_types = " " + " ".join(t.value for t in types) + " " if types else " "
    document.price_cents = cents(product.price_from)
    document.listed_at = product.listed_at or product.updated_at
    document.sort_name = product.name.lower()[:200]
    document.terms = product_terms(
        product, department=departments.get(product.department_id), operator=orgs.get(product.operator_id)
    )
    document.name_terms = product_name_terms(product)
    session.add(document)
    await session.flush()
    await _record_change(session, product.id)


#: Change-log entries older than this many versions are pruned (an index further behind rebuilds).
KEPT_CHANGES = 20_000


async def _record_change(session: AsyncSession, product_id: uuid.UUID) -> None:
    """Bump the search documents' version and log which product changed, in the writer's transaction. The row lock
    on the state row orders concurrent writers, so versions follow commit order."""
    bump = text("UPDATE catalog_search_state SET version = version + 1 WHERE id = 1 RETURNING version")
    version = (await session.exec(bump)).scalar_one_or_none()  # type: ignore[call-overload]
    if version is None:  # the row is gone (an emptied database): a new epoch
        await session.exec(  # type: ignore[call-overload]
            text("INSERT INTO catalog_search_state (id, epoch, version) VALUES (1, :e, 0) ON CONFLICT (id) DO NOTHING"),
            params={"e": secrets.token_hex(16)},
        )
        version = (await session.exec(bump)).scalar_one()  # type: ignore[call-overload]
    session.add(CatalogSearchChange(revision=int(version), product_id=product_id))
    if version % 1000 == 0:
        await session.exec(delete(CatalogSearchChange).where(col(CatalogSearchChange.revision) <= version - KEPT_CHANGES))
    await session.flush()


# --- reading ---------------------------------------------------------------------------------------------------


def _dialect(session: AsyncSession) -> str:
    return str(session.get_bind().dialect.name)


def _fts_word(word: str) -> str:
    quoted = '"' + word.replace('"', '""') + '"'
    return quoted + "*" if len(word) >= PREFIX_MIN_CHARS and _ASCII_WORD.match(word) else quoted


def _ts_word(word: str) -> str:
    quoted = "'" + word.replace("'", "''").replace("\\", "\\\\") + "'"
    return quoted + ":*" if len(word) >= PREFIX_MIN_CHARS and _ASCII_WORD.match(word) else quoted


def _filters(query: CatalogQuery) -> dict[str, str]:
    """The facet filters asked for: facet -> value (as stored)."""
    found: dict[str, str] = {}
    if query.department is not None:
        found["department"] = query.department.hex
    if query.operator is not None:
        found["operator"] = query.operator.hex
    if query.domain is not None:
        found["domain"] = query.domain.value
    if query.mode is not None:
        found["mode"] = query.mode.value
    if query.grade is not None:
        found["grade"] = query.grade.value
    if query.plan_type is not None:
        found["plan_type"] = query.plan_type.value
    return found


def _facet_word(facet: str, value: str) -> str:
    return FACET_PREFIX[facet] + value.lower()


def _offset(query: CatalogQuery) -> int:
    return (query.page - 1) * query.page_size


_SQLITE_ORDER = {
    CatalogSort.newest: "s.listed_at DESC, s.id DESC",
    CatalogSort.price: "s.price_cents IS NULL, s.price_cents, s.id",
    CatalogSort.name: "s.sort_name, s.id",
}
_SQLITE_NAMES_FIRST = "(s.id IN (SELECT rowid FROM product_fts WHERE product_fts MATCH :names)) DESC, s.listed_at DESC, s.id DESC"


async def _search_sqlite(
    session: AsyncSession, query: CatalogQuery, words: list[str]
) -> tuple[list[uuid.UUID], int, dict[str, Counter[str]]]:
    words_match = " AND ".join(_fts_word(w) for w in words)
    parts = ([f"terms : ({words_match})"] if words else []) + [f'"{_facet_word(f, v)}"' for f, v in _filters(query).items()]
    sort = query.sort if query.sort is not CatalogSort.relevance or words else CatalogSort.newest
    if not parts:
        total = int((await session.exec(text("SELECT count(*) FROM product_search"))).scalar_one())  # type: ignore[call-overload]
        ids = await session.exec(  # type: ignore[call-overload]
            text(f"SELECT s.product_id FROM product_search s ORDER BY {_SQLITE_ORDER[sort]} LIMIT :n OFFSET :o"),  # noqa: S608
            params={"n": query.page_size, "o": _offset(query)},
        )
        return [_uuid(r[0]) for r in ids.all()], total, await _sqlite_vocab_counts(session)
    match = " AND ".join(parts)
    total = int(
        (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT count(*) FROM product_fts WHERE product_fts MATCH :m"), params={"m": match}
            )
        ).scalar_one()
    )
    params = {"m": match, "n": query.page_size, "o": _offset(query)}
    if sort is CatalogSort.relevance:
        order = _SQLITE_NAMES_FIRST
        params["names"] = f"names : ({words_match})"
    else:
        order = _SQLITE_ORDER[sort]
    ids = await session.exec(  # type: ignore[call-overload]
        text(
            "SELECT s.product_id FROM product_fts f JOIN product_search s ON s.id = f.rowid "  # noqa: S608
            f"WHERE product_fts MATCH :m ORDER BY {order} LIMIT :n OFFSET :o"
        ),
        params=params,
    )
    page = [_uuid(r[0]) for r in ids.all()]
    if total == 0:
        return page, 0, {f: Counter() for f in FACET_PREFIX}
    if total <= FEW_MATCHES:
        counts = await _sqlite_row_counts(session, match)
    else:
        counts = await _sqlite_intersection_counts(session, match, total)
    return page, total, counts


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def _sqlite_vocab(session: AsyncSession) -> list[tuple[str, int]]:
    rows = await session.exec(  # type: ignore[call-overload]
        text("SELECT term, doc FROM product_fts_vocab WHERE term >= 'zz' AND term < 'zz{' AND doc > 0")
    )
    return [(str(term), int(doc)) for term, doc in rows.all()]


def _facet_of(word: str) -> tuple[str, str] | None:
    for facet, prefix in FACET_PREFIX.items():
        if word.startswith(prefix):
            return facet, word[len(prefix) :]
    return None


async def _sqlite_vocab_counts(session: AsyncSession) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {f: Counter() for f in FACET_PREFIX}
    for word, docs in await _sqlite_vocab(session):
        found = _facet_of(word)
        if found is not None:
            counts[found[0]][found[1]] = docs
    return counts


async def _sqlite_row_counts(session: AsyncSession, match: str) -> dict[str, Counter[str]]:
    rows = await session.exec(  # type: ignore[call-overload]
        text(
            "SELECT department_id, operator_id, domain, mode, grade, plan_types FROM product_search "
            "WHERE id IN (SELECT rowid FROM product_fts WHERE product_fts MATCH :m)"
        ),
        params={"m": match},
    )
    counts: dict[str, Counter[str]] = {f: Counter() for f in FACET_PREFIX}
    for department, operator, domain, mode, grade, plan_types in rows.all():
        counts["department"][_uuid(department).hex] += 1
        counts["operator"][_uuid(operator).hex] += 1
        counts["domain"][str(domain)] += 1
        counts["mode"][str(mode)] += 1
        counts["grade"][str(grade).lower()] += 1
        for plan_type in str(plan_types).split():
            counts["plan_type"][plan_type] += 1
    return counts


async def _sqlite_intersection_counts(session: AsyncSession, match: str, total: int) -> dict[str, Counter[str]]:
    # Every value a facet can take (departments and operators are few; the rest are enums): a value no document
    # has costs nothing to count. Reading them from the FTS5 vocabulary would scan every word of the catalog.
    departments = (await session.exec(select(Department.id))).all()
    operators = (await session.exec(select(Organisation.id).where(Organisation.kind == OrgKind.operator))).all()
    by_facet: dict[str, list[str]] = {
        "department": [d.hex for d in departments],
        "operator": [o.hex for o in operators],
        "domain": [d.value for d in Domain],
        "mode": [m.value for m in DeliveryMode],
        "grade": [g.value.lower() for g in Grade],
        "plan_type": [t.value for t in PlanType],
    }
    asked: list[tuple[str, str]] = []
    derived: dict[str, str] = {}
    for facet, values in by_facet.items():
        if facet in SINGLE_VALUED and values:
            derived[facet] = values[0]  # each product has exactly one value: this one's count is the total minus the others'
            values = values[1:]
        asked += [(facet, value) for value in values]
    counts: dict[str, Counter[str]] = {f: Counter() for f in FACET_PREFIX}
    if asked:
        count_one = "(SELECT count(*) FROM product_fts WHERE product_fts MATCH :m{})"  # words are bound parameters
        selects = ", ".join(count_one.format(i) for i in range(len(asked)))
        params = {f"m{i}": f'{match} AND "{_facet_word(f, v)}"' for i, (f, v) in enumerate(asked)}
        statement = text(f"SELECT {selects}")
        row = (await session.exec(statement, params=params)).one()  # type: ignore[call-overload]
        for (facet, value), count in zip(asked, row, strict=True):
            counts[facet][value] = int(count)
    for facet, value in derived.items():
        counts[facet][value] = total - sum(counts[facet].values())
    return counts


_PG_ORDER = {
    CatalogSort.newest: "listed_at DESC, id DESC",
    CatalogSort.price: "price_cents ASC NULLS LAST, id",
    CatalogSort.name: 'sort_name COLLATE "C", id',  # code point order, as SQLite and the in-memory index sort
}
_PG_FACET_COLUMNS = ("department_id", "operator_id", "domain", "mode", "grade")


async def _search_postgres(
    session: AsyncSession, query: CatalogQuery, words: list[str]
) -> tuple[list[uuid.UUID], int, dict[str, Counter[str]]]:
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if words:
        conditions.append("to_tsvector('simple', terms) @@ to_tsquery('simple', :tsq)")
        params["tsq"] = " & ".join(_ts_word(w) for w in words)
    for facet, value in _filters(query).items():
        if facet == "plan_type":
            conditions.append("strpos(plan_types, :plan_type) > 0")
            params["plan_type"] = f" {value} "
        else:
            column = "department_id" if facet == "department" else "operator_id" if facet == "operator" else facet
            conditions.append(f"{column} = :{facet}")
            params[facet] = uuid.UUID(value) if facet in ("department", "operator") else value
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    sort = query.sort if query.sort is not CatalogSort.relevance or words else CatalogSort.newest
    order = (
        "to_tsvector('simple', name_terms) @@ to_tsquery('simple', :tsq) DESC, listed_at DESC, id DESC"
        if sort is CatalogSort.relevance
        else _PG_ORDER[sort]
    )
    ids = await session.exec(  # type: ignore[call-overload]
        text(f"SELECT product_id FROM product_search {where} ORDER BY {order} LIMIT :n OFFSET :o"),  # noqa: S608
        params={**params, "n": query.page_size, "o": _offset(query)},
    )
    page = [_uuid(r[0]) for r in ids.all()]
    plan_counts = ", ".join(
        f"count(*) FILTER (WHERE strpos(plan_types, ' {t.value} ') > 0) AS {t.value}" for t in PLAN_TYPE_ORDER
    )
    grouping = ", ".join(f"GROUPING({c}) AS g_{c}" for c in _PG_FACET_COLUMNS)
    sets = ", ".join(f"({c})" for c in _PG_FACET_COLUMNS)
    rows = await session.exec(  # type: ignore[call-overload]
        text(
            f"SELECT {', '.join(_PG_FACET_COLUMNS)}, {grouping}, count(*) AS n, {plan_counts} "  # noqa: S608
            f"FROM product_search {where} GROUP BY GROUPING SETS ({sets}, ())"
        ),
        params=params,
    )
    counts: dict[str, Counter[str]] = {f: Counter() for f in FACET_PREFIX}
    total = 0
    for row in rows.mappings().all():
        ungrouped = [c for c in _PG_FACET_COLUMNS if row[f"g_{c}"] == 0]
        if not ungrouped:
            total = int(row["n"])
            for plan_type in PLAN_TYPE_ORDER:
                if row[plan_type.value]:
                    counts["plan_type"][plan_type.value] = int(row[plan_type.value])
            continue
        column = ungrouped[0]
        facet = {"department_id": "department", "operator_id": "operator"}.get(column, column)
        value = row[column]
        key = _uuid(value).hex if facet in ("department", "operator") else str(value).lower() if facet == "grade" else str(value)
        counts[facet][key] = int(row["n"])
    return page, total, counts


async def _facets(session: AsyncSession, counts: dict[str, Counter[str]]) -> CatalogFacets:
    def ordered(counter: Counter[str]) -> list[tuple[str, int]]:
        return sorted(((v, n) for v, n in counter.items() if n > 0), key=lambda item: (-item[1], item[0]))

    department_ids = [uuid.UUID(hex=v) for v, _ in ordered(counts["department"])]
    operator_ids = [uuid.UUID(hex=v) for v, _ in ordered(counts["operator"])]
    orgs, departments = await names_of(session, operator_ids, department_ids)

    def fixed(facet: str, labels: dict[str, tuple[str, str]], *, upper: bool = False) -> list[FacetValue]:
        values = []
        for value, count in ordered(counts[facet]):
            stored = value.upper() if upper else value
            label, label_zh = labels.get(stored, (stored, stored))
            values.append(FacetValue(value=stored, label=label, label_zh=label_zh, count=count))
        return values

    department_values = []
    for value, count in ordered(counts["department"]):
        dept = departments.get(uuid.UUID(hex=value))
        department_values.append(
            FacetValue(
                value=str(uuid.UUID(hex=value)),
                label=dept.name if dept else value,
                label_zh=dept.name_zh if dept else value,
                count=count,
            )
        )
    operator_values = []
    for value, count in ordered(counts["operator"]):
        org = orgs.get(uuid.UUID(hex=value))
        operator_values.append(
            FacetValue(
                value=str(uuid.UUID(hex=value)),
                label=org.name if org else value,
                label_zh=(org.name_zh or org.name) if org else value,
                count=count,
            )
        )
    return CatalogFacets(
        department=department_values,
        domain=fixed("domain", DOMAIN_LABELS),
        mode=fixed("mode", MODE_LABELS),
        plan_type=fixed("plan_type", PLAN_TYPE_LABELS),
        grade=fixed("grade", GRADE_LABELS, upper=True),
        operator=operator_values,
    )


async def _items(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[ProductSummary]:
    if not ids:
        return []
    products = {p.id: p for p in (await session.exec(select(Product).where(col(Product.id).in_(list(ids))))).all()}
    found = [products[i] for i in ids if i in products]
    orgs, departments = await names_of(session, [p.operator_id for p in found], [p.department_id for p in found])
    types = await public_plan_types(session, [p.id for p in found])
    return [
        ProductSummary(**summary_fields(p, orgs.get(p.operator_id), departments.get(p.department_id), types[p.id])) for p in found
    ]


async def search_in_database(session: AsyncSession, query: CatalogQuery) -> CatalogPage:
    """``search_products`` answered by SQL alone, without the in-memory index (the reference it is tested against;
    slow for words matching tens of thousands of products)."""
    words = query_words(query.q)
    if _dialect(session) == "sqlite":
        ids, total, counts = await _search_sqlite(session, query, words)
    else:
        ids, total, counts = await _search_postgres(session, query, words)
    return await _page(session, query, ids, total, counts)


async def _page(
    session: AsyncSession, query: CatalogQuery, ids: Sequence[uuid.UUID], total: int, counts: dict[str, Counter[str]]
) -> CatalogPage:
    return CatalogPage(
        items=await _items(session, ids),
        total=total,
        page=query.page,
        page_size=query.page_size,
        facets=await _facets(session, counts),
    )


# --- answering from the in-memory index ----------------------------------------------------------------------

#: A prefix matching more words than this that have no bitmap is asked of the database as a prefix.
MAX_RARE_EXPANSIONS = 32
_BITMAP_WORD = re.compile(r"^(?:[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff]+)$")


def _is_prefix(word: str) -> bool:
    return len(word) >= PREFIX_MIN_CHARS and _ASCII_WORD.match(word) is not None


async def _database_matches(session: AsyncSession, index: CatalogIndex, words: list[str], *, any_of: bool) -> tuple[int, int]:
    """The products matching ``words`` by the database's full-text engine (all of them, or with ``any_of`` any,
    as exact words), and those whose names do, as bitmaps of ``index``."""
    if _dialect(session) == "sqlite":
        quoted = ['"' + w.replace('"', '""') + '"' for w in words] if any_of else [_fts_word(w) for w in words]
        expression = (" OR " if any_of else " AND ").join(quoted)
        statement = text(
            "SELECT rowid, rowid IN (SELECT rowid FROM product_fts WHERE product_fts MATCH :names) "
            "FROM product_fts WHERE product_fts MATCH :terms"
        )
        params = {"terms": f"terms : ({expression})", "names": f"names : ({expression})"}
    else:
        quoted = (
            ["'" + w.replace("'", "''").replace("\\", "\\\\") + "'" for w in words] if any_of else [_ts_word(w) for w in words]
        )
        statement = text(
            "SELECT id, to_tsvector('simple', name_terms) @@ to_tsquery('simple', :q) FROM product_search "
            "WHERE to_tsvector('simple', terms) @@ to_tsquery('simple', :q)"
        )
        params = {"q": (" | " if any_of else " & ").join(quoted)}
    rows = (await session.exec(statement, params=params)).all()  # type: ignore[call-overload]
    return index.rows_to_bitmap(r[0] for r in rows), index.rows_to_bitmap(r[0] for r in rows if r[1])


async def _search_index(
    session: AsyncSession, index: CatalogIndex, query: CatalogQuery, words: list[str]
) -> tuple[list[uuid.UUID], int, dict[str, Counter[str]]]:
    result = index.filtered(_filters(query))
    in_names = result
    asked: list[str] = []  # words for the database's full-text engine
    for word in words:
        found = index.word_bitmaps(word, prefix=_is_prefix(word)) if _BITMAP_WORD.match(word) else None
        if found is None or len(found[2]) > MAX_RARE_EXPANSIONS:
            asked.append(word)
            continue
        docs, names, rare = found
        if rare:  # a prefix of frequent and rare words: the rare ones exactly, from the database
            more_docs, more_names = await _database_matches(session, index, rare, any_of=True)
            docs |= more_docs
            names |= more_names
        result &= docs
        in_names &= names
    if asked and result:
        docs, names = await _database_matches(session, index, asked, any_of=False)
        result &= docs
        in_names &= names
    total = result.bit_count()
    offset, size = _offset(query), query.page_size
    sort = query.sort if query.sort is not CatalogSort.relevance or words else CatalogSort.newest
    if sort is CatalogSort.relevance:
        in_names &= result
        first = in_names.bit_count()
        positions = search_index.highest(in_names, offset, size)
        if len(positions) < size:
            positions += search_index.highest(result & ~in_names, max(0, offset - first), size - len(positions))
    elif sort is CatalogSort.newest:
        positions = search_index.highest(result, offset, size)
    elif sort is CatalogSort.price:
        positions = search_index.first_in_order(result, index.price_order, index.price_keys, index.size, offset, size)
    else:
        positions = search_index.first_in_order(result, index.name_order, index.name_keys, index.size, offset, size)
    counts = {facet: Counter(values) for facet, values in index.facet_counts(result).items()}
    return [_uuid(index.product_ids[p]) for p in positions], total, counts


async def search_products(session: AsyncSession, query: CatalogQuery) -> CatalogPage:
    """One page of listed products matching ``query`` (anyone may search), with the total and exact facet counts
    over the whole result. Words are ANDed; facet filters narrow the result and its counts. Answered from the
    process's in-memory index, brought up to date with the last committed change first (see the module)."""
    index = await search_index.current_index(session)
    ids, total, counts = await _search_index(session, index, query, query_words(query.q))
    return await _page(session, query, ids, total, counts)
