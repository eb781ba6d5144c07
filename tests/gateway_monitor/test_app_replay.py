"""The whole monitor on replayed traces (several gateways in one process), /metrics, /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench import synthetic_traces
from gateway_monitor import httpserver, traces
from gateway_monitor.app import MonitorApp, create_app, running
from gateway_monitor.cli import build_parser, main, settings_from_args
from gateway_monitor.scanner import ReplaySource
from gateway_monitor.settings import Settings
from gateway_monitor.tracker import ConfigError
from tests.waiting import eventually

ADDR = "C0:FF:EE:00:00:01"


class Client:
    """Plain HTTP/1.1 GETs to the monitor's own server (what kubelet and Prometheus do)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: monitor\r\n\r\n".encode())
        raw = await reader.read()  # the server closes after each answer
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        assert int(headers["content-length"]) == len(body)
        return int(status_line.split()[1]), headers, body

    async def json(self, path: str) -> tuple[int, Any]:
        status, _, body = await self.get(path)
        return status, json.loads(body)

    async def text(self, path: str) -> str:
        return (await self.get(path))[2].decode()


@contextlib.asynccontextmanager
async def serving(app: MonitorApp) -> AsyncIterator[Client]:
    await app.start()
    server = await httpserver.serve(app.routes(), "127.0.0.1", 0)
    try:
        yield Client(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        await app.stop()


def settings_for(node: str, trace: Path, *extra: str) -> Settings:
    args = build_parser().parse_args(
        ["--node", node, "--replay", str(trace), "--speed", "100", "--dry-run",
         "--device", f"patient-1={ADDR}", *extra]
    )  # fmt: skip
    return settings_from_args(args)


async def test_two_gateways_replay_a_walk_and_hand_over(tmp_path: Path) -> None:
    gw1_trace, gw2_trace = synthetic_traces.walk(ADDR, [0.0, 20.0], duration=150.0, seed=7)
    stranger = synthetic_traces.stationary("DE:AD:BE:EF:00:01", -50.0, duration=150.0, seed=9)
    traces.write_trace(tmp_path / "gw1.jsonl", sorted(gw1_trace + stranger, key=lambda r: r.t))
    traces.write_trace(tmp_path / "gw2.jsonl", gw2_trace)

    async with (
        running(settings_for("gw1", tmp_path / "gw1.jsonl")) as gw1,
        running(settings_for("gw2", tmp_path / "gw2.jsonl")) as gw2,
    ):
        # gw2 keeps hearing the device to the end; gw1 lost it mid-walk
        await eventually(lambda: any(b["status"]["sightings"] for b in gw2.dry_run_log))
        await eventually(
            lambda: bool(gw1.dry_run_log) and not gw1.dry_run_log[-1]["status"]["sightings"]
        )
        assert isinstance(gw1.source, ReplaySource)
        await asyncio.wait_for(gw1.source.finished.wait(), 15)
        gw1_bodies = [b["status"]["sightings"] for b in gw1.dry_run_log]
        gw2_bodies = [b["status"]["sightings"] for b in gw2.dry_run_log]

    # each gateway writes its own report only
    assert {b["metadata"]["name"] for b in gw1.dry_run_log} == {"gw1"}
    assert {b["metadata"]["name"] for b in gw2.dry_run_log} == {"gw2"}
    # gw1: present (the device's entry only), then exactly one removal at the end
    assert all(s == [] or [e["device"] for e in s] == ["patient-1"] for s in gw1_bodies)
    assert gw1_bodies.count([]) == 1
    assert gw1_bodies[-1] == []
    # gw2: present from some point on, never removed while the trace ran
    assert gw2_bodies
    assert all(s and s[0]["device"] == "patient-1" for s in gw2_bodies)
    assert gw2_bodies[-1][0]["rssi"] > -75
    # the stranger, the loudest advertiser of all, never appears anywhere
    assert all(
        [e["device"] for e in b["status"]["sightings"]] in ([], ["patient-1"])
        for b in gw1.dry_run_log + gw2.dry_run_log
    )
    dropped = gw1.metrics.registry.get_sample_value(
        "cloud4iot_gateway_monitor_adverts_total", {"result": "dropped"}
    )
    assert dropped == len(stranger)


async def test_metrics_and_healthz(tmp_path: Path) -> None:
    trace = synthetic_traces.stationary(ADDR, -60.0, duration=20.0, seed=3)
    traces.write_trace(tmp_path / "t.jsonl", trace)
    async with serving(create_app(settings_for("gw1", tmp_path / "t.jsonl"))) as client:
        status, body = await client.json("/healthz")
        assert status == 200
        assert body["node"] == "gw1"
        assert body["scanner"]["mode"] == "replay"

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        text = await client.text("/metrics")
        while "cloud4iot_gateway_monitor_devices_present 1.0" not in text:
            assert loop.time() < deadline, text
            await asyncio.sleep(0.05)
            text = await client.text("/metrics")
        assert 'cloud4iot_gateway_monitor_adverts_total{result="tracked"}' in text
        assert 'cloud4iot_gateway_monitor_presence_changes_total{transition="arrived"} 1.0' in text
        assert "cloud4iot_gateway_monitor_errors_total" in text
        _, headers, _ = await client.get("/metrics")
        assert headers["content-type"].startswith("text/plain; version=")


async def test_missing_bluez_is_unhealthy_and_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-such-bus")
    args = build_parser().parse_args(
        ["--node", "gw1", "--dry-run", "--device", f"patient-1={ADDR}"]
    )
    async with serving(create_app(settings_from_args(args))) as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (answer := await client.json("/healthz"))[0] != 503:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert answer[1]["scanner"]["healthy"] is False
        metrics = await client.text("/metrics")
        assert 'cloud4iot_gateway_monitor_errors_total{component="scanner"} 0.0' not in metrics
        assert "cloud4iot_gateway_monitor_scanner_healthy 0.0" in metrics


def test_settings_refuse_an_away_timeout_shorter_than_the_scan_pause(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scan pause"):
        settings_for("gw1", tmp_path / "t.jsonl", "--duty-cycle", "5/60", "--away-timeout", "30")
    with pytest.raises(ConfigError, match="node name"):
        settings_for("", tmp_path / "t.jsonl")


async def test_create_app_builds_the_one_runtime_that_runs(tmp_path: Path) -> None:
    """The Runtime exists from create_app on; starting the app fills in its running
    parts, on that same object."""
    trace = synthetic_traces.stationary(ADDR, -60.0, duration=5.0, seed=3)
    traces.write_trace(tmp_path / "t.jsonl", trace)
    settings = settings_for("gw1", tmp_path / "t.jsonl")
    app = create_app(settings)
    rt = app.runtime
    assert rt.settings is settings
    assert rt.monitor is None
    await app.start()
    try:
        assert app.runtime is rt
        assert rt.monitor is not None
        assert rt.monitor.tracker is rt.tracker
    finally:
        await app.stop()


def test_a_bad_replay_trace_stops_the_command_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1}\n')
    for trace, said in ((bad, f"{bad}:1"), (tmp_path / "absent.jsonl", "No such file")):
        with pytest.raises(SystemExit) as exited:
            main(["--node", "gw1", "--dry-run", "--replay", str(trace), "--device", f"p={ADDR}"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("cloud4iot-gateway-monitor: ")
        assert said in err
        assert "Traceback" not in err
        assert err.count("\n") == 1


def test_a_bad_kubeconfig_or_no_pod_environment_stops_the_command_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    not_yaml = tmp_path / "kubeconfig"
    not_yaml.write_text("clusters: [unclosed\n")
    (tmp_path / "t.jsonl").write_text("")  # (a trace, so only the apiserver's place is wrong)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cases: tuple[tuple[list[str], str], ...] = (
        (["--kubeconfig", str(tmp_path / "absent")], "No such file"),
        (["--kubeconfig", str(not_yaml)], "kubeconfig"),
        ([], "not in a pod"),
    )
    for extra, said in cases:
        with pytest.raises(SystemExit) as exited:
            main(["--node", "gw1", "--replay", str(tmp_path / "t.jsonl"), *extra])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("cloud4iot-gateway-monitor: ")
        assert said in err, err
        assert err.count("\n") == 1


def test_a_dry_run_logs_each_changed_report_and_keeps_a_bounded_few(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from collections import deque

    from gateway_monitor.app import DRY_RUN_KEEP, DryRunSink
    from gateway_monitor.publisher import Sighting

    out: deque[dict[str, object]] = deque(maxlen=DRY_RUN_KEEP)
    sink = DryRunSink("gw1", out)
    with caplog.at_level("INFO", logger="gateway_monitor.app"):
        for t in range(100):  # one advert a second, the smoothed value unchanged
            sink.update("patient-1", Sighting(-60, 1e9 + t))
        sink.update("patient-1", Sighting(-52, 1e9 + 100))
        sink.update("patient-1", None)
    assert len(out) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dry run: report gw1 would list patient-1 -60 dBm",
        "dry run: report gw1 would list patient-1 -52 dBm",
        "dry run: report gw1 would list nothing",
    ]
    for rssi in range(-127, 20):  # a busy dry run: memory stays bounded
        for d in range(10):
            sink.update(f"d{d}", Sighting(rssi, 1e9))
    assert len(out) == DRY_RUN_KEEP
