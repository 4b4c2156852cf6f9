"""Catalog routes (``/api/catalog/*``): listed products for anyone, products and plans for their operator."""

from __future__ import annotations

from typing import Any

#: Every catalog controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = []
