"""Catalog tasks (Celery, thin over services; idempotent)."""

from __future__ import annotations
