"""The Lease renewer's health follows elapsed time, not the gateway's wall clock."""

from __future__ import annotations

from typing import Any

from gateway_monitor.lease import LeaseRenewer


class Api:
    def __init__(self) -> None:
        self.down = False
        self.renew_times: list[str] = []

    async def read_namespaced_lease(self, name: str, ns: str) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": "1"}}

    async def replace_namespaced_lease(self, name: str, ns: str, body: Any) -> dict[str, Any]:
        if self.down:
            raise ConnectionRefusedError("apiserver away")
        self.renew_times.append(body["spec"]["renewTime"])
        return {"metadata": {"resourceVersion": "2"}}


async def test_a_wall_clock_step_changes_neither_way_what_healthy_says() -> None:
    wall, mono = [1_800_000_000.0], [100.0]
    api = Api()
    lease = LeaseRenewer(api, "gw1", "ns", wall=lambda: wall[0], clock=lambda: mono[0])
    assert await lease.renew()
    assert lease.renewed_wall == 1_800_000_000.0
    wall[0] += 3600.0  # NTP steps the clock an hour forward: renewed a second ago
    mono[0] += 1.0
    assert lease.healthy
    wall[0] -= 7200.0  # ... then an hour back, and the apiserver is away
    api.down = True
    for _ in range(30):  # 300 s of failed renewals
        wall[0] += 10.0
        mono[0] += 10.0
        assert not await lease.renew()
    assert not lease.healthy  # lapsed (40 s lease), whatever the wall clock says
    api.down = False
    assert await lease.renew()
    assert lease.healthy
    assert api.renew_times[-1].startswith("2027-01-15T07:")  # renewTime is the wall clock
