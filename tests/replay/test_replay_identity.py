"""A Device with an identity key, recorded by the real monitors and replayed: one device
across its rotating addresses (it was one device per address, and a move that fell on
a rotation was lost), and --device options that would be ignored are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extender.cli import main
from gateway_monitor.irk import make_rpa
from gateway_monitor.metrics import Metrics
from gateway_monitor.monitor import Monitor
from gateway_monitor.publisher import Sighting
from gateway_monitor.recorder import Recorder
from gateway_monitor.registry import DeviceSpec, Registry
from gateway_monitor.tracker import Tracker, TrackerConfig

IRK = bytes(range(16))
IDENTITY = "C0:11:22:33:44:55"
WALL0 = 1_765_000_000.0


class _Sink:
    """Publishes nothing: only the recorder's lines matter here."""

    def update(self, device: str, sighting: Sighting | None) -> None: ...

    def adopt(self, device: str, sighting: Sighting) -> None: ...

    def forget(self, device: str) -> None: ...


def _record(tmp_path: Path) -> dict[str, Path]:
    """gw-a then gw-b nearest, the switch at 60 s; a new RPA every 30 s (5 adverts/s)."""
    files = {}
    for gw in ("gw-a", "gw-b"):
        now = [0.0]
        registry = Registry()
        registry.replace_all([DeviceSpec(name="watch", address=IDENTITY)])
        registry.set_keys({"watch": IRK})  # its key from the identity-keys Secret
        recorder = Recorder(tmp_path / f"{gw}.jsonl")
        monitor = Monitor(
            gw,
            Tracker(TrackerConfig()),
            registry,
            _Sink(),
            Metrics(),
            clock=lambda now=now: now[0],
            wall=lambda now=now: WALL0 + now[0],
            recorder=recorder,
        )
        for i in range(600):
            t = now[0] = i * 0.2
            near = (t < 60) == (gw == "gw-a")
            monitor.hear(make_rpa(IRK, bytes([1, 2, int(t // 30)])), -50 if near else -80, t)
        assert recorder.flush() == 600
        files[gw] = recorder.path
    return files


def _replay(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], *extra: str
) -> tuple[int, str, str]:
    argv = ["replay", *(f"--trace={gw}={p}" for gw, p in files.items()), *extra]
    code = main([*argv, "-o", "json", "--no-baselines"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_rotating_wearable_replays_as_one_device_with_its_move(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _record(tmp_path)
    lines = [json.loads(x) for x in files["gw-a"].read_text().splitlines()]
    assert len({x["address"] for x in lines}) == 4  # four RPAs on air
    assert {(x["device"], x["identity"]) for x in lines} == {("watch", IDENTITY)}
    code, out, err = _replay(capsys, files)
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["devices"]) == ["watch"]
    policy = doc["devices"]["watch"]["policy"]
    assert policy["changes"] == 1  # gw-a, then gw-b
    assert policy["function_moves"] == 1
    # --device may name the recorded identity address (it used to match nothing).
    code, out, err = _replay(capsys, files, f"--device=wrist={IDENTITY}")
    assert code == 0, err
    assert list(json.loads(out)["devices"]) == ["wrist"]


def test_recordings_without_the_device_field_still_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _record(tmp_path)
    for path in files.values():
        old = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text(
            "".join(json.dumps({k: x[k] for k in ("t", "address", "rssi")}) + "\n" for x in old)
        )
    code, out, err = _replay(capsys, files)
    assert code == 0, err
    assert len(json.loads(out)["devices"]) == 4  # one per address: all they say


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device=w=C0:00:00:00:00:01"], "--device w=C0:00:00:00:00:01: no trace has"),
        ([f"--device=w={IDENTITY}", f"--device=w={IDENTITY}"], "--device w: given twice"),
        ([f"--device=w={IDENTITY}", f"--device=v={IDENTITY}"], "given two names (w, v)"),
        (["--device=w=not-an-address"], "not a Bluetooth address"),
    ],
)
def test_device_options_that_would_be_ignored_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _out, err = _replay(capsys, _record(tmp_path), *extra)
    assert code == 2
    assert message in err


def test_device_with_only_csv_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "site.csv"
    csv.write_text("time_s,gateway,rssi_dbm\n0,gw-a,-60\n1,gw-a,-61\n")
    assert main(["replay", str(csv), f"--device=w={IDENTITY}"]) == 2
    assert "CSV rows name their device" in capsys.readouterr().err
