"""Fixtures for the gateway monitor tests: a fake BlueZ on a private dbus-daemon."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from fake_bluez import FakeBlueZ, PrivateBus


@pytest.fixture
async def fake_bluez(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBlueZ]:
    """A fake ``org.bluez`` that bleak finds on the "system" bus (our private daemon)."""
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon is missing: run `bash scripts/system-deps.sh`")
    bus = PrivateBus()
    bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    fake = FakeBlueZ(bus.address)
    try:
        await fake.start()
        yield fake
    finally:
        fake.stop()
        bus.stop()
