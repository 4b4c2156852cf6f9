"""Licensing API: reviews (to be built)."""

from __future__ import annotations

from litestar import Controller


class ReviewController(Controller):
    path = "/api/licensing"
    tags = ["licensing"]
