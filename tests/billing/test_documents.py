"""PDF documents of billing through HTTP: the invoice and the settlement statement, read back as text.

No PDF library is installed, so the text is read back here the way a viewer does: the cross-reference table gives
the objects, the page tree the pages, each page's content stream (inflated) the text-showing operators, and each
font's ``ToUnicode`` map turns the glyph codes back into characters (a core font's bytes are Latin-1). Nothing is
matched against the raw bytes: a string is found only if a reader would show it.

Chinese is checked when the machine has a CJK font (``fonts-noto-cjk``, which ``make test`` installs through
``deploy/browser.sh``); without one that test is skipped and says so. The fallbacks (English with a Latin font or
the core font, a font that fails to load) are tested on every machine by choosing the font for the test.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from billing import documents, services
from billing.models import Invoice, SettlementStatement
from marketplace.catalog.models import Plan, Product
from marketplace.core.events import Actor
from marketplace.core.identity.models import Organisation
from marketplace.core.types import utcnow
from tests.billing.support import BillingShop, act, checkout, make_billing_shop, pay, stored
from tests.helpers import assert_problem
from tests.supervision.ledger_helpers import run

PRODUCT_ZH = "城市气象网格数据"
PLAN_ZH = "标准月度套餐"
OPERATOR_ZH = "港湾数据运营有限公司"

# --- reading a PDF back ----------------------------------------------------------------------------------------------


class Name(str):
    """A PDF name (``/Type``)."""


class Op(str):
    """A bare keyword: an operator of a content stream, ``R``, ``obj``, ``true``..."""


@dataclass(frozen=True)
class Ref:
    number: int


@dataclass
class Stream:
    info: dict[str, Any]
    raw: bytes


_DELIMITERS = b"()<>[]{}/%"
_WHITESPACE = b" \t\r\n\f\x00"
_NUMBER = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)$")
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """A ``(...)`` string from ``data[i] == '('``: nested parentheses and escapes."""
    out, depth, i = bytearray(), 1, i + 1
    while True:
        c = data[i]
        if c == ord("\\"):
            n = data[i + 1]
            if n in _ESCAPES:
                out += _ESCAPES[n]
                i += 2
            elif 48 <= n <= 55:
                digits = re.match(rb"[0-7]{1,3}", data[i + 1 : i + 4])
                assert digits is not None
                out.append(int(digits.group(), 8) & 0xFF)
                i += 1 + len(digits.group())
            elif n in b"\r\n":
                i += 3 if data[i + 1 : i + 3] == b"\r\n" else 2
            else:
                out.append(n)
                i += 2
            continue
        if c == ord("("):
            depth += 1
        elif c == ord(")"):
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1


END = object()


class Lexer:
    """PDF tokens of ``data`` from ``pos`` on (``pos`` is kept after the last token read)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def __iter__(self) -> Iterator[Any]:
        while (token := self.next()) is not END:
            yield token

    def next(self) -> Any:
        data, i = self.data, self.pos
        while i < len(data) and (data[i] in _WHITESPACE or data[i] == ord("%")):
            if data[i] == ord("%"):
                while i < len(data) and data[i] not in b"\r\n":
                    i += 1
            else:
                i += 1
        if i >= len(data):
            self.pos = i
            return END
        c = data[i]
        token: Any
        if data.startswith(b"<<", i) or data.startswith(b">>", i):
            token, i = Op(data[i : i + 2].decode()), i + 2
        elif c == ord("<"):
            end = data.index(b">", i)
            digits = re.sub(rb"\s", b"", data[i + 1 : end])
            token, i = bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode()), end + 1
        elif c == ord("("):
            token, i = _literal(data, i)
        elif c in b"[]{}":
            token, i = Op(chr(c)), i + 1
        else:
            start = i + 1 if c == ord("/") else i
            i = start
            while i < len(data) and data[i] not in _WHITESPACE and data[i] not in _DELIMITERS:
                i += 1
            word = data[start:i]
            if c == ord("/"):
                token = Name(re.sub(rb"#([0-9a-fA-F]{2})", lambda m: bytes.fromhex(m.group(1).decode()), word).decode())
            elif _NUMBER.match(word):
                token = Decimal(word.decode()) if b"." in word else int(word)
            else:
                token = Op(word.decode())
        self.pos = i
        return token

    def value(self, first: Any = None) -> Any:
        """One object (read from here when ``first`` is not given); ``N G R`` becomes a ``Ref``."""
        first = self.next() if first is None else first
        if first == "<<":
            items = self._until(">>")
            return {items[k]: items[k + 1] for k in range(0, len(items), 2)}
        if first == "[":
            return self._until("]")
        return first

    def _until(self, closing: str) -> list[Any]:
        items: list[Any] = []
        while (token := self.next()) != closing:
            assert token is not END, f"unclosed {closing}"
            if token == "R" and len(items) >= 2 and isinstance(items[-2], int) and isinstance(items[-1], int):
                items[-2:] = [Ref(items[-2])]
            else:
                items.append(self.value(token))
        return items


