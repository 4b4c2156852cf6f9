"""Real servers for integration tests: the private Redis of `make test`."""

from __future__ import annotations

import os

import pytest

from tests import settings as test_settings


@pytest.fixture
def redis_url() -> str:
    """The private Redis started by deploy/with_services.py (required in CI)."""
    url = test_settings.redis_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("MARKET_TEST_REDIS_URL is not set: CI must run the suite through `make test`")
        pytest.skip("needs the private Redis of `make test` (MARKET_TEST_REDIS_URL)")
    return url
