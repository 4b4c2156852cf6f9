"""Licensing services: resources (to be built)."""

from __future__ import annotations