class PdfReader:
    """Just enough of a PDF reader for what fpdf2 writes: a classic xref table, plain and Flate streams."""

    def __init__(self, data: bytes) -> None:
        assert data.startswith(b"%PDF-"), data[:20]
        self.data = data
        startxref = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
        assert data.startswith(b"xref", startxref), "only a classic cross-reference table is read"
        self.offsets: dict[int, int] = {}
        lines = iter(data[startxref:].split(b"\n")[1:])
        for line in lines:
            parts = line.split()
            if not parts or parts[0] == b"trailer":
                break
            first, count = int(parts[0]), int(parts[1])
            for number in range(first, first + count):
                offset, _generation, kind = next(lines).split()[:3]
                if kind == b"n":
                    self.offsets[number] = int(offset)
        self.trailer = Lexer(data, data.index(b"trailer", startxref) + len(b"trailer")).value()

    def object(self, ref: Any) -> Any:
        """The object ``ref`` points to (anything else as it is); a stream as ``Stream``."""
        if not isinstance(ref, Ref):
            return ref
        lexer = Lexer(self.data, self.offsets[ref.number])
        number, _generation, keyword = lexer.next(), lexer.next(), lexer.next()
        assert (number, keyword) == (ref.number, "obj")
        value = lexer.value()
        after = re.compile(rb"\s*stream(\r\n|\n)").match(self.data, lexer.pos)
        if isinstance(value, dict) and after is not None:
            length = self.object(value["Length"])
            return Stream(value, self.data[after.end() : after.end() + length])
        return value

    def content(self, stream: Stream) -> bytes:
        filters = stream.info.get("Filter")
        data = stream.raw
        for name in filters if isinstance(filters, list) else [filters] if filters else []:
            assert name == "FlateDecode", name
            data = zlib.decompress(data)
        return data

    def pages(self) -> list[dict[str, Any]]:
        def walk(node: dict[str, Any], inherited: Any) -> Iterator[dict[str, Any]]:
            resources = node.get("Resources", inherited)
            if node.get("Type") == "Pages":
                for kid in node["Kids"]:
                    yield from walk(self.object(kid), resources)
            else:
                yield {**node, "Resources": resources}

        root = self.object(self.trailer["Root"])
        return list(walk(self.object(root["Pages"]), None))

    def info(self) -> dict[str, Any]:
        info = self.object(self.trailer.get("Info"))
        return info if isinstance(info, dict) else {}

    def _decoder(self, font: dict[str, Any]) -> Any:
        """bytes -> text for one font: through its ToUnicode map, or Latin-1 for a simple font without one."""
        if "ToUnicode" not in font:
            return lambda raw: raw.decode("latin-1")
        cmap = list(Lexer(self.content(self.object(font["ToUnicode"]))))
        mapping: dict[bytes, str] = {}
        k = 0
        while k < len(cmap):
            if cmap[k] == "beginbfchar":
                k += 1
                while cmap[k] != "endbfchar":
                    mapping[cmap[k]] = cmap[k + 1].decode("utf-16-be")
                    k += 2
            elif cmap[k] == "beginbfrange":
                k += 1
                while cmap[k] != "endbfrange":
                    low, high, target = cmap[k : k + 3]
                    k += 3
                    span = int.from_bytes(high, "big") - int.from_bytes(low, "big") + 1
                    if target == "[":
                        targets = []
                        while cmap[k] != "]":
                            targets.append(cmap[k].decode("utf-16-be"))
                            k += 1
                        k += 1
                    else:
                        base = target.decode("utf-16-be")
                        targets = [base[:-1] + chr(ord(base[-1]) + n) for n in range(span)]
                    for n, text in enumerate(targets):
                        mapping[(int.from_bytes(low, "big") + n).to_bytes(len(low), "big")] = text
            k += 1
        width = len(next(iter(mapping))) if mapping else 1
        return lambda raw: "".join(mapping.get(raw[p : p + width], "\ufffd") for p in range(0, len(raw), width))

    def text(self) -> str:
        """The text of every page: one line per text object (``BT ... ET``) or move to another line."""
        lines: list[str] = []
        for page in self.pages():
            resources = self.object(page["Resources"]) or {}
            fonts = {name: self.object(ref) for name, ref in (self.object(resources.get("Font")) or {}).items()}
            decoders: dict[str, Any] = {}
            contents = page.get("Contents")
            data = b"\n".join(
                self.content(self.object(part)) for part in (contents if isinstance(contents, list) else [contents])
            )
            operands: list[Any] = []
            current: list[str] = []
            decode: Any = None
            lexer = Lexer(data)
            for token in lexer:
                if not isinstance(token, Op) or token in ("[", "<<"):
                    operands.append(lexer.value(token))
                    continue
                if token == "Tf":
                    name = operands[-2]
                    decode = decoders.setdefault(name, self._decoder(fonts[name]))
                elif token in ("Tj", "'", '"'):
                    if token != "Tj" and current:
                        lines.append("".join(current))
                        current = []
                    current.append(decode(operands[-1]))
                elif token == "TJ":
                    for item in operands[-1]:
                        if isinstance(item, bytes):
                            current.append(decode(item))
                        elif item < -200:
                            current.append(" ")
                elif (token in ("ET", "T*") or (token in ("Td", "TD") and operands[-1] != 0)) and current:
                    lines.append("".join(current))
                    current = []
                operands = []
        return "\n".join(lines)


