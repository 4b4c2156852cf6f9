"""The annual public disclosure as a page and as a PDF: ``/disclosure/{year}`` (printable HTML) and
``/disclosure/{year}.pdf``, open to anyone (the authority's public report), in the page language.

The figures come from :func:`supervision.disclosure.disclose` (live ledger data only). The PDF is drawn with fpdf2
through billing's document helpers and its font finding (:func:`billing.documents.find_font`): in Chinese when the
request is in Chinese and a Chinese font was found on the machine, else in English.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fpdf.enums import Align
from litestar import Controller, Request, Response, get
from litestar.params import FromPath
from litestar.response import Template

from billing.documents import CORE, WIDTH, Document, FontChoice, find_font
from marketplace.core.errors import DomainError, NotFound
from marketplace.core.http import DbSession
from marketplace.web import i18n
from marketplace.web.buyer_pages import localised
from marketplace.web.charts import Chart, stacked_bars
from marketplace.web.i18n import gettext_ as _
from marketplace.web.pages import _n, error_page, page
from supervision.disclosure import Disclosure, FeeLine, disclose

log = logging.getLogger(__name__)

#: ``2026`` (the page) or ``2026.pdf`` (the document).
ADDRESS = re.compile(r"^(\d{1,6})(\.pdf)?$")

#: Words of the PDF that the page writes through its macros (listed for extraction; translated where drawn).
STATUS = {
    "draft": _n("draft"),
    "granted": _n("granted"),
    "suspended": _n("suspended"),
    "reinstated": _n("reinstated"),
    "revoked": _n("revoked"),
    "expired": _n("expired"),
    "listed": _n("listed"),
    "delisted": _n("delisted"),
    "in_review": _n("in review"),
}
MODE = {"api": _n("API"), "file": _n("file"), "sandbox": _n("sandbox")}
PLAN = {"free": _n("free"), "one_off": _n("one-off"), "monthly": _n("monthly subscription"), "metered": _n("metered")}


def fee_charts(report: Disclosure) -> list[tuple[str, Chart]]:
    """Franchise fees per operator (one series each) and month, one chart per currency."""
    charts: list[tuple[str, Chart]] = []
    for currency in sorted({f.currency for f in report.fees}):
        lines: list[FeeLine] = [f for f in report.fees if f.currency == currency]
        series = {localised(f.operator, "name"): [Decimal(v) for v in f.monthly] for f in lines}
        charts.append((currency, stacked_bars([m[5:] for m in report.months], series, unit=f" {currency}")))
    return charts


def _word(table: dict[str, str], value: str) -> str:
    return _(table[value]) if value in table else value


def _moment(iso: str | None) -> str:
    """An ISO instant as ``YYYY-MM-DD HH:MM UTC`` ("-" for none)."""
    return "-" if iso is None else datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _percent(share: str | None) -> str:
    return "-" if share is None else f"{Decimal(share) * 100:.1f}%"


# --- the PDF ---------------------------------------------------------------------------------------------------------


def _draw(font: FontChoice, report: Disclosure) -> bytes:
    created = datetime.fromisoformat(report.generated_at).astimezone(UTC)
    title = _("Annual public disclosure {year}").format(year=report.year)
    doc = Document(font, title, _("Public data authority"), created)
    doc.pdf.set_creator("supervision")
    doc.heading(title, "", _("Generated {moment}").format(moment=_moment(report.generated_at)))
    t = report.totals
    if not report.complete:
        doc.paragraph(doc.text(_("The year is not over: these are the figures so far.")))
    if not report.has_data:
        doc.paragraph(doc.text(_("No transactions were recorded in {year}.").format(year=report.year)))

    def label(text: str) -> tuple[str, str]:
        return (text, "")

    doc.facts(
        [
            (label(_("Licences in force during the year")), str(t["licences"])),
            (label(_("Licences granted this year")), str(t["licences_granted"])),
            (label(_("Suspensions")), str(t["suspensions"])),
            (label(_("Products listed")), str(t["products"])),
            (label(_("Operators")), str(t["operators"])),
            (label(_("Buyers served (counted, not named)")), str(t["buyers"])),
            (label(_("Deliveries")), f"{t['deliveries_total']:,}"),
            (label(_("Public-welfare share of deliveries")), _percent(t["public_welfare_share"])),
            (
                label(_("Gross transaction value")),
                ", ".join(f"{m.received} {m.currency}" for m in report.gross_transaction_value) or "-",
            ),
            (
                label(_("Franchise fees")),
                ", ".join(f"{f['franchise_fee']} {f['currency']}" for f in t["franchise_fees"]) or "-",
            ),
            (label(_("Findings raised / closed")), f"{t['findings_raised']} / {t['findings_closed']}"),
            (label(_("Alerts raised / resolved")), f"{t['alerts_raised']} / {t['alerts_resolved']}"),
        ]
    )

    def section(text: str) -> None:
        if doc.pdf.will_page_break(40):  # a heading is not left alone at the foot of a page
            doc.pdf.add_page()
        doc.size(13)
        doc.paragraph(doc.text(text))
        doc.size(9)

    def grid(widths: Sequence[float], heads: Sequence[str], rows: list[list[str]], numeric_from: int) -> None:
        if not rows:
            doc.paragraph(doc.text(_("None.")))
            return
        align = [Align.L if i < numeric_from else Align.R for i in range(len(widths))]
        doc.grid(widths, align, [(h, "") for h in heads], [[doc.text(v) for v in row] for row in rows])

    section(_("Licences granted"))
    grid(
        (24, 28, 30, 22, 12, 17, WIDTH - 133),
        (
            _("Licence"),
            _("Operator"),
            _("Resources (grade)"),
            _("Term"),
            _("Fee rate"),
            _("Status"),
            _("Changes during the year"),
        ),
        [
            [
                lic.number,
                localised(lic.operator, "name"),
                ", ".join(f"{r.code} ({r.grade})" for r in lic.resources),
                f"{lic.starts_on} - {lic.ends_on}",
                _percent(lic.fee_rate),
                _word(STATUS, lic.status_at_end),
                "; ".join(f"{c.on} {_word(STATUS, c.change)}" + (f": {c.reason}" if c.reason else "") for c in lic.changes),
            ]
            for lic in report.licences
        ],
        7,
    )
    section(_("Products and prices"))
    grid(
        (40, 32, 16, 18, WIDTH - 136, 30),
        (_("Product"), _("Operator"), _("Mode"), _("Status"), _("Public plans"), _("Price range")),
        [
            [
                p.name,
                localised(p.operator, "name"),
                _word(MODE, p.mode),
                _word(STATUS, p.status_at_end),
                "; ".join(
                    f"{_word(PLAN, plan.type)} {plan.price}" + (f" + {plan.per_call_price}/call" if plan.per_call_price else "")
                    for plan in p.plans
                )
                + (f" (+{p.private_plans} " + _("private") + ")" if p.private_plans else ""),
                f"{p.price_min} - {p.price_max} {p.currency}" if p.price_min is not None else "-",
            ]
            for p in report.products
        ],
        6,
    )
    section(_("Franchise fees collected"))
    for currency in sorted({f.currency for f in report.fees}):
        lines = [f for f in report.fees if f.currency == currency]
        grid(
            (WIDTH - 100, 25, 25, 25, 25),
            (
                _("Operator"),
                _("Gross ({currency})").format(currency=currency),
                _("Franchise fee"),
                _("Statements"),
                _("Provisional (drafts)"),
            ),
            [[localised(f.operator, "name"), f.gross, f.franchise_fee, str(f.statements), f.provisional_fee] for f in lines],
            1,
        )
    if not report.fees:
        doc.paragraph(doc.text(_("None.")))
    section(_("Operators' performance"))
    grid(
        (34, 34, 14, 14, 14, 14, 14, 16, WIDTH - 154),
        (
            _("Operator"),
            _("Revenue"),
            _("Buyers"),
            _("API"),
            _("file"),
            _("sandbox"),
            _("Public welfare"),
            _("Findings raised / closed"),
            _("Alerts raised / resolved"),
        ),
        [
            [
                localised(o.operator, "name"),
                ", ".join(f"{m.net} {m.currency}" for m in o.revenue) or "-",
                str(o.buyers),
                f"{o.deliveries.get('api', 0):,}",
                f"{o.deliveries.get('file', 0):,}",
                f"{o.deliveries.get('sandbox', 0):,}",
                _percent(o.public_welfare_share),
                f"{o.findings_raised} / {o.findings_closed}",
                f"{o.alerts_raised} / {o.alerts_resolved}",
            ]
            for o in report.operators
        ],
        2,
    )
    section(_("The ledger"))
    ledger = report.ledger
    doc.facts(
        [
            (label(_("Events in the year")), f"{ledger.events_in_year:,}"),
            (label(_("Checkpoint size")), str(ledger.checkpoint_size)),
            (label(_("Checkpoint root (hex)")), ledger.checkpoint_root or "-"),
            (label(_("Checkpoint signed")), _moment(ledger.checkpoint_signed_at)),
        ]
    )
    doc.paragraph(
        doc.text(
            _(
                "Every figure counts only the ledger events below the checkpoint's size. Anyone can export the ledger, "
                "verify it against this checkpoint with the authority's public key and compute the figures again."
            )
        )
    )
    return doc.output()


def _in_language(font: FontChoice, report: Disclosure) -> bytes:
    """Draw in the page language, or in English when ``font`` does not write Chinese."""
    previous = i18n.current_locale()
    if previous != i18n.DEFAULT_LOCALE and not font.chinese:
        i18n.set_locale(i18n.DEFAULT_LOCALE)
    try:
        return _draw(font, report)
    finally:
        i18n.set_locale(previous)


def disclosure_pdf(report: Disclosure) -> bytes:
    """The report as a PDF in the current page language (English when no Chinese font is on the machine); drawn
    with the core font when the font found fails."""
    try:
        font = find_font()
    except Exception:  # fontconfig or a font file behaving unexpectedly: the core font still draws
        log.warning("looking for a font failed; the core font is used", exc_info=True)
        font = CORE
    try:
        return _in_language(font, report)
    except Exception:
        if font is CORE:
            raise
        log.warning("disclosure PDF could not be drawn with %s; the core font is used", font.path, exc_info=True)
        return _in_language(CORE, report)


# --- the pages -------------------------------------------------------------------------------------------------------


class DisclosurePageController(Controller):
    include_in_schema = False

    @get("/disclosure/{address:str}")
    async def disclosure(
        self, request: Request[Any, Any, Any], db_session: DbSession, address: FromPath[str]
    ) -> Template | Response[bytes]:
        """The annual public disclosure of a year (``/disclosure/2026``) or its PDF (``/disclosure/2026.pdf``):
        anyone may read it."""
        found = ADDRESS.match(address)
        try:
            if found is None:
                raise NotFound("No such disclosure: the address is /disclosure/<year>.", code="disclosure_not_available")
            report = await disclose(db_session, int(found.group(1)), cached=True)
        except DomainError as exc:
            return error_page(request, exc)
        if found.group(2):
            content = await asyncio.to_thread(disclosure_pdf, report)
            return Response(
                content,
                media_type="application/pdf",
                headers={"Content-Disposition": f'inline; filename="disclosure-{report.year}.pdf"'},
            )
        return page(
            request,
            "disclosure/year.html",
            report=report,
            charts=fee_charts(report),
            localised=localised,
            percent=_percent,
            moment=_moment,
        )
