"""Licensing tasks (to be built): licence expiry."""

from __future__ import annotations
