"""Fixtures shared across the suite: real brokers and emulators, always stopped afterwards."""

from __future__ import annotations

import pytest

from edgeplane.dev.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto of our own on a free loopback port, stopped after the test."""
    with Mosquitto(tmp_path / "mosquitto") as running:
        yield running
