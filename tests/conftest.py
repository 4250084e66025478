"""Fixtures shared by every tier, and the rule for missing infrastructure.

Outside CI a tier whose infrastructure is missing skips with one line saying how to get
it; with CI=true the same situation fails the run, so CI can never go green by skipping.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, *, what: str, how: str) -> None:
    """Skip (outside CI) or fail (CI=true) unless `available`; `how` tells how to get `what`."""
    if available:
        return
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)
