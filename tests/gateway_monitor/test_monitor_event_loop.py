"""The monitor process on either event loop (cloud4iot/loops.py): unmodified bleak and
dbus-fast on uvloop hear the fake BlueZ and track its adverts like on asyncio's loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fake_bluez import FakeBlueZ

from devcluster.processes import free_port

pytestmark = pytest.mark.dbus

ROOT = Path(__file__).resolve().parents[2]
WEARABLE = "C0:FF:EE:00:00:07"
TRACKED = 'cloud4iot_gateway_monitor_adverts_total{result="tracked"}'


def tracked(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    line = next((ln for ln in text.splitlines() if ln.startswith(TRACKED)), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_the_monitor_tracks_adverts_on_either_loop(fake_bluez: FakeBlueZ, loop: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "gateway_monitor.cli", "--node", "gw1", "--dry-run"]
    argv += ["--device", f"patient-1={WEARABLE}", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--event-loop", loop, "--log-level", "info"]
    proc = subprocess.Popen(  # noqa: ASYNC220 - the process under test
        argv, cwd=ROOT, env=dict(os.environ), stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not fake_bluez.adapter.discovering:
            assert proc.poll() is None, "the monitor exited"
            assert asyncio.get_running_loop().time() < deadline, "it never started scanning"
            await asyncio.sleep(0.1)
        heard = 0.0
        for i in range(60):
            fake_bluez.advertise(WEARABLE, -60 - i % 3)
            await asyncio.sleep(0.05)
            if i % 10 == 9:
                heard = await asyncio.to_thread(tracked, port)
                if heard >= 5:
                    break
        assert heard >= 5, f"{heard} adverts tracked of {i + 1} sent"
    finally:
        proc.terminate()
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    assert f"({loop} loop)" in err
    assert proc.returncode == 0, err[-2000:]
