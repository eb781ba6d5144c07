"""Reading recordings and truth: both layouts, and bad input refused with file and line."""

from __future__ import annotations

import functools
import gzip
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from replay.inputs import (
    InputError,
    check_truth,
    merge,
    read_csv_adverts,
    read_load,
    read_trace_adverts,
    read_truth,
)
from tests.replay.helpers import DATA


def test_flat_csv_reads_every_reception_in_time_order() -> None:
    rec = read_csv_adverts(DATA / "calib4.adverts.csv.gz")
    assert len(rec.adverts) == 6740  # the README's row count
    assert rec.gateways == [f"anchor-{i}" for i in range(1, 7)]
    assert rec.devices == ["tag"]
    assert all(a.t <= b.t for a, b in zip(rec.adverts, rec.adverts[1:], strict=False))


def test_truth_reads_nearest_gateway_per_time() -> None:
    truth = read_truth(DATA / "calib4.truth.csv.gz")
    samples = truth["tag"]
    assert len(samples) == 1804
    changes = sum(1 for a, b in itertools.pairwise(samples) if a[1] != b[1])
    assert changes == 2  # summary.csv: nearest_gateway_changes


def test_traces_of_two_gateways_merge_on_one_timeline(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(
        '{"t": 1.0, "address": "aa:bb:cc:dd:ee:ff", "rssi": -60}\n'
        '{"t": 3.0, "address": "AA:BB:CC:DD:EE:FF", "rssi": -61}\n'
    )
    b.write_text('{"t": 2.0, "address": "AA:BB:CC:DD:EE:FF", "rssi": -70}\n')
    names = {"wearable": "AA:BB:CC:DD:EE:FF"}
    rec = merge([read_trace_adverts("gw-a", a, names), read_trace_adverts("gw-b", b, names)])
    assert [(x.t, x.gateway, x.device) for x in rec.adverts] == [
        (1.0, "gw-a", "wearable"),
        (2.0, "gw-b", "wearable"),
        (3.0, "gw-a", "wearable"),
    ]
    assert rec.addresses == {"wearable": "AA:BB:CC:DD:EE:FF"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t,gateway,rssi_dbm\n1,a,-50\n", "missing column(s) time_s"),
        ("time_s,gateway,rssi_dbm\n1,a,strong\n", ":2:"),
        ("time_s,gateway,rssi_dbm\n1,,-50\n", ":2: empty gateway"),
        ("time_s,gateway,rssi_dbm\n1,a,-50\n2,a,-500\n", ":3: time_s or rssi_dbm out of range"),
        ("time_s,gateway,rssi_dbm\n1,a,nan\n", ":2: time_s or rssi_dbm out of range"),
        ("time_s,gateway,rssi_dbm\n1,a,inf\n", ":2: time_s or rssi_dbm out of range"),
        ("time_s,gateway,rssi_dbm\ninf,a,-50\n", ":2: time_s or rssi_dbm out of range"),
        # DictReader kept the last of two, silently: here the -90.
        ("time_s,gateway,rssi_dbm,rssi_dbm\n0,a,-50,-90\n", "column(s) rssi_dbm given twice"),
    ],
)
def test_bad_csv_is_refused_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_csv_adverts(path)
    assert str(path) in str(err.value)


def test_corrupt_gzip_and_missing_file_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(b"time_s,gateway,rssi_dbm\n" + b"1,a,-50\n" * 1000)[:60])
    with pytest.raises(InputError, match=r"cut\.csv\.gz"):
        read_csv_adverts(path)
    with pytest.raises(InputError, match=r"nope\.csv"):
        read_csv_adverts(tmp_path / "nope.csv")


def test_bad_trace_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.jsonl"
    path.write_text('{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}\n{"t": 2}\n')
    with pytest.raises(InputError, match=r"gw\.jsonl:2"):
        read_trace_adverts("gw", path)


@pytest.mark.parametrize(
    ("truth_text", "message"),
    [
        ("time_s,nearest_gateway\n1,gw-x\n", r"gateway\(s\) gw-x not in the recordings \(a, b\)"),
        ("time_s,nearest_gateway,device\n1,a,ghost\n", r"device\(s\) ghost not in the recordings"),
        ("time_s,nearest_gateway\nnan,a\n", r":2: time_s out of range"),
    ],
)
def test_truth_naming_what_no_recording_has_is_refused(
    tmp_path: Path, truth_text: str, message: str
) -> None:
    rec = tmp_path / "rec.csv"
    rec.write_text("time_s,gateway,rssi_dbm\n1,a,-50\n2,b,-60\n")
    truth = tmp_path / "truth.csv"
    truth.write_text(truth_text)
    with pytest.raises(InputError, match=message):
        check_truth(read_truth(truth), read_csv_adverts(rec), truth)


