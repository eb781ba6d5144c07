"""Fixtures for the gateway monitor tests: a fake BlueZ on a private dbus-daemon."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# With tests/conftest.py, pytest puts tests/ on sys.path, and tests/gateway_monitor/ (no
# __init__.py) then shadows the editable-installed package as a namespace package. A
# regular package anywhere on sys.path wins over namespace portions, so put the repo root
# there. Redundant once pyproject's pytest options set `pythonpath = ["."]`.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("gateway_monitor"), "__file__", "") is None:
    del sys.modules["gateway_monitor"]

from fake_bluez import FakeBlueZ, PrivateBus  # noqa: E402


@pytest.fixture(params=[False], ids=["no-monitor-manager"])
async def fake_bluez(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[FakeBlueZ]:
    """A fake ``org.bluez`` that bleak finds on the "system" bus (our private daemon).

    Parametrise indirectly with True for a BlueZ that supports passive scanning.
    """
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon is missing: run `bash scripts/system-deps.sh`")
    bus = PrivateBus()
    bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    fake = FakeBlueZ(bus.address, passive=bool(request.param))
    try:
        await fake.start()
        yield fake
    finally:
        fake.stop()
        bus.stop()
