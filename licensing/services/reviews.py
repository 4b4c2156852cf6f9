"""Licensing services: reviews (to be built)."""

from __future__ import annotations
