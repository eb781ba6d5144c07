"""The engine diagnostic: bearing fault frequencies, vibration features, envelope
analysis and verdicts on synthetic signals, the two modes, the mode reader.

The signals are built here, independently of the module's own `synthesize`, from
hand-computed fault frequencies: a fault is a train of impacts at its frequency
(lowered 1 % by slip, 0.5 % timing jitter), each ringing a 1.5 kHz resonance for
a few ms, on top of shaft harmonics and white noise.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "images" / "engine-diagnostic" / "engine_diagnostic.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_diagnostic", SOURCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


ed = load()

FS = 20_000.0
SHAFT = 1797 / 60  # the CWRU rig's motor at 0 hp: 29.95 Hz
# SKF 6205 (9 balls, d = 7.94 mm, D = 39.04 mm, 0 deg), by hand: k = d/D = 0.2033811
K = 7.94 / 39.04
BPFO_X = 4.5 * (1 - K)  # 3.58478
BPFI_X = 4.5 * (1 + K)  # 5.41522
BPFO = BPFO_X * SHAFT  # 107.36 Hz
BPFI = BPFI_X * SHAFT  # 162.18 Hz
RESONANCE = 1500.0


def fault_signal(
    rate_hz: float,
    seconds: float,
    *,
    seed: int = 0,
    impact: float = 1.0,
    noise: float = 0.25,
    load_zone: bool = False,
    periodic: bool = True,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(FS * seconds)
    t = np.arange(n) / FS
    x = 0.5 * np.sin(2 * np.pi * SHAFT * t) + 0.2 * np.sin(2 * np.pi * 2 * SHAFT * t + 1.0)
    x += noise * rng.standard_normal(n)
    if rate_hz <= 0:
        return x
    if periodic:
        period = 1 / (rate_hz * 0.99)
        times = np.arange(0.3 * period, seconds, period)
        times += rng.normal(0, 0.005 * period, len(times))
    else:  # the same number of impacts at random times: impulsive, no line
        times = np.sort(rng.uniform(0, seconds, round(rate_hz * seconds)))
    amps = impact * (0.6 + 0.4 * np.cos(2 * np.pi * SHAFT * times) if load_zone else 1.0)
    ring_t = np.arange(round(0.004 * FS)) / FS
    ring = np.exp(-ring_t / 0.0008) * np.sin(2 * np.pi * RESONANCE * ring_t)
    for at, amp in zip(
        np.round(times * FS).astype(int), np.broadcast_to(amps, times.shape), strict=True
    ):
        end = min(n, at + len(ring))
        if 0 <= at < n:
            x[at:end] += amp * ring[: end - at]
    return x


def healthy_signal(seconds: float, seed: int = 0) -> np.ndarray:
    return fault_signal(0.0, seconds, seed=seed)


def run(signal: np.ndarray, mode: str, **settings: Any) -> list[dict[str, Any]]:
    diag = ed.Diagnostic(ed.Settings(fs=FS, **settings), lambda: ed.ModeChoice(mode, "test"), SHAFT)
    out = []
    for chunk in np.array_split(signal, 13):  # uneven chunks: windows span chunks
        out += diag.feed(chunk)
    return out


# --- fault frequencies ---------------------------------------------------------------


def test_skf_6205_fault_frequencies_match_hand_computed_and_published_values():
    m = ed.SKF_6205.multipliers()
    # the formulas by hand (k = 0.2033811)
    assert m["BPFO"] == pytest.approx(3.584785, rel=1e-6)
    assert m["BPFI"] == pytest.approx(5.415215, rel=1e-6)
    assert m["FTF"] == pytest.approx(0.398309, rel=1e-5)
    assert m["BSF"] == pytest.approx(2.356748, rel=1e-6)
    # the CWRU Bearing Data Center's multipliers for this bearing; they give the ball
    # fault rate 2 x BSF (a spot on a ball meets both races once per spin)
    assert m["BPFO"] == pytest.approx(3.5848, abs=1e-4)
    assert m["BPFI"] == pytest.approx(5.4152, abs=1e-4)
    assert m["FTF"] == pytest.approx(0.39828, abs=5e-5)
    assert 2 * m["BSF"] == pytest.approx(4.7135, abs=1e-4)
    hz = ed.SKF_6205.fault_frequencies(SHAFT)
    assert hz["BPFO"] == pytest.approx(107.36, abs=0.01)
    assert hz["BPFI"] == pytest.approx(162.18, abs=0.01)


def test_contact_angle_shrinks_the_ball_to_pitch_ratio():
    # 12 balls, d = 10, D = 50, 40 deg: k = 0.2 cos 40deg = 0.1532089, by hand
    m = ed.Bearing(12, 10.0, 50.0, 40.0).multipliers()
    assert m["BPFO"] == pytest.approx(5.080747, rel=1e-6)
    assert m["BPFI"] == pytest.approx(6.919253, rel=1e-6)
    assert m["FTF"] == pytest.approx(0.423396, rel=1e-5)
    assert m["BSF"] == pytest.approx(2.441317, rel=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9,39.04,7.94", "ball diameter < pitch"),
        ("0,7.94,39.04", "at least one"),
        ("9,7.94,39.04,90", "contact angle"),
        ("9,7.94", "want balls"),
    ],
)
def test_impossible_bearings_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        ed.parse_bearing(text)


def test_bearing_text_with_and_without_angle():
    assert ed.parse_bearing("9, 7.94, 39.04") == ed.SKF_6205
    assert ed.parse_bearing("12,10,50,40") == ed.Bearing(12, 10.0, 50.0, 40.0)


# --- time-domain features ----------------------------------------------------------------


def test_sine_features():
    t = np.arange(round(FS)) / FS
    f = ed.time_features(3.0 * np.sin(2 * np.pi * 50 * t) + 0.7)  # the offset is removed
    assert f.rms == pytest.approx(3.0 / math.sqrt(2), rel=1e-4)
    assert f.peak == pytest.approx(3.0, rel=1e-4)
    assert f.crest_factor == pytest.approx(math.sqrt(2), rel=1e-4)
    assert f.kurtosis == pytest.approx(1.5, rel=1e-3)  # E[sin^4] / E[sin^2]^2 = (3/8)/(1/4)


def test_gaussian_noise_features():
    x = np.random.default_rng(7).normal(0.0, 0.5, 200_000)
    f = ed.time_features(x)
    assert f.rms == pytest.approx(0.5, rel=0.01)
    assert f.kurtosis == pytest.approx(3.0, abs=0.08)  # estimator sd: sqrt(24/n) = 0.011
    assert 3.5 < f.crest_factor < 6.0  # the largest of 200k normals: ~4.4-5 sigma


def test_impacts_raise_kurtosis_and_crest_factor():
    f = ed.time_features(fault_signal(BPFO, 1.0, impact=4.0, noise=0.05))
    assert f.kurtosis > 4.0
    assert f.crest_factor > 4.0


def test_a_flat_window_has_zero_features_not_a_division_error():
    assert ed.time_features(np.full(100, 2.0)) == ed.TimeFeatures(0.0, 0.0, 0.0, 0.0)


# --- verdicts on synthetic signals -------------------------------------------------------


@pytest.mark.parametrize("mode", ["intensive", "normal"])
def test_outer_race_fault_is_found_with_its_harmonics(mode):
    verdicts = run(fault_signal(BPFO, 8.0, seed=1), mode)
    # intensive: every one of the 8 windows; normal: every 4th (0 and 4), decimated by 4
    assert [v["window"] for v in verdicts] == (list(range(8)) if mode == "intensive" else [0, 4])
    for v in verdicts:
        assert v["mode"] == mode
        assert v["fs_hz"] == (FS if mode == "intensive" else FS / 4)
        assert v["verdict"] == "fault", v["reasons"]
        assert v["fault"] == "BPFO"
        line = v["lines"]["BPFO"]
        assert line["status"] == "fault"
        assert line["fundamental"]["found_hz"] == pytest.approx(BPFO * 0.99, abs=1.5)
        assert line["fundamental"]["ratio"] >= 6
        assert 2 in line["harmonics_found"]
        assert line["harmonics"][0]["found_hz"] == pytest.approx(2 * BPFO * 0.99, abs=2.5)
        lo, hi = v["envelope"]["band_hz"]
        assert lo <= RESONANCE <= hi  # the band that rings
        assert v["reasons"][0].startswith("outer race (BPFO 107.4 Hz)")
        # the other races show nothing of their own
        assert v["lines"]["BPFI"]["status"] == "none"


@pytest.mark.parametrize("mode", ["intensive", "normal"])
def test_healthy_signal_is_not_flagged(mode):
    verdicts = run(healthy_signal(16.0, seed=3), mode, every=1)
    assert len(verdicts) == 16
    assert [v["verdict"] for v in verdicts] == ["healthy"] * 16, [v["reasons"] for v in verdicts]
    assert all(v["fault"] is None and v["reasons"] == [] for v in verdicts)
    worst = max(e["fundamental"]["ratio"] for v in verdicts for e in v["lines"].values())
    assert worst < 4  # below the watch threshold


@pytest.mark.parametrize("mode", ["intensive", "normal"])
def test_inner_race_fault_is_reported_as_bpfi_with_shaft_sidebands(mode):
    verdicts = run(fault_signal(BPFI, 4.0, seed=5, load_zone=True), mode, every=1)
    assert len(verdicts) == 4
    for v in verdicts:
        assert (v["verdict"], v["fault"]) == ("fault", "BPFI"), v["reasons"]
        line = v["lines"]["BPFI"]
        assert line["fundamental"]["found_hz"] == pytest.approx(BPFI * 0.99, abs=2.0)
        assert line["sidebands_found"] >= 1
        found = sorted(sb["found_hz"] for sb in line["sidebands"])
        assert found[0] == pytest.approx(BPFI * 0.99 - SHAFT, abs=1.5)
        assert v["lines"]["BPFO"]["status"] == "none"


def test_fault_line_below_the_fault_ratio_is_watch():
    settings = {"fault_ratio": 1e9}  # no line can reach `fault`: what remains is watch
    v = run(fault_signal(BPFO, 1.0, seed=1), "intensive", **settings)[0]
    assert (v["verdict"], v["fault"]) == ("watch", "BPFO")
    assert v["lines"]["BPFO"]["status"] == "watch"


def test_a_strong_line_without_harmonics_is_watch_not_fault():
    # A 1.5 kHz tone amplitude-modulated by a pure sine at BPFO: a strong envelope line
    # at BPFO but no harmonics, unlike a train of impacts. The band is given: a smooth
    # modulation is less impulsive than noise, so the automatic choice would skip it.
    t = np.arange(round(FS)) / FS
    carrier = np.sin(2 * np.pi * RESONANCE * t) * (1 + 0.5 * np.cos(2 * np.pi * BPFO * t))
    signal = carrier + 0.25 * np.random.default_rng(2).standard_normal(len(t))
    v = run(signal, "intensive", band=(900.0, 2200.0))[0]
    line = v["lines"]["BPFO"]
    assert line["fundamental"]["ratio"] >= 6
    assert line["harmonics_found"] == []
    assert (v["verdict"], v["fault"], line["status"]) == ("watch", "BPFO", "watch")
    assert v["reasons"][0].endswith("no harmonic above the floor")


def test_impulsive_signal_without_a_fault_line_is_watch():
    # strong impacts at random times: kurtosis and crest factor up, no periodic line;
    # the line thresholds are out of reach so only the time-domain rule can speak
    signal = fault_signal(40.0, 1.0, seed=11, impact=6.0, noise=0.05, periodic=False)
    unreachable = {"fault_ratio": 1e9, "watch_ratio": 1e9}
    v = run(signal, "intensive", **unreachable)[0]
    assert (v["verdict"], v["fault"]) == ("watch", None)
    assert v["time"]["kurtosis"] >= 4
    assert v["time"]["crest_factor"] >= 6
    assert v["reasons"] == [
        f"impulsive signal: kurtosis {v['time']['kurtosis']:.1f} >= 4,"
        f" crest factor {v['time']['crest_factor']:.1f} >= 6"
    ]
    # the same thresholds on a healthy signal: nothing
    assert run(healthy_signal(1.0), "intensive", **unreachable)[0]["verdict"] == "healthy"


def test_fixed_band_is_used_when_given():
    v = run(fault_signal(BPFO, 1.0, seed=2), "intensive", band=(1000.0, 2600.0))[0]
    assert v["envelope"]["band_hz"] == [1000, 2600]
    assert v["envelope"]["band_chosen"] == "fixed"
    assert v["fault"] == "BPFO"


def test_shaft_too_fast_for_normal_mode_skips_the_envelope_and_says_so():
    # At 100 rev/s the lines reach ~2 kHz: no band of twice that fits below 0.8 x 2.5 kHz.
    diag = ed.Diagnostic(ed.Settings(fs=FS), lambda: ed.ModeChoice("normal", "test"), 100.0)
    v = diag.feed(healthy_signal(1.0))[0]
    assert "skipped" in v["envelope"]
    assert v["lines"] == {}
    assert v["verdict"] == "healthy"
    assert v["reasons"][0].startswith("envelope analysis skipped")
    diag = ed.Diagnostic(ed.Settings(fs=FS), lambda: ed.ModeChoice("intensive", "test"), 100.0)
    assert "band_hz" in diag.feed(healthy_signal(1.0))[0]["envelope"]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("mode", ["intensive", "normal"])
def test_a_shaft_standing_still_skips_the_envelope_and_says_so(mode):
    # shaft_hz 0 used to loop forever in candidate_bands (the band width was 0)
    diag = ed.Diagnostic(ed.Settings(fs=FS, every=1), lambda: ed.ModeChoice(mode, "test"), 0.0)
    v = diag.feed(healthy_signal(1.0))[0]
    assert v["envelope"] == {"skipped": "the shaft is not turning (shaft_hz 0): no fault frequency"}
    assert v["lines"] == {}
    assert v["reasons"][0] == f"envelope analysis skipped: {v['envelope']['skipped']}"
    assert ed.candidate_bands(ed.Settings(fs=FS), 0.0, 8000.0) == []
    # the engine starts again: the next window is analysed
    assert "band_hz" in diag.feed(fault_signal(BPFO, 1.0), SHAFT)[0]["envelope"]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_an_impossible_shaft_speed_is_refused_wherever_it_enters(tmp_path, capsys, bad):
    with pytest.raises(ValueError, match="shaft_hz"):
        ed.Diagnostic(ed.Settings(fs=FS), lambda: ed.ModeChoice("intensive", "test"), bad)
    diag = ed.Diagnostic(ed.Settings(fs=FS), lambda: ed.ModeChoice("intensive", "test"), SHAFT)
    with pytest.raises(ValueError, match="shaft_hz"):
        diag.feed(healthy_signal(1.0), bad)
    path = tmp_path / "samples.jsonl"
    # NaN / Infinity: tokens Python's json reads
    path.write_text(json.dumps({"samples": [0.0, 1.0], "shaft_hz": bad}) + "\n")
    assert ed.main(["--input", str(path), "--mode", "intensive"]) == 1
    assert "line 1: shaft_hz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        ed.main(["--shaft-hz", str(bad), "--input", str(path)])
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--fs", "nan"],
        ["--fs", "inf"],
        ["--window", "nan"],
        ["--window", "inf"],
        ["--band", "nan", "2000"],
        ["--band", "100", "inf"],
        ["--bearing", "9,nan,39.04,0"],
        ["--bearing", "9,7.94,inf,0"],
        ["--bearing", "9,7.94,39.04,nan"],
    ],
)
def test_numeric_options_must_be_finite(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        ed.main([*argv, "--simulate", "healthy", "--windows", "1"])
    assert exit_.value.code == 2
    assert "finite" in capsys.readouterr().err


@pytest.mark.parametrize(("var", "value"), [("SAMPLE_RATE_HZ", "nan"), ("BEARING", "9,1,inf")])
def test_numeric_env_settings_must_be_finite(monkeypatch, capsys, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exit_:
        ed.build_parser().parse_args([])
    assert exit_.value.code == 2
    assert "finite" in capsys.readouterr().err


def test_the_shaft_speed_from_the_env_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("SHAFT_HZ", "-5")
    with pytest.raises(SystemExit) as exit_:
        ed.build_parser().parse_args([])
    assert exit_.value.code == 2
    assert "shaft_hz -5.0" in capsys.readouterr().err
    monkeypatch.setenv("SHAFT_HZ", "0")
    assert ed.build_parser().parse_args([]).shaft_hz == 0.0


@pytest.mark.timeout(5)
def test_the_cli_answers_a_json_line_of_a_shaft_standing_still(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"samples": [0.0] * 25600, "shaft_hz": 0}) + "\n")
    assert ed.main(["--input", str(path), "--mode", "intensive"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "not turning" in json.loads(line)["envelope"]["skipped"]


# --- samples that are not numbers -----------------------------------------------------------


def test_a_nan_sample_in_a_fault_window_does_not_make_it_healthy():
    signal = fault_signal(BPFO, 3.0, seed=1)
    signal[round(FS) + 100] = np.nan  # one NaN in window 1
    verdicts = run(signal, "intensive")
    assert [(v["verdict"], v["fault"]) for v in verdicts] == [("fault", "BPFO")] * 3
    assert [v["unusable_samples"] for v in verdicts] == [0, 1, 0]
    assert "1 unusable sample(s)" in verdicts[1]["reasons"][-1]


def test_a_nan_in_a_skipped_window_does_not_poison_the_decimators_history():
    clean = fault_signal(BPFO, 5.0, seed=3)
    dirty = clean.copy()
    dirty[round(4 * FS) - 10] = np.inf  # near the end of window 3, skipped in normal mode
    want, got = run(clean, "normal"), run(dirty, "normal")
    assert [v["window"] for v in got] == [0, 4]
    assert got[1]["verdict"] == want[1]["verdict"] == "fault"
    assert got[1]["time"]["rms"] == pytest.approx(want[1]["time"]["rms"], rel=0.01)


def test_a_window_mostly_not_numbers_is_invalid_not_healthy():
    signal = healthy_signal(2.0)
    signal[: round(FS) // 2] = np.nan  # half of window 0: the sensor dropped out
    v0, v1 = run(signal, "intensive")
    assert (v0["verdict"], v0["fault"], v0["lines"]) == ("invalid", None, {})
    assert v0["unusable_samples"] == round(FS) // 2
    assert v0["reasons"][0].startswith("window not analysed: 10000 of 20000 samples")
    assert v1["verdict"] == "healthy"


def test_the_cli_prints_strict_json_whatever_the_samples(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    samples = fault_signal(BPFO, 1.0, seed=6).round(5).tolist()
    samples[100], samples[200] = math.nan, -math.inf  # json writes NaN, -Infinity
    path.write_text(json.dumps({"samples": samples, "shaft_hz": SHAFT}) + "\n")
    assert ed.main(["--fs", str(FS), "--input", str(path), "--mode", "intensive"]) == 0
    (line,) = capsys.readouterr().out.splitlines()

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    v = json.loads(line, parse_constant=refuse)
    assert (v["verdict"], v["unusable_samples"]) == ("fault", 2)


# --- decimation (normal mode) -------------------------------------------------------------


def tone_gain(fs: float, f: float, factor: int) -> float:
    n = round(fs)
    t = np.arange(3 * n) / fs
    dec = ed.Decimator(factor)
    out = [dec(w) for w in np.split(np.sin(2 * np.pi * f * t), 3)][-1]  # steady state
    return float(np.sqrt(2 * np.mean(out * out)))


def test_decimation_keeps_fault_lines_and_resonance_band_and_rejects_aliases():
    new_nyquist = FS / 4 / 2  # 2.5 kHz
    # every line the envelope looks at, and the resonance, pass (within 0.1 dB)
    for f in (BPFO, 3 * BPFI, RESONANCE, 0.8 * new_nyquist):
        assert tone_gain(FS, f, 4) == pytest.approx(1.0, abs=0.012), f
    # what would alias into the analysed band is 60+ dB down
    for f in (new_nyquist * 1.001, FS / 4 - RESONANCE, 0.75 * FS / 4 + 10, 7000.0):
        assert tone_gain(FS, f, 4) < 1e-3, f


def test_normal_mode_bands_fit_below_the_decimated_nyquist_above_the_fault_lines():
    settings = ed.Settings(fs=FS)
    usable = 0.8 * FS / settings.decimate / 2
    bands = ed.candidate_bands(settings, SHAFT, usable)
    assert bands
    top_line = settings.harmonics * max(ed.SKF_6205.fault_frequencies(SHAFT).values())
    for lo, hi in bands:
        assert top_line < lo < hi <= usable < FS / settings.decimate / 2
        assert hi - lo >= 2 * (top_line + SHAFT)  # the envelope's Nyquist covers every line


def test_windowed_decimation_with_skipped_windows_equals_filtering_the_whole_stream():
    x = np.random.default_rng(4).standard_normal(4 * 1000)
    dec = ed.Decimator(4)
    windows = np.split(x, 4)
    dec(windows[0])
    dec.remember(windows[1])  # a skipped window
    got = dec(windows[2])
    reference = np.convolve(x, dec.taps)[2000::4][:250]
    np.testing.assert_allclose(got, reference, atol=1e-12)


# --- the mode -------------------------------------------------------------------------------

DOWNWARD_API = (
    'cloud4iot.io/device="truck-7-engine"\n'
    'cloud4iot.io/function="engine-diagnostic"\n'
    'cloud4iot.io/mode="{mode}"\n'
    'kubectl.kubernetes.io/last-applied-configuration="{{\\"a\\":\\"b=c\\"}}\\n"\n'
)


def test_annotation_file_gives_the_mode(tmp_path):
    path = tmp_path / "annotations"
    path.write_text(DOWNWARD_API.format(mode="intensive"))
    assert ed.read_mode(path, {"MODE": "normal"}) == ed.ModeChoice("intensive", "annotation")
    parsed = ed.parse_annotations(path.read_text())
    assert parsed["kubectl.kubernetes.io/last-applied-configuration"] == '{"a":"b=c"}\n'


def test_env_is_the_fallback_when_the_file_lacks_the_key_or_is_missing(tmp_path):
    path = tmp_path / "annotations"
    path.write_text('cloud4iot.io/function="engine-diagnostic"\n')
    assert ed.read_mode(path, {"MODE": "intensive"}) == ed.ModeChoice("intensive", "env")
    assert ed.read_mode(tmp_path / "absent", {"MODE": "intensive"}) == ed.ModeChoice(
        "intensive", "env"
    )


def test_default_is_normal_like_the_policy(tmp_path):
    assert ed.read_mode(tmp_path / "absent", {}) == ed.ModeChoice("normal", "default")
    assert ed.read_mode(tmp_path / "absent", {"MODE": ""}).source == "default"


def test_unknown_mode_falls_back_to_normal_and_says_why(tmp_path):
    path = tmp_path / "annotations"
    path.write_text(DOWNWARD_API.format(mode="turbo"))
    choice = ed.read_mode(path, {"MODE": "intensive"})
    assert choice.mode == "normal"
    assert "annotation value 'turbo'" in choice.source


def test_mode_follows_the_annotation_file_while_running(tmp_path):
    path = tmp_path / "annotations"
    path.write_text(DOWNWARD_API.format(mode="normal"))
    diag = ed.Diagnostic(ed.Settings(fs=FS, every=2), lambda: ed.read_mode(path, {}), SHAFT)
    signal = fault_signal(BPFO, 6.0, seed=9)
    seen = [(v["window"], v["mode"]) for v in diag.feed(signal[: round(3 * FS)])]
    path.write_text(DOWNWARD_API.format(mode="intensive"))
    seen += [(v["window"], v["mode"]) for v in diag.feed(signal[round(3 * FS) :])]
    assert seen == [
        (0, "normal"),
        (2, "normal"),
        (3, "intensive"),
        (4, "intensive"),
        (5, "intensive"),
    ]


# --- the command line ------------------------------------------------------------------------


def test_cli_reads_json_lines_and_prints_a_verdict_per_window(tmp_path, capsys):
    signal = fault_signal(BPFO, 2.0, seed=6)
    path = tmp_path / "samples.jsonl"
    with path.open("w") as out:
        for chunk in np.array_split(signal, 8):
            out.write(json.dumps({"samples": chunk.round(5).tolist(), "shaft_hz": SHAFT}) + "\n")
    argv = ["--fs", str(FS), "--shaft-hz", "50", "--input", str(path), "--mode", "intensive"]
    assert ed.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["window"], v["verdict"], v["fault"]) for v in lines] == [
        (0, "fault", "BPFO"),
        (1, "fault", "BPFO"),
    ]
    assert lines[0]["shaft_hz"] == pytest.approx(SHAFT)  # the records' speed, not --shaft-hz
    assert lines[0]["mode_source"] == "--mode"


def test_cli_reads_raw_float32_and_the_mode_from_the_annotations(tmp_path, capsys):
    path = tmp_path / "samples.f32"
    path.write_bytes(healthy_signal(4.0).astype("<f4").tobytes())
    annotations = tmp_path / "annotations"
    annotations.write_text(DOWNWARD_API.format(mode="normal"))
    argv = ["--fs", str(FS), "--shaft-hz", str(SHAFT), "--format", "f32le"]
    argv += ["--input", str(path), "--annotations", str(annotations)]
    assert ed.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["window"], v["mode"], v["mode_source"], v["verdict"]) for v in lines] == [
        (0, "normal", "annotation", "healthy")
    ]


@pytest.mark.timeout(10)
def test_raw_samples_from_a_live_pipe_are_taken_as_they_arrive():
    r, w = os.pipe()
    got: list[np.ndarray] = []
    with open(r, "rb") as stream:  # a BufferedReader, as sys.stdin.buffer is
        reader = threading.Thread(target=lambda: got.append(next(ed.read_raw(stream, "f32le"))[0]))
        reader.start()
        os.write(w, np.arange(1000, dtype="<f4").tobytes() + b"\x00\x00")  # and half a sample
        reader.join(timeout=2)
        arrived = list(got)  # with the writer still there, as a live sensor bridge is
        os.close(w)  # a reader still waiting for 64 Ki samples gets EOF and ends
        reader.join()
    assert len(arrived) == 1  # was: nothing until 64 Ki samples (or the end) had come
    assert arrived[0].tolist() == list(range(1000))


def test_cli_simulation_stops_after_the_windows_asked(capsys):
    argv = ["--simulate", "outer", "--windows", "2", "--mode", "intensive", "--shaft-hz", "25"]
    assert ed.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["window"], v["fault"]) for v in lines] == [(0, "BPFO"), (1, "BPFO")]
    assert lines[0]["fault_frequencies_hz"]["BPFO"] == pytest.approx(BPFO_X * 25, abs=0.01)


def test_cli_refuses_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"values": [1, 2]}\n')
    assert ed.main(["--input", str(path)]) == 1
    assert "line 1" in capsys.readouterr().err


def _running(argv: list[str], *, pid1: bool) -> subprocess.Popen[bytes]:
    """The image's command, as PID 1 of a new PID namespace (as in its container) if asked,
    once it has printed its first verdict."""
    command = [sys.executable, str(SOURCE), *argv]
    if pid1:
        command = ["unshare", "--pid", "--fork", "--kill-child", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["window"] == 0
    return proc


@pytest.mark.timeout(30)
def test_sigterm_ends_it_at_once_with_a_clean_exit():
    proc = _running(["--simulate", "outer", "--realtime", "--mode", "intensive"], pid1=False)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0  # was -15: no handler, killed by the default action
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()


@pytest.mark.timeout(30)
@pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "--pid", "--fork", "true"], check=False).returncode != 0,
    reason="cannot make a PID namespace here",
)
def test_as_pid_1_sigterm_is_not_ignored():
    proc = _running(["--simulate", "outer", "--realtime", "--mode", "intensive"], pid1=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    (python,) = map(int, children)  # PID 1 in its namespace
    os.kill(python, signal.SIGTERM)
    try:
        assert proc.wait(timeout=5) == 0  # ignored before: the kubelet's SIGKILL after 30 s
    finally:
        proc.kill()
        proc.wait()


# --- the manifest wires the annotation to the file the code reads -----------------------------


def test_example_manifest_runs_this_image_with_the_downward_api_annotations():
    doc = yaml.safe_load((ROOT / "manifests" / "examples" / "engine-diagnostic.yaml").read_text())
    pod = doc["spec"]["template"]
    assert pod["spec"]["schedulerName"] == "cloud4iot-scheduler"
    assert pod["metadata"]["annotations"]["cloud4iot.io/function"] == "engine-diagnostic"
    assert pod["metadata"]["annotations"]["cloud4iot.io/mode"] in ("normal", "intensive")
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("cloud4iot/engine-diagnostic:")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    items = [
        (item["path"], item["fieldRef"]["fieldPath"])
        for name, volume in volumes.items()
        if "downwardAPI" in volume
        for item in volume["downwardAPI"]["items"]
        if name in mounts and Path(mounts[name]) / item["path"] == ed.ANNOTATIONS_FILE
    ]
    assert items == [("annotations", "metadata.annotations")]
