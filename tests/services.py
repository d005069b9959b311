"""Skip-or-fail for tests that need a system service (PostgreSQL, Chromium, SLURM).

On a user's machine a missing service skips the test with a clear reason; under CI
(env ``CI`` set) the same absence fails it, so a green CI run really exercised it.
"""

from __future__ import annotations

import os

import pytest


def require_service(name: str, reason: str) -> None:
    """Call when ``name`` is unavailable: skip locally, fail under CI."""
    msg = f"{name} unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI is set, so this must not be skipped)", pytrace=False)
    pytest.skip(msg)
