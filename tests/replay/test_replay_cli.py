"""`cloud4iot replay` end to end on the flat's recordings (in-process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from extender.cli import main
from tests.replay.helpers import DATA


def test_json_report_on_a_recording_with_truth(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "replay",
            str(DATA / "calib4.adverts.csv.gz"),
            "--truth",
            str(DATA / "calib4.truth.csv.gz"),
            "-o",
            "json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["methods"] == ["policy", "ema-3s-6db", "strongest-5s", "hindsight"]
    total = doc["total"]
    assert total["policy"]["true_changes"] == 2
    # The hindsight path knows the future: nothing online has a smaller p90 deficit.
    for m in ("policy", "ema-3s-6db", "strongest-5s"):
        assert total["hindsight"]["deficit_p90_db"] <= total[m]["deficit_p90_db"]
    assert doc["chain"]["policy"]["adverts"] == 6740


def test_table_compares_two_policies_and_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "replay.png"
    code = main(
        [
            "replay",
            str(DATA / "calib4.adverts.csv.gz"),
            "--compare",
            "policies/default.yaml",
            "--no-baselines",
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[2:4]]
    assert rows == ["policy", "compare"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,gateway\n1,a\n")
    assert main(["replay", str(bad)]) == 2
    assert "missing column(s) rssi_dbm" in capsys.readouterr().err
    assert main(["replay"]) == 2
    assert "give CSV recordings" in capsys.readouterr().err


def test_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert main(["replay", str(DATA / "calib4.adverts.csv.gz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs the 'replay' extra" in err
    assert "install cloud4iot-placement[replay]" in err


def test_a_span_replay_cannot_finish_is_refused_naming_both_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A monitor's --record file counts epoch seconds, the CSV layout seconds from zero:
    # given together, the chain's clock would tick through 56 years (it ran forever).
    csv = tmp_path / "site.csv"
    csv.write_text("time_s,gateway,rssi_dbm\n0,gw-a,-60\n1,gw-a,-61\n")
    trace = tmp_path / "gw-b.jsonl"
    trace.write_text('{"t": 1765000000.5, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}\n')
    assert main(["replay", str(csv), "--trace", f"gw-b={trace}"]) == 2
    err = capsys.readouterr().err
    assert f"from t=0 in {csv}" in err
    assert f"in gw-b={trace}" in err
    assert "epoch seconds" in err
    # One file with a far-off time: the same refusal, without the mixed-clocks hint.
    far = tmp_path / "far.csv"
    far.write_text("time_s,gateway,rssi_dbm\n0,gw-a,-60\n1e10,gw-a,-61\n")
    assert main(["replay", str(far)]) == 2
    err = capsys.readouterr().err
    assert "replay takes at most 31 days" in err
    assert "epoch" not in err
    # Beyond any date a recording has: refused as it is read, with a hint at the unit.
    far.write_text("time_s,gateway,rssi_dbm\n0,gw-a,-60\n1e300,gw-a,-61\n")
    assert main(["replay", str(far)]) == 2
    err = capsys.readouterr().err
    assert f"{far}:3: time_s 1e+300 is beyond ±1e+11 s" in err
    # 31 days is accepted (sparse: the clock's ticks are the cost).
    month = tmp_path / "month.csv"
    month.write_text("time_s,gateway,rssi_dbm\n0,gw-a,-60\n2678400,gw-a,-61\n")
    from replay.inputs import check_span, read_csv_adverts

    check_span({"month": read_csv_adverts(month)})


def _small(tmp_path: Path) -> Path:
    csv = tmp_path / "small.csv"
    csv.write_text(
        "time_s,gateway,rssi_dbm\n"
        + "".join(f"{t / 2},{gw},{-50 if gw == 'a' else -70}\n" for t in range(40) for gw in "ab")
    )
    return csv


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/x.png", "no directory"),
        (".", "a directory; give a file in it"),
        ("x.bogus", "matplotlib draws no .bogus"),
    ],
)
def test_a_plot_that_cannot_be_written_is_refused_before_the_replay(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    message: str,
) -> None:
    """It was a traceback after the whole replay (the results lost), and a directory
    got DIR.png written beside it."""
    import replay.evaluate

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("replayed before refusing the plot")

    monkeypatch.setattr(replay.evaluate, "evaluate", never)
    plot = tmp_path / where
    assert main(["replay", str(_small(tmp_path)), "--plot", str(plot)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--plot {plot}: {message}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.csv"]


def test_a_plot_failing_as_it_writes_keeps_the_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    code = main(["replay", str(_small(tmp_path)), "-o", "json", "--plot", str(tmp_path / "p.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["methods"][0] == "policy"  # printed before the plot
    assert (
        err
        == f"cloud4iot replay: --plot {tmp_path / 'p.png'}: [Errno 28] No space left on device\n"
    )


def test_a_plot_without_a_suffix_is_the_file_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["replay", str(_small(tmp_path)), "--no-baselines", "--plot", str(tmp_path / "p")])
        == 0
    )
    assert (tmp_path / "p").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "p.png").exists()


def test_a_short_recording_in_milliseconds_is_refused_not_read_as_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two minutes in milliseconds span 1.4 days: within the span bound, so it was replayed
    as seconds, every time x1000 and every figure wrong, without a word."""
    from tests.replay.helpers import recording

    rec = recording({"gw-a": (-50, -70), "gw-b": (-70, -50)}, seconds=120)
    for name, scale in (("ms.csv", 1000), ("s.csv", 1)):
        rows = "".join(f"{a.t * scale:.0f},{a.gateway},{a.rssi}\n" for a in rec.adverts)
        (tmp_path / name).write_text("time_s,gateway,rssi_dbm\n" + rows)
    assert main(["replay", str(tmp_path / "ms.csv"), "--no-baselines", "-o", "json"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ms.csv'}: a gateway hears a device every 333 s (median)" in err
    assert "milliseconds?" in err
    # The same adverts in seconds (to the second) replay.
    assert main(["replay", str(tmp_path / "s.csv"), "--no-baselines", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["policy"]["changes"] >= 1
    # A far gateway's trace rightly hears the device rarely: not taken for milliseconds.
    far = tmp_path / "far.jsonl"
    far.write_text(
        "".join(
            f'{{"t": {15 * i}, "address": "AA:BB:CC:DD:EE:FF", "rssi": -90}}\n' for i in range(30)
        )
    )
    args = ["replay", str(tmp_path / "s.csv"), "--trace", f"gw-far={far}", "--no-baselines"]
    assert main(args) == 0, capsys.readouterr().err
