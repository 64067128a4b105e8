"""Fixtures of the controller unit tests."""

from __future__ import annotations

import pytest
from tests.unit.controller import _builders

from continue_orchestrator import controller


@pytest.fixture
def settings() -> controller.Settings:
    return _builders.make_settings()