@pytest.mark.parametrize(
    ("shift", "hint"),
    [(1_700_000_000.0, "epoch seconds"), (3600.0, "")],
)
def test_truth_on_another_clock_is_refused_naming_both_spans(
    tmp_path: Path, shift: float, hint: str
) -> None:
    """calib4's truth shifted onto the epoch (or an hour on): not one sample falls in the
    recording, and it was scored silently (accuracy, changes reached and lags that
    looked real)."""
    recording = read_csv_adverts(DATA / "calib4.adverts.csv.gz")
    samples = read_truth(DATA / "calib4.truth.csv.gz")
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "time_s,nearest_gateway\n" + "".join(f"{t + shift:.1f},{gw}\n" for t, gw in samples["tag"])
    )
    with pytest.raises(InputError) as info:
        check_truth(read_truth(truth), recording, truth)
    message = str(info.value)
    assert f"0 of {len(samples['tag'])} truth samples fall inside the recordings" in message
    assert f"truth t={0.2 + shift:.6g}.." in message
    assert "recordings t=0..185.76" in message
    assert hint in message
    if not hint:
        assert "epoch" not in message
    # The run's own truth is accepted.
    check_truth(samples, recording, DATA / "calib4.truth.csv.gz")


def test_the_flat_truth_names_only_recorded_anchors() -> None:
    for run in ("calib1", "test_robot"):
        path = DATA / f"{run}.truth.csv.gz"
        check_truth(read_truth(path), read_csv_adverts(DATA / f"{run}.adverts.csv.gz"), path)


@pytest.mark.parametrize(
    "line",
    [
        '{"t": NaN, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}',
        '{"t": Infinity, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}',
        '{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": Infinity}',
        '{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": 1e300}',
        '{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": true}',
        '{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": "-60"}',
        '{"t": true, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}',
        '{"t": "1", "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}',
        '{"t": 1, "address": "zz", "rssi": -60}',
        '{"t": 1, "address": "AA:BB:CC:DD:EE:FF:00", "rssi": -60}',
        '{"t": 1, "address": null, "rssi": -60}',
    ],
)
def test_trace_lines_json_allows_but_no_radio_makes_are_refused(tmp_path: Path, line: str) -> None:
    path = tmp_path / "gw.jsonl"
    path.write_text('{"t": 0.5, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}\n' + line + "\n")
    with pytest.raises(InputError, match=r"gw\.jsonl:2"):
        read_trace_adverts("gw", path)


# Each reader: its file, a text holding the time {t}, where the refusal points ({shown}:
# the time as the message shows it), and how the file is read.
READERS = [
    pytest.param(
        "a.csv",
        "time_s,gateway,rssi_dbm\n1,a,-50\n{t},a,-50\n",
        "a.csv:3: time_s {shown}: ",
        read_csv_adverts,
        id="csv",
    ),
    pytest.param(
        "gw.jsonl",
        '{{"t": {t}, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}}\n',
        "gw.jsonl:1: t {shown}: ",
        functools.partial(read_trace_adverts, "gw"),
        id="trace",
    ),
    pytest.param(
        "truth.csv",
        "time_s,nearest_gateway\n{t},a\n",
        "truth.csv:2: time_s .*",
        read_truth,
        id="truth",
    ),
    pytest.param(
        "load.csv", "time_s,node,cpu\n{t},a,0.5\n", "load.csv:2: time_s .*", read_load, id="load"
    ),
]


@pytest.mark.parametrize(("name", "text", "where", "read"), READERS)
@pytest.mark.parametrize("t", ["1e16", "1765000000000", "-2e11"])
def test_times_no_recording_has_are_refused_in_every_reader(
    tmp_path: Path, t: str, name: str, text: str, where: str, read: Callable[[Path], object]
) -> None:
    """Epoch milliseconds (or micro-, nanoseconds) were read as seconds; past ~4.5e15 the
    chain's 0.25 s tick was lost in rounding and the replay never ended."""
    hint = "epoch milliseconds, microseconds or nanoseconds"
    shown = re.escape(f"{float(t):.6g} is beyond ±1e+11 s (year 5138)")
    path = tmp_path / name
    path.write_text(text.format(t=t))
    with pytest.raises(InputError, match=where.format(shown=shown) + hint):
        read(path)


def test_the_largest_accepted_time_still_replays(tmp_path: Path) -> None:
    """And ends: 1e11 s, the bound the times above are refused beyond."""
    csv = tmp_path / "a.csv"
    csv.write_text("time_s,gateway,rssi_dbm\n99999999990,a,-50\n1e11,a,-50\n")
    assert len(read_csv_adverts(csv).adverts) == 2


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: it was refused as 'missing column(s) time_s'."""
    bom = b"\xef\xbb\xbf"
    csv = tmp_path / "a.csv"
    csv.write_bytes(bom + b"time_s,gateway,rssi_dbm\n0,a,-50\n1,b,-60\n")
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(csv.read_bytes()))
    for path in (csv, packed):
        assert [a.t for a in read_csv_adverts(path).adverts] == [0.0, 1.0]
    truth = tmp_path / "truth.csv"
    truth.write_bytes(bom + b"time_s,nearest_gateway\n0.5,a\n")
    assert read_truth(truth) == {"tag": [(0.5, "a")]}
    load = tmp_path / "load.csv"
    load.write_bytes(bom + b"time_s,node,cpu\n0,a,0.5\n")
    assert read_load(load) == {"a": [(0.0, 0.5, None)]}
    trace = tmp_path / "gw.jsonl"
    trace.write_bytes(bom + b'{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60}\n')
    assert len(read_trace_adverts("gw", trace).adverts) == 1


@pytest.mark.parametrize(
    ("rssi", "accepted"), [(-128, False), (-127, True), (20, True), (21, False), (127, False)]
)
def test_both_layouts_hold_rssi_to_the_same_range(
    tmp_path: Path, rssi: int, accepted: bool
) -> None:
    """A trace took up to +127 dBm (127 is HCI's "not available") where the CSV stops at +20:
    the same reception was replayed from one layout and refused from the other."""
    csv = tmp_path / "a.csv"
    csv.write_text(f"time_s,gateway,rssi_dbm\n1,gw,{rssi}\n")
    trace = tmp_path / "gw.jsonl"
    trace.write_text(f'{{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": {rssi}}}\n')
    readers: list[Callable[[], object]] = [
        lambda: read_csv_adverts(csv),
        lambda: read_trace_adverts("gw", trace),
    ]
    for read in readers:
        if accepted:
            read()
        else:
            with pytest.raises(
                InputError, match=r":2: .*out of range|gw\.jsonl:1: rssi .* out of range"
            ):
                read()


@pytest.mark.parametrize("level", [-60.7, -60.2, -59.5])
def test_both_layouts_read_a_fractional_rssi_alike(tmp_path: Path, level: float) -> None:
    """A trace truncated a fractional RSSI (int(-60.7) = -60) where the CSV rounds (-61):
    the same reception differed by 1 dB between the two layouts."""
    csv = tmp_path / "a.csv"
    csv.write_text(f"time_s,gateway,rssi_dbm\n1,gw,{level}\n")
    trace = tmp_path / "gw.jsonl"
    trace.write_text(f'{{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": {level}}}\n')
    from_csv = read_csv_adverts(csv).adverts[0].rssi
    from_trace = read_trace_adverts("gw", trace).adverts[0].rssi
    assert from_csv == from_trace == round(level)


@pytest.mark.parametrize(("level", "accepted"), [(20.4, True), (20.6, False), (-127.4, True)])
def test_both_layouts_check_the_range_on_the_whole_dbm(
    tmp_path: Path, level: float, accepted: bool
) -> None:
    """20.4 dBm was refused in a CSV (checked before rounding) and read as 20 in a trace."""
    csv = tmp_path / "a.csv"
    csv.write_text(f"time_s,gateway,rssi_dbm\n1,gw,{level}\n")
    trace = tmp_path / "gw.jsonl"
    trace.write_text(f'{{"t": 1, "address": "AA:BB:CC:DD:EE:FF", "rssi": {level}}}\n')
    for read in (lambda: read_csv_adverts(csv), lambda: read_trace_adverts("gw", trace)):
        if accepted:
            assert read().adverts[0].rssi == round(level)
        else:
            with pytest.raises(InputError, match="out of range"):
                read()
