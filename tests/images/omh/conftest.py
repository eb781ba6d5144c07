"""The omh-consolidator image's tests: its package on sys.path, a fake strap on D-Bus."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[3] / "images" / "omh-consolidator"
if str(IMAGE) not in sys.path:
    sys.path.insert(0, str(IMAGE))

from fake_strap import FakeStrap  # noqa: E402

from tests.gateway_monitor.fake_bluez import FakeBlueZ, PrivateBus  # noqa: E402

STRAP = "C0:FF:EE:00:00:42"


@pytest.fixture
async def strap(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeStrap]:
    """A heart-rate strap in range of a fake BlueZ on a private dbus-daemon, which
    bleak finds as the system bus."""
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon is missing: run `bash scripts/system-deps.sh`")
    bus = PrivateBus()
    bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    bluez = FakeBlueZ(bus.address)
    device = FakeStrap(bluez, STRAP)
    try:
        await bluez.start()
        await device.start()
        yield device
    finally:
        await device.stop()
        bluez.stop()
        bus.stop()
