"""PDF documents of billing: an invoice (to its buyer) and a settlement statement (to the owner), drawn with fpdf2.

Both are issued by the operator and carry the record's number, dates, lines, totals, currency and status, and the
ledger index of the record (the ``invoice.issued`` or ``settlement.computed`` event); an open or overdue invoice to
be paid by bank transfer also says how to pay it (to the operator, quoting the invoice number). Money is written
as decimal strings (:func:`billing.services.to_decimal`), never through floats.

Fonts. Chinese needs a CJK font, and none is shipped with the code: one is looked for on the machine once per
process (:func:`find_font`), first through fontconfig (``fc-match`` for Noto Sans CJK SC, Source Han Sans SC,
WenQuanYi and any font for ``zh-cn``), then at known Debian paths (``fonts-noto-cjk``, ``fonts-wqy-microhei``,
``fonts-wqy-zenhei``). A candidate is used only if its character map covers both Chinese and basic Latin, since
one font writes the whole document. Without one, the documents are written in English only (labels, line
descriptions and names without their Chinese forms) with a Unicode Latin font (DejaVu Sans, found the same way)
or, without that either, with the PDF core font Helvetica, where any character outside Latin-1 becomes ``?``.
Characters the chosen font lacks are also written as ``?``. A font that cannot be loaded is skipped for the next
level down: drawing a document never fails for want of a font.

The documents are deterministic: the same record and names give the same bytes (the PDF creation date is the
record's latest timestamp, and fpdf2 derives the file identifier from the content).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from functools import lru_cache

from fontTools.ttLib import TTCollection, TTFont  # type: ignore[import-untyped]
from fpdf import FPDF
from fpdf.enums import Align, TableBordersLayout, XPos, YPos
from fpdf.fonts import FontFace

from billing.models import Gateway, Invoice, InvoiceKind, InvoiceStatus, Payment, SettlementStatement, StatementStatus
from billing.services.invoices import invoice_lines
from billing.services.money import to_decimal

log = logging.getLogger(__name__)

#: Characters a font must have to write both languages (Chinese used in the documents, and Latin).
CJK_SAMPLE = "账单结算订阅付款银行转账总计编号"
LATIN_SAMPLE = "AZaz09.,:-()/%"
#: Font files fpdf2 reads.
FONT_EXTENSIONS = (".ttf", ".ttc", ".otf", ".otc")
#: fontconfig patterns tried for a Chinese font, best first.
CJK_PATTERNS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "sans-serif:lang=zh-cn",
)
#: Where Debian's packages put Chinese fonts (fonts-noto-cjk, fonts-wqy-microhei, fonts-wqy-zenhei).
CJK_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
LATIN_PATTERNS = ("DejaVu Sans",)
LATIN_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")

#: Page layout (A4, millimetres).
MARGIN = 15.0
WIDTH = 210.0 - 2 * MARGIN
GREY = (235, 235, 235)


class Script(Enum):
    """What a font can write: Chinese and Latin, Unicode Latin without Chinese, or Latin-1 (the core font)."""

    cjk = "cjk"
    latin = "latin"
    core = "core"


@dataclass(frozen=True)
class FontChoice:
    """The font documents are written with: a file and its face (in a collection), or the core font."""

    script: Script
    path: str | None = None
    index: int = 0
    #: The code points the font covers (None for the core font: Latin-1).
    coverage: frozenset[int] | None = None

    @property
    def chinese(self) -> bool:
        return self.script is Script.cjk

    def covers(self, char: str) -> bool:
        if self.coverage is None:
            return ord(char) < 256
        return ord(char) in self.coverage


CORE = FontChoice(Script.core)


@dataclass(frozen=True)
class Name:
    """A name in English and, where there is one, in Chinese (an organisation, a product)."""

    en: str
    zh: str | None = None


# --- fonts -----------------------------------------------------------------------------------------------------------


def _fc_match(pattern: str) -> tuple[str, int] | None:
    """fontconfig's best file and face for ``pattern`` (None without fontconfig)."""
    program = shutil.which("fc-match")
    if program is None:
        return None
    try:
        found = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [program, "-f", "%{file}\n%{index}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    path, _, index = found.stdout.partition("\n")
    if found.returncode != 0 or not path:
        return None
    return path, int(index) if index.strip().isdigit() else 0


def _simplified_face(path: str) -> int:
    """The face of a collection meant for Simplified Chinese ("... SC"), else the first."""
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    collection = TTCollection(path, lazy=True)
    try:
        for index, face in enumerate(collection.fonts):
            family = face["name"].getDebugName(1) or ""
            if family.endswith(" SC"):
                return index
    finally:
        collection.close()
    return 0


def _coverage(path: str, index: int) -> frozenset[int] | None:
    """The code points of the face, or None when it cannot be read by fpdf2."""
    if not path.lower().endswith(FONT_EXTENSIONS) or not os.path.isfile(path):
        return None
    try:
        font = TTFont(path, fontNumber=index, lazy=True)
        try:
            cmap = font.getBestCmap() or {}
        finally:
            font.close()
    except Exception:  # an unreadable or unusual font file is skipped, whatever the reason
        log.warning("font %s (face %d) could not be read; skipped", path, index, exc_info=True)
        return None
    return frozenset(cmap)


def _candidates(patterns: Iterable[str], paths: Iterable[str]) -> Iterable[tuple[str, int]]:
    for pattern in patterns:
        found = _fc_match(pattern)
        if found is not None:
            yield found
    for path in paths:
        if os.path.isfile(path):
            try:
                yield path, _simplified_face(path)
            except Exception:
                log.warning("font collection %s could not be read; skipped", path, exc_info=True)


def _first_covering(script: Script, patterns: Iterable[str], paths: Iterable[str], sample: str) -> FontChoice | None:
    seen: set[tuple[str, int]] = set()
    for path, index in _candidates(patterns, paths):
        if (path, index) in seen:
            continue
        seen.add((path, index))
        coverage = _coverage(path, index)
        if coverage is not None and all(ord(c) in coverage for c in sample):
            return FontChoice(script, path, index, coverage)
    return None


@lru_cache(maxsize=1)
def find_font() -> FontChoice:
    """The best font on this machine: one writing Chinese and Latin, else a Unicode Latin one, else the core font
    (looked for once per process; ``find_font.cache_clear()`` looks again)."""
    chosen = _first_covering(Script.cjk, CJK_PATTERNS, CJK_PATHS, CJK_SAMPLE + LATIN_SAMPLE)
    if chosen is None:
        chosen = _first_covering(Script.latin, LATIN_PATTERNS, LATIN_PATHS, LATIN_SAMPLE)
        log.warning(
            "no Chinese font found (install fonts-noto-cjk): billing PDFs are written in English only, with %s",
            chosen.path if chosen else "the core font Helvetica",
        )
    return chosen or CORE


# --- drawing ---------------------------------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d")


def _rate(fee_rate: str) -> str:
    """``0.12`` -> ``0.12 (12%)``."""
    try:
        percent = Decimal(fee_rate) * 100
    except ArithmeticError:
        return fee_rate
    text = format(percent.normalize(), "f")
    return f"{fee_rate} ({text}%)"


INVOICE_STATUS = {
    InvoiceStatus.open: ("open", "待付款"),
    InvoiceStatus.overdue: ("overdue", "已逾期"),
    InvoiceStatus.paid: ("paid", "已付款"),
    InvoiceStatus.void: ("void", "已作废"),
}
STATEMENT_STATUS = {
    StatementStatus.draft: ("draft", "草稿"),
    StatementStatus.issued: ("issued", "已出具"),
    StatementStatus.acknowledged: ("acknowledged", "已确认"),
}
GATEWAY = {Gateway.invoice: ("bank transfer", "银行转账"), Gateway.stripe: ("card payment (Stripe)", "在线支付 (Stripe)")}
KIND = {
    InvoiceKind.subscription: ("subscription", "订阅"),
    InvoiceKind.renewal: ("renewal", "续期"),
    InvoiceKind.usage: ("usage", "用量"),
}


class Document:
    """One document being drawn with a chosen font; every text goes through :meth:`text` (Chinese only when the
    font writes it, characters the font lacks as ``?``)."""

    def __init__(self, font: FontChoice, title: str, author: str, created: datetime) -> None:
        self.font = font
        pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        pdf.set_margins(MARGIN, MARGIN, MARGIN)
        pdf.set_auto_page_break(True, margin=MARGIN)
        pdf.set_creation_date(created.astimezone(UTC))
        if font.path is not None:
            pdf.add_font("doc", "", font.path, collection_font_number=font.index)
            self.family = "doc"
        else:
            self.family = "helvetica"
        pdf.set_lang("zh-CN" if font.chinese else "en")
        self.pdf = pdf
        pdf.set_title(self.text(title))
        pdf.set_author(self.text(author))
        pdf.set_creator("billing")
        pdf.add_page()
        self.size(10)

    def size(self, points: float) -> None:
        self.pdf.set_font(self.family, "", points)

    def text(self, value: str) -> str:
        """``value`` as the font can write it."""
        value = value.replace("\u2014", "-") if self.font.script is Script.core else value
        return "".join(c if c in "\n" or self.font.covers(c) else "?" for c in value)

    def both(self, en: str, zh: str | None) -> str:
        """English, and the Chinese after it when the font writes Chinese."""
        return self.text(f"{en} {zh}" if zh and self.font.chinese else en)

    def lines(self, en: str, zh: str | None) -> str:
        """English, and the Chinese on the next line when the font writes Chinese."""
        return self.text(f"{en}\n{zh}" if zh and self.font.chinese else en)

    def name(self, name: Name) -> str:
        return self.lines(name.en, name.zh)

    def heading(self, en: str, zh: str, number: str) -> None:
        self.size(18)
        self.pdf.cell(WIDTH, 10, self.both(en, zh), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.size(11)
        self.pdf.cell(WIDTH, 6, self.text(number), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.ln(3)
        self.size(9)

    def facts(self, rows: Sequence[tuple[tuple[str, str], str]]) -> None:
        """Label / value pairs in two columns."""
        with self.pdf.table(
            col_widths=(55, WIDTH - 55),
            width=WIDTH,
            first_row_as_headings=False,
            borders_layout=TableBordersLayout.NONE,
            text_align=(Align.L, Align.L),
            line_height=5,
            padding=0.8,
        ) as table:
            for (en, zh), value in rows:
                row = table.row()
                row.cell(self.both(en, zh))
                row.cell(self.text(value))
        self.pdf.ln(3)

    def grid(
        self, widths: Sequence[float], align: Sequence[Align], head: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]
    ) -> None:
        """A table of figures with a grey heading row (the rows' texts are already made writable)."""
        self.size(8)
        with self.pdf.table(
            col_widths=tuple(widths),
            width=sum(widths),
            text_align=tuple(align),
            headings_style=FontFace(emphasis=None, fill_color=GREY),
            line_height=4.5,
            padding=1,
        ) as table:
            heading = table.row()
            for en, zh in head:
                heading.cell(self.lines(en, zh))
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(value)
        self.pdf.ln(3)
        self.size(9)

    def paragraph(self, text: str) -> None:
        self.pdf.multi_cell(WIDTH, 5, text, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.ln(2)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _draw(draw: Callable[[FontChoice], bytes]) -> bytes:
    """Draw with the font found, or with the core font when that fails for any reason."""
    try:
        fonts = [find_font()]
    except Exception:  # fontconfig or a font file behaving unexpectedly: the core font still draws
        log.warning("looking for a font failed; the core font is used", exc_info=True)
        fonts = []
    for font in fonts:
        try:
            return draw(font)
        except Exception:
            log.warning("billing PDF could not be drawn with %s; the core font is used", font.path, exc_info=True)
    return draw(CORE)


# --- invoices --------------------------------------------------------------------------------------------------------


def _draw_invoice(
    font: FontChoice,
    inv: Invoice,
    issuer: Name,
    buyer: Name,
    product: Name | None,
    subscription_number: str | None,
    payment: Payment | None,
) -> bytes:
    c = inv.currency
    total = f"{to_decimal(inv.amount_minor, c)} {c}"
    stamps = [s for s in (inv.issued_at, inv.paid_at, inv.voided_at) if s is not None]
    doc = Document(font, f"Invoice {inv.number}", issuer.en, max(stamps))
    doc.heading("Invoice", "账单", inv.number)
    status, status_zh = INVOICE_STATUS[inv.status]
    gateway, gateway_zh = GATEWAY[inv.gateway]
    kind, kind_zh = KIND[inv.kind]
    facts: list[tuple[tuple[str, str], str]] = [
        (("Issuer", "开具方"), doc.name(issuer)),
        (("Buyer", "购买方"), doc.name(buyer)),
    ]
    if product is not None:
        facts.append((("Product", "产品"), doc.name(product)))
    if subscription_number:
        facts.append((("Subscription", "订阅编号"), doc.text(subscription_number)))
    facts += [
        (("Invoice number", "编号"), doc.text(inv.number)),
        (("Status", "状态"), doc.both(status, status_zh)),
        (("Issued", "开具时间"), _when(inv.issued_at)),
        (("Due", "付款期限"), _day(inv.due_at)),
        (("Service period", "服务期间"), f"{_day(inv.period_start)} - {_day(inv.period_end)}"),
        (("For", "类型"), doc.both(kind, kind_zh)),
        (("Payment method", "付款方式"), doc.both(gateway, gateway_zh)),
        (("Currency", "币种"), c),
    ]
    if inv.paid_at is not None:
        facts.append((("Paid", "付款时间"), _when(inv.paid_at)))
    doc.facts(facts)
    rows = [
        [
            doc.lines(line.description, line.description_zh),
            str(line.quantity),
            to_decimal(line.unit_minor, c),
            to_decimal(line.amount_minor, c),
        ]
        for line in invoice_lines(inv)
    ]
    rows.append([doc.both("Total", "合计"), "", "", to_decimal(inv.amount_minor, c)])
    doc.grid(
        (WIDTH - 75, 15, 30, 30),
        (Align.L, Align.R, Align.R, Align.R),
        (("Description", "说明"), ("Qty", "数量"), (f"Unit price ({c})", "单价"), (f"Amount ({c})", "金额")),
        rows,
    )
    doc.size(11)
    doc.paragraph(doc.both("Total", "合计") + f": {total}")
    doc.size(9)
    if inv.gateway is Gateway.invoice and inv.status in (InvoiceStatus.open, InvoiceStatus.overdue):
        doc.paragraph(
            doc.text(
                f"How to pay: transfer {total} to {issuer.en} by {_day(inv.due_at)}, quoting the invoice number "
                f"{inv.number} as the payment reference. The operator records the transfer when it arrives."
            )
        )
        if font.chinese:
            doc.paragraph(
                doc.text(
                    f"付款说明\uff1a请于 {_day(inv.due_at)} 前通过银行转账向 {issuer.zh or issuer.en} 支付 {total}\uff0c"
                    f"并在付款附言中注明账单编号 {inv.number}。运营方收到转账后予以登记。"
                )
            )
    if payment is not None:
        received = f"Payment received {_when(payment.received_at)}, reference {payment.reference}"
        if payment.ledger_index is not None:
            received += f", ledger index {payment.ledger_index}"
        doc.paragraph(doc.text(received + "."))
    ledger = "-" if inv.ledger_index is None else str(inv.ledger_index)
    doc.paragraph(doc.both("Ledger index of this invoice (invoice.issued)", "账本索引") + f": {ledger}")
    return doc.output()


def invoice_pdf(
    invoice: Invoice,
    *,
    issuer: Name,
    buyer: Name,
    product: Name | None = None,
    subscription_number: str | None = None,
    payment: Payment | None = None,
) -> bytes:
    """The invoice as a PDF, issued by the operator (``issuer``) to ``buyer``; ``payment`` is the one that paid it."""
    return _draw(lambda font: _draw_invoice(font, invoice, issuer, buyer, product, subscription_number, payment))


# --- statements ------------------------------------------------------------------------------------------------------


def _draw_statement(font: FontChoice, st: SettlementStatement, issuer: Name, owner: Name) -> bytes:
    c = st.currency
    stamps = [s for s in (st.computed_at, st.issued_at, st.acknowledged_at) if s is not None]
    doc = Document(font, f"Settlement statement {st.number}", issuer.en, max(stamps))
    doc.heading("Settlement statement", "结算单", st.number)
    status, status_zh = STATEMENT_STATUS[st.status]
    doc.facts(
        [
            (("Operator (issuer)", "运营方"), doc.name(issuer)),
            (("Owner", "数据所有方"), doc.name(owner)),
            (("Statement number", "编号"), doc.text(st.number)),
            (("Period", "结算期间"), st.period),
            (("Status", "状态"), doc.both(status, status_zh)),
            (("Computed", "计算时间"), _when(st.computed_at)),
            (("Issued", "出具时间"), _when(st.issued_at)),
            (("Acknowledged", "确认时间"), _when(st.acknowledged_at)),
            (("Currency", "币种"), c),
        ]
    )
    rows = []
    for line in json.loads(st.lines_json):
        net = line["gross_minor"] - line["refunds_minor"] - line["fees_minor"] - line["franchise_fee_minor"]
        rows.append(
            [
                doc.text(str(line["licence_number"])),
                doc.text(_rate(str(line["fee_rate"]))),
                str(line["payments"]),
                to_decimal(line["gross_minor"], c),
                to_decimal(line["refunds_minor"], c),
                to_decimal(line["fees_minor"], c),
                to_decimal(line["franchise_fee_minor"], c),
                to_decimal(net, c),
            ]
        )
    rows.append(
        [
            doc.both("Total", "合计"),
            "",
            str(st.payments),
            to_decimal(st.gross_minor, c),
            to_decimal(st.refunds_minor, c),
            to_decimal(st.fees_minor, c),
            to_decimal(st.franchise_fee_minor, c),
            to_decimal(st.net_minor, c),
        ]
    )
    doc.grid(
        (30, 20, 18, 22, 21, 21, 24, 24),
        (Align.L, Align.L, *[Align.R] * 6),
        (
            ("Licence", "许可"),
            ("Fee rate", "费率"),
            ("Payments", "笔数"),
            ("Gross", "总收入"),
            ("Refunds", "退款"),
            ("Payment fees", "支付手续费"),
            ("Franchise fee", "特许经营费"),
            ("Net", "净收入"),
        ),
        rows,
    )
    doc.facts(
        [
            (("Gross", "总收入"), f"{to_decimal(st.gross_minor, c)} {c} (payments: {st.payments})"),
            (("Refunds", "退款"), f"{to_decimal(st.refunds_minor, c)} {c} (refunds: {st.refunds})"),
            (("Payment fees", "支付手续费"), f"{to_decimal(st.fees_minor, c)} {c}"),
            (("Franchise fee owed", "应付特许经营费"), f"{to_decimal(st.franchise_fee_minor, c)} {c}"),
            (("Operator net", "运营方净收入"), f"{to_decimal(st.net_minor, c)} {c}"),
        ]
    )
    mismatches = json.loads(st.mismatches_json)
    if mismatches:
        doc.paragraph(doc.text(f"Reconciliation: {len(mismatches)} difference(s) with the payment records:"))
        for mismatch in mismatches:
            doc.paragraph(doc.text("- " + ", ".join(f"{k}: {v}" for k, v in mismatch.items())))
    else:
        doc.paragraph(doc.both("Reconciliation: no difference with the payment records.", "对账无差异。"))
    ledger = "-" if st.ledger_index is None else str(st.ledger_index)
    doc.paragraph(doc.both("Ledger index of this statement (settlement.computed)", "账本索引") + f": {ledger}")
    return doc.output()


def statement_pdf(statement: SettlementStatement, *, issuer: Name, owner: Name) -> bytes:
    """The settlement statement as a PDF, issued by the operator (``issuer``) to the owner."""
    return _draw(lambda font: _draw_statement(font, statement, issuer, owner))
