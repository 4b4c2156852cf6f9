"""Delivery routes."""

from __future__ import annotations

from typing import Any

#: Every delivery controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = []
