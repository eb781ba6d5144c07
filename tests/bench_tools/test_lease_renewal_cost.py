"""The Lease renewal bench: its world and what it counts."""

from __future__ import annotations

import pytest

from bench.lease_renewal_cost import main, world


def test_each_device_is_heard_by_its_gateway_and_two_neighbours() -> None:
    idx = world(10, 200)
    sizes = [len(idx.reports[f"gw-{g}"].sightings) for g in range(10)]
    assert sizes == [40] + [60] * 8 + [40]  # 20 devices a gateway; the ends have one neighbour
    assert all(len(idx.merged[f"dev-{d}"].sightings) in (2, 3) for d in range(200))


def test_a_renewal_changes_the_facts_of_that_gateways_devices_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--gateways", "10", "--devices", "200", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "a renewal changes 56 devices' facts" in out  # (8 x 60 + 2 x 40) / 10
