"""Licensing services: licences (to be built)."""

from __future__ import annotations
