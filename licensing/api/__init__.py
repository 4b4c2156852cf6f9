"""Licensing HTTP interface under ``/api/licensing``: one controller module per record family."""

from __future__ import annotations

from litestar import Controller

from licensing.api.licences import LicenceController
from licensing.api.resources import ResourceController
from licensing.api.reviews import ReviewController

CONTROLLERS: list[type[Controller]] = [ResourceController, LicenceController, ReviewController]
