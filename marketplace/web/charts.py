"""Server-drawn SVG charts for the consoles: stacked bars per day or month, one colour per series.

The page gets plain numbers and boxes (no script): every bar carries a <title> with its exact value, and the
chart is followed by a table of the same figures for screen readers and for copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

#: Colour-blind-safe palette (Okabe-Ito, without black), in series order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    colour: str
    title: str


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart ready for ``_macros.html``'s ``bar_chart``."""

    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]  # (colour, label)
    peak: str
    first: str
    last: str
    categories: list[str] = field(default_factory=list)
    rows: list[tuple[str, list[str]]] = field(default_factory=list)  # (series label, values per category)

    @property
    def empty(self) -> bool:
        """True when every value is zero."""
        return not self.bars


def _fmt(value: Decimal | int) -> str:
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    return f"{value:,}"


def stacked_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[Decimal | int]],
    *,
    width: int = 640,
    height: int = 160,
    unit: str = "",
) -> Chart:
    """Stack each series' value per category (days or months, oldest first)."""
    totals: list[Decimal | int] = [sum(values[i] for values in series.values()) for i in range(len(categories))]
    peak = max(totals, default=0) or 1
    plot = height - 16
    step = width / max(len(categories), 1)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(series)}
    bars: list[Bar] = []
    for i, category in enumerate(categories):
        base = float(plot)
        for label, values in series.items():
            value = values[i]
            if not value:
                continue
            h = float(value) / float(peak) * (plot - 4)
            base -= h
            bars.append(
                Bar(
                    x=round(i * step + 1, 1),
                    y=round(base, 1),
                    w=round(max(step - 2, 1), 1),
                    h=round(max(h, 0.5), 1),
                    colour=colours[label],
                    title=f"{category} · {label}: {_fmt(value)}{unit}",
                )
            )
    rows = [(label, [_fmt(v) for v in values]) for label, values in series.items()]
    return Chart(
        width=width,
        height=height,
        bars=bars,
        legend=[(colours[label], label) for label in series],
        peak=_fmt(max(totals, default=0)) + unit,
        first=categories[0] if categories else "",
        last=categories[-1] if categories else "",
        categories=list(categories),
        rows=rows,
    )
