"""Licensing API: licences (to be built)."""

from __future__ import annotations

from litestar import Controller


class LicenceController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
