"""Integration prerequisites: skip on a laptop without the service, fail in CI (DIST_VGG_REQUIRE_INTEGRATION=1)."""

import os

import pytest


def require_integration(what: str) -> None:
    """Skip (laptop) or fail (CI, DIST_VGG_REQUIRE_INTEGRATION=1) when a system service is missing."""
    if os.environ.get("DIST_VGG_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"integration prerequisite missing in CI: {what}")
    pytest.skip(what)
