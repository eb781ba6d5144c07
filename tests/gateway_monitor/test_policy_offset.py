"""The gateway's RSSI offset comes from the policy (reloaded) unless set explicitly."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench import synthetic_traces
from gateway_monitor import traces
from gateway_monitor.app import running
from gateway_monitor.settings import Settings, policy_offset

ADDR = "C0:FF:EE:00:00:01"
POLICY = """apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  gateways:
    gw1: {{rssiOffset: {offset}}}
    gw2: {{rssiOffset: 4}}
  classes:
    anonymiser: {{tiers: [gateway, edge]}}
"""


def test_policy_offset_reads_this_node_only(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(offset=-6))
    assert policy_offset(path, "gw1") == -6.0
    assert policy_offset(path, "gw2") == 4.0
    assert policy_offset(path, "gw3") is None
    path.write_text(POLICY.format(offset=99))
    with pytest.raises(ValueError, match=r"spec\.gateways\.gw1\.rssiOffset"):
        policy_offset(path, "gw1")


async def test_policy_reload_recalibrates_the_running_monitor(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(offset=-30))  # a deaf radio: -60 reads as -90
    trace = tmp_path / "t.jsonl"
    traces.write_trace(
        trace, synthetic_traces.stationary(ADDR, -60.0, duration=600.0, noise_sd=1.0)
    )
    settings = Settings(
        node="gw1",
        replay=trace,
        speed=20.0,
        dry_run=True,
        static_devices={"patient-1": ADDR},
        policy=policy,
        policy_poll=0.05,
    )
    async with running(settings) as rt:
        await asyncio.sleep(1.0)  # 20 s of trace: plenty of adverts
        assert rt.tracker.config.offset == -30.0
        assert rt.tracker.present_count() == 0
        assert not rt.dry_run_log

        policy.write_text(POLICY.format(offset=0))
        stat = policy.stat()
        os.utime(policy, (stat.st_atime, stat.st_mtime + 5))  # coarse mtime clocks
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while rt.tracker.present_count() == 0:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert rt.tracker.config.offset == 0.0
        sighting = rt.dry_run_log[-1]["status"]["sightings"][0]
        assert -64 <= sighting["rssi"] <= -56


async def test_explicit_offset_wins_over_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(offset=-30))
    trace = tmp_path / "t.jsonl"
    traces.write_trace(
        trace, synthetic_traces.stationary(ADDR, -60.0, duration=600.0, noise_sd=1.0)
    )
    settings = Settings(
        node="gw1",
        replay=trace,
        speed=20.0,
        dry_run=True,
        static_devices={"patient-1": ADDR},
        policy=policy,
        policy_poll=0.05,
        rssi_offset=5.0,
    )
    async with running(settings) as rt:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not rt.dry_run_log:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert rt.tracker.config.offset == 5.0
        assert -59 <= rt.dry_run_log[-1]["status"]["sightings"][0]["rssi"] <= -51


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("spec: [1, 2", r"line \d+ not YAML"),
        ("", r"the document must be a mapping, not nothing"),
        ("- just\n- a list\n", r"the document must be a mapping, not list"),
        ("spec: 7\n", r"spec must be a mapping, not int"),
        ("spec: {gateways: [gw1]}\n", r"spec\.gateways must be a mapping, not list"),
        ("spec: {gateways: {gw1: -6}}\n", r"spec\.gateways\.gw1 must be a mapping, not int"),
        ("spec: {gateways: {gw1: {rssiOfset: -6}}}\n", r"gw1: unknown field rssiOfset"),
        ("spec: {gateways: {gw1: {rssiOffset: loud}}}\n", r"rssiOffset must be a number"),
        ("spec: {gateways: {gw1: {rssiOffset: true}}}\n", r"rssiOffset must be a number"),
        ("spec: {gateways: {gw1: {rssiOffset: .nan}}}\n", r"rssiOffset = nan is outside"),
        ("spec: {gateways: {gw1: {rssiOffset: -40.5}}}\n", r"rssiOffset = -40.5 is outside"),
        # The extender refuses a file with a key twice: its offset must not apply here.
        (
            "spec:\n  gateways:\n    gw1: {rssiOffset: 3}\n    gw1: {rssiOffset: 12}\n",
            r"line 4: key 'gw1' appears twice",
        ),
        ("spec: {gateways: {gw1: {rssiOffset: 3, rssiOffset: 12}}}\n", r"'rssiOffset' appears"),
    ],
)
def test_policy_offset_garbage_is_a_clear_error(tmp_path: Path, text: str, error: str) -> None:
    """Read without the policy models (issue 23: the Pi's memory): each bad shape on the
    way to this node's offset is refused naming the file and the field."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error) as refused:
        policy_offset(path, "gw1")
    assert str(path) in str(refused.value)


def test_policy_offset_absent_parts_mean_no_offset(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    for text in ("spec: {}\n", "spec: {gateways: {}}\n", "spec: {gateways: {gw1: {}}}\n"):
        path.write_text(text)
        assert policy_offset(path, "gw1") is None, text
    path.write_text("spec: {gateways: {gw1: {rssiOffset: 40, excludeFromVote: true}}}\n")
    assert policy_offset(path, "gw1") == 40.0
