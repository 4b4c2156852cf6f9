"""Licensing API: resources (to be built)."""

from __future__ import annotations

from litestar import Controller


class ResourceController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
