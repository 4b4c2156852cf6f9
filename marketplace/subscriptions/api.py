"""Subscriptions routes."""

from __future__ import annotations

from typing import Any

#: Every subscriptions controller, composed by ``marketplace.app``.
CONTROLLERS: list[Any] = []