def pdf_text(pdf: bytes) -> str:
    return PdfReader(pdf).text()


def flat(text: str) -> str:
    """Whitespace (line breaks in table cells included) as single spaces."""
    return " ".join(text.split())


# --- the shop --------------------------------------------------------------------------------------------------------


def _chinese_names(engine: Engine, billing: BillingShop) -> None:
    with Session(engine) as session:
        product = session.get(Product, billing.shop.product.id)
        plan = session.get(Plan, billing.plan.id)
        operator = session.get(Organisation, billing.operator.id)
        assert product is not None
        assert plan is not None
        assert operator is not None
        product.name_zh, plan.name_zh, operator.name_zh = PRODUCT_ZH, PLAN_ZH, OPERATOR_ZH
        session.add_all([product, plan, operator])
        session.commit()


def _invoice_pdf(client: TestClient[Any], billing: BillingShop, invoice_id: str, party: str = "buyer_b") -> Any:
    act(client, billing, party)
    return client.get(f"/api/billing/invoices/{invoice_id}/pdf")


@pytest.fixture
def font_choice(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the documents use the given font (the machine's fonts are not looked at)."""

    def choose(font: documents.FontChoice) -> None:
        monkeypatch.setattr(documents, "find_font", lambda: font)

    return choose


def _latin_font() -> documents.FontChoice:
    found = documents._first_covering(documents.Script.latin, documents.LATIN_PATTERNS, documents.LATIN_PATHS, "Aa0")
    if found is None:
        pytest.skip("no DejaVu Sans on this machine (install fonts-dejavu-core) for the Latin fallback")
    return found


# --- invoices --------------------------------------------------------------------------------------------------------


def test_the_invoice_pdf_has_the_invoice(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    answer = _invoice_pdf(client, billing, invoice["id"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == f'attachment; filename="{invoice["number"]}.pdf"'
    assert answer.content.startswith(b"%PDF-")
    assert answer.content.rstrip().endswith(b"%%EOF")
    text = flat(pdf_text(answer.content))
    assert invoice["number"] in text
    assert "1000.00" in text
    assert f"Total{' 合计' if documents.find_font().chinese else ''}: 1000.00 CNY" in text
    assert "CNY" in text
    assert billing.operator.name in text, "the operator issues the invoice"
    assert billing.shop.buyer_b.name in text
    assert billing.shop.product.name in text
    assert billing.pending.number in text
    assert invoice["lines"][0]["description"] in text
    # The one line: description (English, then Chinese where written), quantity, unit price, amount.
    assert re.search(r"\b1 1000\.00 1000\.00 Total\b", text), text
    assert "open" in text
    # An open bank-transfer invoice says how to pay it: to the operator, quoting the number.
    assert (
        f"How to pay: transfer 1000.00 CNY to {billing.operator.name} by {invoice['due_at'][:10]}, "
        f"quoting the invoice number {invoice['number']} as the payment reference."
    ) in text
    assert "Ledger index of this invoice (invoice.issued)" in text
    assert text.endswith(f": {invoice['ledger_index']}")


def test_the_invoice_pdf_is_the_same_each_time_and_dated_by_the_record(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    first = _invoice_pdf(client, billing, invoice["id"]).content
    again = _invoice_pdf(client, billing, invoice["id"], party="operator").content
    assert first == again
    issued = stored(engine, Invoice, invoice["id"]).issued_at
    assert PdfReader(first).info()["CreationDate"] == f"D:{issued:%Y%m%d%H%M%S}Z".encode()


def test_a_paid_invoice_shows_its_payment_and_no_payment_instructions(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    payment = pay(client, billing, invoice, reference="BOC-PDF-0001").json()
    text = flat(pdf_text(_invoice_pdf(client, billing, invoice["id"]).content))
    assert "paid" in text
    assert "How to pay" not in text
    assert "BOC-PDF-0001" in text
    assert f"ledger index {payment['ledger_index']}" in text
    paid = stored(engine, Invoice, invoice["id"])
    assert paid.paid_at is not None
    assert f"{paid.paid_at:%Y-%m-%d %H:%M} UTC" in text


def test_the_invoice_pdf_writes_the_chinese_names(client: TestClient[Any], engine: Engine) -> None:
    font = documents.find_font()
    if not font.chinese:
        pytest.skip(
            "this machine has no CJK font (install fonts-noto-cjk; `make test` does it through deploy/browser.sh): "
            f"the PDF is written in English only, with {font.path or 'the core font Helvetica'}"
        )
    billing = make_billing_shop(engine)
    _chinese_names(engine, billing)
    invoice = checkout(client, billing)
    text = pdf_text(_invoice_pdf(client, billing, invoice["id"]).content)
    assert PRODUCT_ZH in text
    assert OPERATOR_ZH in text
    assert PLAN_ZH in invoice["lines"][0]["description_zh"]
    assert invoice["lines"][0]["description_zh"] in flat(text)
    assert "账单" in text
    assert f"付款附言中注明账单编号 {invoice['number']}" in flat(text)


def test_without_a_cjk_font_the_invoice_is_in_english(client: TestClient[Any], engine: Engine, font_choice: Any) -> None:
    font_choice(_latin_font())
    billing = make_billing_shop(engine)
    _chinese_names(engine, billing)
    invoice = checkout(client, billing)
    answer = _invoice_pdf(client, billing, invoice["id"])
    assert answer.status_code == 200, answer.text
    text = flat(pdf_text(answer.content))
    assert invoice["number"] in text
    assert invoice["lines"][0]["description"] in text
    assert "How to pay" in text
    assert not re.search(r"[\u3000-\u9fff\uff00-\uffef]", text), "no Chinese without a font for it"


def test_with_the_core_font_or_a_broken_one_the_invoice_is_still_drawn(
    client: TestClient[Any], engine: Engine, font_choice: Any
) -> None:
    billing = make_billing_shop(engine)
    _chinese_names(engine, billing)
    invoice = checkout(client, billing)
    for font in (
        documents.CORE,
        documents.FontChoice(documents.Script.cjk, "/nonexistent/font.ttf", 0, frozenset(range(0x20, 0xFFFF))),
    ):
        font_choice(font)
        answer = _invoice_pdf(client, billing, invoice["id"])
        assert answer.status_code == 200, answer.text
        text = flat(pdf_text(answer.content))
        assert invoice["number"] in text
        assert "1000.00 CNY" in text
        # The core font writes Latin-1: the em dash of the description becomes a hyphen.
        assert invoice["lines"][0]["description"].replace("\u2014", "-") in text
        assert not re.search(r"[\u3000-\u9fff]", text)


def test_another_buyer_gets_404_and_learns_nothing(client: TestClient[Any], engine: Engine) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    answer = _invoice_pdf(client, billing, invoice["id"], party="buyer")
    body = assert_problem(answer, 404, "invoice_not_found")
    unknown = assert_problem(_invoice_pdf(client, billing, str(uuid.uuid4()), party="buyer"), 404, "invoice_not_found")
    assert {k: v for k, v in body.items() if k != "instance"} == {k: v for k, v in unknown.items() if k != "instance"}
    assert invoice["number"] not in answer.text
    assert "content-disposition" not in answer.headers
    assert not answer.content.startswith(b"%PDF")
    client.cookies.clear()
    assert client.get(f"/api/billing/invoices/{invoice['id']}/pdf").status_code == 401
    # The other operator does not see it either.
    assert_problem(_invoice_pdf(client, billing, invoice["id"], party="other_operator"), 404, "invoice_not_found")


# --- statements ------------------------------------------------------------------------------------------------------


def _settle(database_url: str, billing: BillingShop) -> str:
    period = f"{utcnow():%Y-%m}"

    async def work(session: AsyncSession) -> list[str]:
        statements = await services.run_settlement(session, billing.operator.id, period, Actor.of(None))
        return [str(s.id) for s in statements]

    ids = run(database_url, work)
    assert len(ids) == 1, ids
    return ids[0]


def test_the_statement_pdf_has_the_statement_figures(client: TestClient[Any], engine: Engine, database_url: str) -> None:
    billing = make_billing_shop(engine)
    invoice = checkout(client, billing)
    payment = pay(client, billing, invoice).json()
    headers = act(client, billing, "operator")
    refund = client.post(
        f"/api/billing/payments/{payment['id']}/refunds", json={"amount": "100.00", "reason": "Goodwill"}, headers=headers
    )
    assert refund.status_code == 201, refund.text
    statement_id = _settle(database_url, billing)
    statement = client.get(f"/api/billing/settlements/{statement_id}").json()
    # By hand: 1,000.00 received, 100.00 refunded, 12% of the 900.00 left is 108.00, the operator keeps 792.00.
    fee = (Decimal("900.00") * Decimal("0.12")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert (statement["gross"], statement["refunds"], statement["payment_fees"]) == ("1000.00", "100.00", "0.00")
    assert statement["franchise_fee"] == str(fee) == "108.00"
    assert statement["net"] == "792.00"

    for party in ("operator", "owner", "regulator"):
        act(client, billing, party)
        answer = client.get(f"/api/billing/settlements/{statement_id}/pdf")
        assert answer.status_code == 200, (party, answer.text)
        assert answer.headers["content-type"] == "application/pdf"
        assert answer.headers["content-disposition"] == f'attachment; filename="{statement["number"]}.pdf"'
        text = flat(pdf_text(answer.content))
        assert statement["number"] in text
        assert statement["period"] in text
        assert billing.operator.name in text
        assert billing.shop.owner.name in text
        assert "draft" in text
        # The licence's line, then the total line, in the order of the columns.
        line = statement["lines"][0]
        assert f"{line['licence_number']} 0.12 (12%) 1 1000.00 100.00 0.00 108.00 792.00" in text, text
        assert "Total 1 1000.00 100.00 0.00 108.00 792.00" in text.replace("Total 合计", "Total")
        assert "Franchise fee owed" in text
        assert "108.00 CNY" in text
        assert "792.00 CNY" in text
        assert "no difference with the payment records" in text
        stored_statement = stored(engine, SettlementStatement, statement_id)
        assert text.endswith(f": {stored_statement.ledger_index}")

    for party, status, code in (("buyer_b", 403, None), ("other_operator", 404, "statement_not_found")):
        act(client, billing, party)
        answer = client.get(f"/api/billing/settlements/{statement_id}/pdf")
        assert answer.status_code == status, answer.text
        assert not answer.content.startswith(b"%PDF")
        if code:
            assert_problem(answer, status, code)
