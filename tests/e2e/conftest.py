"""Fixtures of the real-kernel tier: one prepared guest kernel per session.

Rule: fixtures prepare and boot; the tests assert. A machine that cannot run qemu skips the tier
with the harness's reason (shown by `-ra`), never silently.
"""

from __future__ import annotations

import pytest

from tests.e2e import harness


@pytest.fixture(scope="session")
def guest_kernel() -> harness.GuestKernel:
    try:
        return harness.prepare()
    except harness.HarnessUnavailableError as e:
        pytest.skip(f"real-kernel tier unavailable: {e}")
