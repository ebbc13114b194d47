"""Fixtures for the executor tests: a fresh fake machine per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.actions.fakekernel import FakeKernelFS, FakeMachine


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path / "root")


@pytest.fixture
def kfs(machine: FakeMachine) -> FakeKernelFS:
    return FakeKernelFS(machine)
