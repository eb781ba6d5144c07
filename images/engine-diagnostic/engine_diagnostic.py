"""Engine vibration diagnostic: rolling-bearing faults from an accelerometer stream.

The example IoT function the demo places (class `engine-diagnostic`). It cuts the
stream into windows and, per analysed window, computes

- time-domain indicators of the window (mean removed): RMS, peak, crest factor
  (peak/RMS) and kurtosis (Pearson, Gaussian = 3);
- the envelope spectrum: the band around a structural resonance is demodulated
  (the band's FFT bins -> complex baseband -> |.|, i.e. the Hilbert envelope of the
  band-passed signal, numpy FFTs only), then its mean is removed, a Hann window
  applied and its amplitude spectrum taken. Without `--band` the band is the
  candidate whose envelope is the most impulsive (spectral kurtosis, the idea of a
  kurtogram on one level);
- the bearing fault frequencies from the shaft speed and the geometry: BPFO, BPFI,
  BSF, FTF, each looked for with its harmonics (within +-3 %, slip) against the
  median of the envelope spectrum (its noise floor), BPFI also with its +-1x shaft
  sidebands;

and prints one JSON verdict per analysed window: `healthy`, `watch` or `fault`,
with the evidence (`invalid` when too many of its samples are NaN or infinite).

Two modes, from the pod annotation `cloud4iot.io/mode` the placement policy reads
(Downward API file /etc/podinfo/annotations, re-read every window; env MODE when
the file has no such key; else `normal`, the policy's default mode):

- `intensive`: every window at the full sampling rate (test phases; the policy
  prefers the gateway that hears the engine);
- `normal`: every Nth window (`--every`, 4), low-pass filtered and decimated by
  `--decimate` (4) first: a fraction of the CPU, but only resonances below 0.8x
  the decimated Nyquist frequency can carry the envelope (the policy prefers the
  cloud).

Input: JSON lines (`{"samples": [...], "shaft_hz": 29.95}` or a bare array) or raw
little-endian float32/float64 samples, from a file or stdin; or `--simulate`
(a synthetic healthy / outer-race / inner-race signal, optionally paced in real
time) when no sensor stream is wired in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Mode = Literal["intensive", "normal"]
MODES: tuple[Mode, ...] = ("intensive", "normal")
DEFAULT_MODE: Mode = "normal"  # the policy's `defaultMode` for engine-diagnostic
MODE_ANNOTATION = "cloud4iot.io/mode"
ANNOTATIONS_FILE = Path("/etc/podinfo/annotations")
FAULTS = ("BPFO", "BPFI", "BSF", "FTF")
FAULT_NAMES = {
    "BPFO": "outer race",
    "BPFI": "inner race",
    "BSF": "rolling element",
    "FTF": "cage",
}

# --- the mode -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeChoice:
    mode: Mode
    source: str  # "annotation", "env", "default", or why the default was taken


def parse_annotations(text: str) -> dict[str, str]:
    """The Downward API `annotations` file: one `key="value"` per line, Go-quoted values."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            continue
        raw = raw.strip()
        try:
            value = json.loads(raw)  # Go's strconv.Quote output is JSON for printable text
        except ValueError:
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
        if isinstance(value, str):
            found[key.strip()] = value
    return found


def read_mode(
    annotations: Path = ANNOTATIONS_FILE, env: Mapping[str, str] | None = None
) -> ModeChoice:
    """The monitoring mode: the pod annotation, else env MODE, else `normal`.

    An unknown value falls back to `normal` like the placement policy does (an
    unknown mode gets the class's default preference there), so the pod runs
    the mode it was placed for.
    """
    env = os.environ if env is None else env
    try:
        value: str | None = parse_annotations(annotations.read_text()).get(MODE_ANNOTATION)
        source = "annotation"
    except OSError:
        value, source = None, ""
    if value is None and env.get("MODE"):
        value, source = env["MODE"], "env"
    if value is None:
        return ModeChoice(DEFAULT_MODE, "default")
    mode = value.strip().lower()
    if mode in MODES:
        return ModeChoice(mode, source)
    return ModeChoice(DEFAULT_MODE, f"default ({source} value {value!r} is not a mode)")


# --- bearing geometry ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bearing:
    """Rolling-element bearing geometry; the diameters in any one unit."""

    balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        sizes = (self.ball_diameter, self.pitch_diameter, self.contact_angle_deg)
        if not all(math.isfinite(v) for v in sizes):
            raise ValueError("bearing dimensions must be finite numbers")
        if self.balls < 1:
            raise ValueError("a bearing needs at least one rolling element")
        if not 0 < self.ball_diameter < self.pitch_diameter:
            raise ValueError("need 0 < ball diameter < pitch diameter")
        if not 0 <= self.contact_angle_deg < 90:
            raise ValueError("contact angle must be in [0, 90) degrees")

    def multipliers(self) -> dict[str, float]:
        """Fault frequencies as multiples of the shaft frequency (no slip)."""
        k = (
            self.ball_diameter
            / self.pitch_diameter
            * math.cos(math.radians(self.contact_angle_deg))
        )
        n = self.balls
        return {
            "BPFO": n / 2 * (1 - k),
            "BPFI": n / 2 * (1 + k),
            "BSF": self.pitch_diameter / (2 * self.ball_diameter) * (1 - k * k),
            "FTF": (1 - k) / 2,
        }

    def fault_frequencies(self, shaft_hz: float) -> dict[str, float]:
        return {name: m * shaft_hz for name, m in self.multipliers().items()}


# The CWRU test rig's drive-end bearing (SKF 6205-2RS JEM): 9 balls, 7.94 / 39.04 mm.
SKF_6205 = Bearing(balls=9, ball_diameter=7.94, pitch_diameter=39.04, contact_angle_deg=0.0)


def parse_bearing(text: str) -> Bearing:
    """`balls,ball_diameter,pitch_diameter[,contact_angle_deg]`, e.g. `9,7.94,39.04,0`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"bearing {text!r}: want balls,ball_diameter,pitch_diameter[,angle]")
    angle = float(parts[3]) if len(parts) == 4 else 0.0
    return Bearing(int(parts[0]), float(parts[1]), float(parts[2]), angle)


# --- features -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeFeatures:
    rms: float
    peak: float
    crest_factor: float
    kurtosis: float


def time_features(x: Array) -> TimeFeatures:
    """RMS, peak |x|, crest factor and (Pearson) kurtosis of a window, its mean removed."""
    centred = x - x.mean()
    squared = centred * centred
    m2 = float(np.mean(squared))
    if m2 <= 0.0:
        return TimeFeatures(0.0, 0.0, 0.0, 0.0)
    rms = math.sqrt(m2)
    peak = float(np.max(np.abs(centred)))
    m4 = float(np.mean(squared * squared))
    return TimeFeatures(rms=rms, peak=peak, crest_factor=peak / rms, kurtosis=m4 / (m2 * m2))


def lowpass_taps(factor: int, attenuation_db: float = 70.0) -> Array:
    """Kaiser-windowed sinc anti-alias filter for decimation by `factor`.

    Passband to 0.8x the new Nyquist frequency, stopband from the new Nyquist on,
    `attenuation_db` down there; unit gain at DC.
    """
    nyq = 0.5 / factor  # new Nyquist, as a fraction of the input rate
    edge_pass, edge_stop = 0.8 * nyq, nyq
    width = 2 * math.pi * (edge_stop - edge_pass)  # rad/sample
    beta = 0.1102 * (attenuation_db - 8.7)
    n = math.ceil((attenuation_db - 8) / (2.285 * width)) + 1
    n += (factor - n % factor) % factor  # whole polyphase rows
    cutoff = (edge_pass + edge_stop) / 2
    t = np.arange(n) - (n - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, beta)
    return cast(Array, taps / taps.sum())


class Decimator:
    """Anti-alias FIR + keep every `factor`th sample, for windows of a continuous stream.

    Only the output samples that are kept are computed (polyphase: one short
    convolution per phase). `history` holds the input samples before the next
    window, so a window's output has no start transient even when the windows
    between were skipped.
    """

    def __init__(self, factor: int) -> None:
        if factor < 1:
            raise ValueError("decimation factor must be >= 1")
        self.factor = factor
        self.taps = lowpass_taps(factor) if factor > 1 else np.ones(1)
        self.history: Array | None = None

    def remember(self, window: Array) -> None:
        """Keeps the end of a window that is not decimated (skipped or analysed at full rate)."""
        if self.factor == 1:
            return
        keep = len(self.taps)
        joined = window if self.history is None else np.concatenate((self.history, window))
        self.history = joined[-keep:].copy()

    def __call__(self, window: Array) -> Array:
        """The window decimated; call for each analysed window in stream order."""
        q = self.factor
        if q == 1:
            return window
        taps, keep, out = self.taps, len(self.taps), len(window) // q
        history = self.history
        if history is None or len(history) < keep:  # stream start: hold the first level
            have = 0 if history is None else len(history)
            pad = np.full(keep - have, window[:64].mean())
            history = pad if history is None else np.concatenate((pad, history))
        joined = np.concatenate((history, window))
        self.history = joined[-keep:].copy()
        # y[k] = sum_j taps[j] * joined[k*q + keep - j]; with j = m*q + p that is phase
        # (q - p) % q of `joined` convolved with taps[p::q].
        y = np.convolve(joined[q::q], taps[0::q], "valid")[:out]
        for p in range(1, q):
            y += np.convolve(joined[q - p :: q], taps[p::q], "valid")[:out]
        return y


@dataclass(frozen=True, slots=True)
class EnvelopeSpectrum:
    freqs: Array  # Hz, spacing 1/window seconds
    amplitude: Array  # the envelope's amplitude spectrum, signal units
    band: tuple[float, float]  # Hz, the demodulated band
    spectral_kurtosis: float  # of the band's complex envelope (Gaussian noise: 0)


def _band_envelope(spectrum: npt.NDArray[np.complex128], n: int, lo: int, hi: int) -> Array:
    # The analytic signal of the band-passed window shifted to baseband: its
    # magnitude is the Hilbert envelope, sampled at the band's width.
    z = np.fft.ifft(spectrum[lo:hi])
    return np.abs(z) * (2.0 * (hi - lo) / n)


def envelope_spectrum(
    x: Array, fs: float, bands: Sequence[tuple[float, float]]
) -> EnvelopeSpectrum:
    """The envelope spectrum of the most impulsive of `bands` (Hz)."""
    if not bands:
        raise ValueError("no band to demodulate")
    n = len(x)
    spectrum = np.fft.rfft(x - x.mean())
    best: tuple[float, Array, tuple[float, float]] | None = None
    for lo_hz, hi_hz in bands:
        lo = max(1, math.ceil(lo_hz * n / fs))
        hi = min(len(spectrum), math.floor(hi_hz * n / fs) + 1)
        if hi - lo < 8:
            continue
        env = _band_envelope(spectrum, n, lo, hi)
        power = env * env
        mean_power = float(power.mean())
        sk = float((power * power).mean() / (mean_power * mean_power)) - 2 if mean_power else 0.0
        if best is None or sk > best[0]:
            best = (sk, env, (lo * fs / n, (hi - 1) * fs / n))
    if best is None:
        raise ValueError(f"bands {list(bands)} hold too few FFT bins")
    sk, env, band = best
    window = np.hanning(len(env))
    amplitude = 2 * np.abs(np.fft.rfft((env - env.mean()) * window)) / window.sum()
    duration = n / fs
    freqs = np.arange(len(amplitude)) / duration
    return EnvelopeSpectrum(freqs, amplitude, band, sk)


# --- the verdict --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    fs: float
    bearing: Bearing = SKF_6205
    window_s: float = 1.0
    decimate: int = 4  # normal mode
    every: int = 4  # normal mode: analyse every Nth window
    band: tuple[float, float] | None = None  # None: pick the most impulsive band
    harmonics: int = 3  # looked for per fault frequency, the fundamental included
    tolerance: float = 0.03  # relative search width around each expected line (slip)
    fault_ratio: float = 6.0  # fundamental / noise floor for `fault` (with a harmonic)
    watch_ratio: float = 4.0  # fundamental / noise floor for `watch`
    harmonic_ratio: float = 3.0  # a harmonic or sideband counts from this ratio
    kurtosis_watch: float = 4.0  # impulsive signal without a spectral line yet
    crest_watch: float = 6.0
    max_unusable: float = 0.01  # past this fraction of unusable samples: `invalid`

    def window_samples(self) -> int:
        return round(self.fs * self.window_s)


def envelope_reach(settings: Settings, shaft_hz: float) -> float:
    """The highest envelope frequency looked at: top harmonic plus a shaft sideband."""
    top = max(settings.bearing.fault_frequencies(shaft_hz).values())
    return (settings.harmonics + 0.5) * top * (1 + settings.tolerance) + shaft_hz


def candidate_bands(
    settings: Settings, shaft_hz: float, usable_hz: float
) -> list[tuple[float, float]]:
    """Bands to demodulate: wide enough for every line looked at, above them, below `usable_hz`.

    With `settings.band` set, that band alone (clipped to `usable_hz`) if it still
    is wide enough; else the automatic candidates. Empty when none fits.
    """
    reach = envelope_reach(settings, shaft_hz)
    if not (math.isfinite(reach) and reach > 0 and math.isfinite(usable_hz)):
        return []  # a shaft not turning has no fault line: nothing to demodulate for
    width = 100 * math.ceil(2 * reach / 100)
    if settings.band is not None:
        lo, hi = settings.band
        hi = min(hi, usable_hz)
        if hi - lo >= 2 * reach:
            return [(lo, hi)]
    bands = []
    lo = reach
    while lo + width <= usable_hz:
        bands.append((lo, lo + width))
        lo += width / 2
    return bands


@dataclass(frozen=True, slots=True)
class Line:
    order: int  # 1 = fundamental, n = nth harmonic; sidebands: 1
    expected_hz: float
    found_hz: float
    amplitude: float
    ratio: float  # amplitude / the envelope spectrum's median

    def as_dict(self) -> dict[str, float]:
        return {
            "order": self.order,
            "expected_hz": round(self.expected_hz, 2),
            "found_hz": round(self.found_hz, 2),
            "amplitude": _sig(self.amplitude),
            "ratio": round(self.ratio, 2),
        }


def _peak_near(
    spec: EnvelopeSpectrum, target: float, tolerance: float, floor: float
) -> Line | None:
    df = float(spec.freqs[1] - spec.freqs[0])
    half = max(tolerance * target, 1.5 * df)
    lo = max(1, math.ceil((target - half) / df))
    hi = min(len(spec.freqs), math.floor((target + half) / df) + 1)
    if hi <= lo:
        return None
    i = lo + int(np.argmax(spec.amplitude[lo:hi]))
    amp = float(spec.amplitude[i])
    return Line(0, target, float(spec.freqs[i]), amp, amp / floor if floor > 0 else 0.0)


def _with_order(line: Line, order: int) -> Line:
    return Line(order, line.expected_hz, line.found_hz, line.amplitude, line.ratio)


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def diagnose(
    x: Array, fs: float, shaft_hz: float, settings: Settings, usable_hz: float
) -> dict[str, Any]:
    """The verdict for one window `x` sampled at `fs` (decimated already in `normal` mode)."""
    features = time_features(x)
    reasons: list[str] = []
    evidence: dict[str, Any] = {}
    status: dict[str, str] = {}
    expected = settings.bearing.fault_frequencies(shaft_hz)
    bands = candidate_bands(settings, shaft_hz, usable_hz)
    envelope: dict[str, Any]
    if shaft_hz <= 0:
        envelope = {"skipped": "the shaft is not turning (shaft_hz 0): no fault frequency"}
        reasons.append(f"envelope analysis skipped: {envelope['skipped']}")
    elif not bands:
        envelope = {
            "skipped": f"no band of {2 * envelope_reach(settings, shaft_hz):.0f} Hz fits"
            f" between the fault lines and {usable_hz:.0f} Hz"
        }
        reasons.append(f"envelope analysis skipped: {envelope['skipped']}")
    else:
        spec = envelope_spectrum(x, fs, bands)
        reach = envelope_reach(settings, shaft_hz)
        top = min(len(spec.freqs), math.floor(reach * settings.window_s) + 1)
        floor = float(np.median(spec.amplitude[2:top]))
        envelope = {
            "band_hz": [round(spec.band[0]), round(spec.band[1])],
            "band_chosen": "fixed" if settings.band is not None and len(bands) == 1 else "auto",
            "spectral_kurtosis": round(spec.spectral_kurtosis, 3),
            "noise_floor": _sig(floor),
            "resolution_hz": round(float(spec.freqs[1]), 3),
        }
        nyquist = spec.freqs[-1]
        for name, f in expected.items():
            lines = []
            for order in range(1, settings.harmonics + 1):
                if order * f * (1 + settings.tolerance) >= nyquist:
                    break
                line = _peak_near(spec, order * f, settings.tolerance, floor)
                if line is not None:
                    lines.append(_with_order(line, order))
            if not lines or lines[0].order != 1:
                continue
            fundamental, harmonics = lines[0], lines[1:]
            found = [h for h in harmonics if h.ratio >= settings.harmonic_ratio]
            entry: dict[str, Any] = {
                "expected_hz": round(f, 2),
                "fundamental": fundamental.as_dict(),
                "harmonics": [h.as_dict() for h in harmonics],
                "harmonics_found": [h.order for h in found],
            }
            if name == "BPFI":  # the inner race turns through the load zone: +-1x shaft
                sidebands = [
                    _peak_near(spec, fundamental.found_hz + s * shaft_hz, 0.0, floor)
                    for s in (-1, 1)
                ]
                entry["sidebands"] = [sb.as_dict() for sb in sidebands if sb is not None]
                entry["sidebands_found"] = sum(
                    1 for sb in sidebands if sb is not None and sb.ratio >= settings.harmonic_ratio
                )
            if fundamental.ratio >= settings.fault_ratio and found:
                status[name] = "fault"
            elif fundamental.ratio >= settings.watch_ratio:
                status[name] = "watch"
            entry["status"] = status.get(name, "none")
            evidence[name] = entry
    faults = sorted(
        (n for n, s in status.items() if s == "fault"),
        key=lambda n: -float(evidence[n]["fundamental"]["ratio"]),
    )
    watches = sorted(
        (n for n, s in status.items() if s == "watch"),
        key=lambda n: -float(evidence[n]["fundamental"]["ratio"]),
    )
    for name in faults + watches:
        entry = evidence[name]
        fund = entry["fundamental"]
        listed = ", ".join(
            f"{h['order']}x {h['ratio']:.1f}x"
            for h in entry["harmonics"]
            if h["order"] in entry["harmonics_found"]
        )
        text = (
            f"{FAULT_NAMES[name]} ({name} {entry['expected_hz']:.1f} Hz): envelope line at"
            f" {fund['found_hz']:.1f} Hz, {fund['ratio']:.1f}x the median"
            + (f"; harmonics {listed}" if listed else "; no harmonic above the floor")
        )
        if entry.get("sidebands_found"):
            text += f"; {entry['sidebands_found']} shaft sideband(s)"
        reasons.append(text)
    impulsive = []
    if features.kurtosis >= settings.kurtosis_watch:
        impulsive.append(f"kurtosis {features.kurtosis:.1f} >= {settings.kurtosis_watch:g}")
    if features.crest_factor >= settings.crest_watch:
        impulsive.append(f"crest factor {features.crest_factor:.1f} >= {settings.crest_watch:g}")
    if impulsive:
        reasons.append("impulsive signal: " + ", ".join(impulsive))
    fault: str | None
    if faults:
        verdict, fault = "fault", faults[0]
    elif watches or impulsive:
        verdict, fault = "watch", (watches[0] if watches else None)
    else:
        verdict, fault = "healthy", None
    return {
        "verdict": verdict,
        "fault": fault,
        "reasons": reasons,
        "time": {
            "rms": _sig(features.rms),
            "peak": _sig(features.peak),
            "crest_factor": round(features.crest_factor, 3),
            "kurtosis": round(features.kurtosis, 3),
        },
        "envelope": envelope,
        "fault_frequencies_hz": {n: round(f, 2) for n, f in expected.items()},
        "lines": evidence,
    }


# --- the stream ---------------------------------------------------------------------


def check_shaft_hz(value: float) -> float:
    """A shaft speed as given: finite and >= 0 (0: the engine stands still)."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"shaft_hz {value!r}: want a finite speed >= 0 rev/s")
    return value


class Diagnostic:
    """Cuts a sample stream into windows and diagnoses those the mode selects."""

    def __init__(
        self,
        settings: Settings,
        mode: Callable[[], ModeChoice],
        shaft_hz: float,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.shaft_hz = check_shaft_hz(shaft_hz)
        self.decimator = Decimator(settings.decimate)
        self.pending: list[Array] = []
        self.pending_len = 0
        self.index = 0  # windows seen

    def feed(self, samples: Array, shaft_hz: float | None = None) -> list[dict[str, Any]]:
        """Takes samples; returns the verdicts of the windows they completed."""
        if shaft_hz is not None:
            self.shaft_hz = check_shaft_hz(shaft_hz)
        self.pending.append(np.asarray(samples, dtype=np.float64))
        self.pending_len += len(samples)
        size = self.settings.window_samples()
        out = []
        while self.pending_len >= size:
            joined = np.concatenate(self.pending)
            window, rest = joined[:size], joined[size:]
            self.pending, self.pending_len = [rest], len(rest)
            verdict = self.window(window)
            if verdict is not None:
                out.append(verdict)
        return out

    def window(self, window: Array) -> dict[str, Any] | None:
        s = self.settings
        index, self.index = self.index, self.index + 1
        window, unusable = usable_samples(window)
        choice = self.mode()
        if choice.mode == "normal" and index % s.every:
            self.decimator.remember(window)
            return None
        if choice.mode == "normal":
            x, fs = self.decimator(window), s.fs / s.decimate
            usable = 0.8 * fs / 2
        else:
            self.decimator.remember(window)
            x, fs = window, s.fs
            usable = 0.8 * fs / 2
        if unusable > s.max_unusable * len(window):
            result = invalid(unusable, len(window), s.bearing.fault_frequencies(self.shaft_hz))
        else:
            result = diagnose(x, fs, self.shaft_hz, s, usable)
            if unusable:
                result["reasons"].append(
                    f"{unusable} unusable sample(s) (NaN, infinite or beyond"
                    f" {MAX_SAMPLE:g}) replaced by the window's mean"
                )
        return {
            "window": index,
            "t_start_s": round(index * s.window_s, 3),
            "mode": choice.mode,
            "mode_source": choice.source,
            "fs_hz": fs,
            "shaft_hz": self.shaft_hz,
            "unusable_samples": unusable,
            **result,
        }


MAX_SAMPLE = 1e30  # larger magnitudes overflow the 4th moment: unusable like NaN


def usable_samples(window: Array) -> tuple[Array, int]:
    """The window with NaN, infinite and absurdly large samples replaced by the mean of the
    others (0 if none), so that neither the verdict nor the decimator's history is
    poisoned; and how many there were."""
    bad = ~(np.abs(window) <= MAX_SAMPLE)  # NaN compares False
    count = int(bad.sum())
    if not count:
        return window, 0
    good = window[~bad]
    fill = float(good.mean()) if len(good) else 0.0
    return np.where(bad, fill, window), count


def invalid(unusable: int, total: int, expected: Mapping[str, float]) -> dict[str, Any]:
    """The verdict of a window with too many unusable samples to say anything."""
    why = f"{unusable} of {total} samples unusable (NaN, infinite or beyond {MAX_SAMPLE:g})"
    return {
        "verdict": "invalid",
        "fault": None,
        "reasons": [f"window not analysed: {why}"],
        "time": None,
        "envelope": {"skipped": why},
        "fault_frequencies_hz": {n: round(f, 2) for n, f in expected.items()},
        "lines": {},
    }


# --- synthetic signals (the example pod without a sensor, the benchmark) -------------


def synthesize(
    kind: Literal["healthy", "outer", "inner"],
    *,
    fs: float,
    seconds: float,
    shaft_hz: float,
    bearing: Bearing = SKF_6205,
    resonance_hz: float = 1800.0,
    impact: float = 1.0,
    noise: float = 0.25,
    slip: float = 0.01,
    seed: int = 0,
) -> Array:
    """Shaft harmonics + white noise, with a bearing fault's impacts ringing a resonance.

    Each impact is a decaying sine at `resonance_hz` (about 4 ms long); impacts
    come at the fault frequency lowered by `slip`, with 0.5 % timing jitter; an
    inner-race fault's impacts are modulated once per shaft turn (the load zone).
    """
    rng = np.random.default_rng(seed)
    n = round(fs * seconds)
    t = np.arange(n) / fs
    x = 0.5 * np.sin(2 * np.pi * shaft_hz * t) + 0.2 * np.sin(2 * np.pi * 2 * shaft_hz * t + 1.0)
    x += noise * rng.standard_normal(n)
    if kind == "healthy":
        return x
    rate = bearing.fault_frequencies(shaft_hz)["BPFO" if kind == "outer" else "BPFI"]
    period = 1.0 / (rate * (1 - slip))
    times = np.arange(rng.uniform(0, period), seconds, period)
    times = times + rng.normal(0, 0.005 * period, len(times))
    amps = np.full(len(times), impact)
    if kind == "inner":
        amps *= 0.6 + 0.4 * np.cos(2 * np.pi * shaft_hz * times)
    pulses = np.zeros(n)
    idx = np.clip(np.round(times * fs).astype(int), 0, n - 1)
    np.add.at(pulses, idx, amps)
    tau = 0.0008
    ring_t = np.arange(round(5 * tau * fs)) / fs
    ring = np.exp(-ring_t / tau) * np.sin(2 * np.pi * resonance_hz * ring_t)
    x += np.fft.irfft(np.fft.rfft(pulses, n + len(ring)) * np.fft.rfft(ring, n + len(ring)))[:n]
    return x


# --- input and the command line -------------------------------------------------------


def read_jsonl(stream: IO[str]) -> Iterator[tuple[Array, float | None]]:
    """JSON lines: `{"samples": [...], "shaft_hz": f}` (shaft_hz optional) or `[...]`."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if isinstance(record, list):
            yield np.asarray(record, dtype=np.float64), None
        elif isinstance(record, dict) and isinstance(record.get("samples"), list):
            shaft = record.get("shaft_hz")
            try:
                speed = None if shaft is None else check_shaft_hz(float(shaft))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"line {number}: shaft_hz {shaft!r}: {exc}") from None
            yield np.asarray(record["samples"], dtype=np.float64), speed
        else:
            raise ValueError(f"line {number}: want an array or an object with `samples`")


def read_raw(stream: IO[bytes], dtype: str, chunk: int = 1 << 16) -> Iterator[tuple[Array, None]]:
    """Raw little-endian floats (`f32le` or `f64le`), as they arrive: a live sensor's
    samples are not held back until `chunk` of them are there."""
    kind = np.dtype("<f4" if dtype == "f32le" else "<f8")
    # BufferedReader.read(n) waits for n bytes (64 Ki samples: 33 s at 2 kHz); read1 returns
    # what one read of the pipe gives. A raw stream's read already does.
    read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
    leftover = b""
    while block := read(chunk * kind.itemsize):
        data = leftover + block
        whole = len(data) - len(data) % kind.itemsize
        leftover = data[whole:]
        yield np.frombuffer(data[:whole], dtype=kind).astype(np.float64), None


def simulated(
    kind: Literal["healthy", "outer", "inner"], settings: Settings, shaft_hz: float, realtime: bool
) -> Iterator[tuple[Array, None]]:
    """Endless synthetic windows, paced at the signal's own rate when `realtime`."""
    start, seed = time.monotonic(), 0
    while True:
        yield (
            synthesize(
                kind,
                fs=settings.fs,
                seconds=settings.window_s,
                shaft_hz=shaft_hz,
                bearing=settings.bearing,
                seed=seed,
            ),
            None,
        )
        seed += 1
        if realtime:
            time.sleep(max(0.0, start + seed * settings.window_s - time.monotonic()))


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _bearing_arg(text: str) -> Bearing:
    try:
        return parse_bearing(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shaft_arg(text: str) -> float:
    try:
        return check_shaft_hz(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="engine-diagnostic",
        description="Bearing fault diagnostic on a vibration stream: one JSON verdict per"
        " analysed window on stdout.",
    )
    p.add_argument(
        "--fs",
        type=_finite,
        default=env("SAMPLE_RATE_HZ", "25600"),  # a string default goes through `type` too
        help="sampling rate, Hz (env SAMPLE_RATE_HZ; 25600)",
    )
    p.add_argument(
        "--shaft-hz",
        type=_shaft_arg,
        default=env("SHAFT_HZ", "29.95"),  # a string default goes through `type` too
        help="shaft speed, rev/s; JSON lines may update it (env SHAFT_HZ; 29.95)",
    )
    p.add_argument(
        "--bearing",
        type=_bearing_arg,
        default=env("BEARING", "9,7.94,39.04,0"),
        help="balls,ball_diameter,pitch_diameter[,contact_angle_deg] (env BEARING; SKF 6205)",
    )
    p.add_argument("--window", type=_finite, default=1.0, help="window length, s (1.0)")
    p.add_argument(
        "--mode", choices=MODES, help="fix the mode instead of reading the annotation every window"
    )
    p.add_argument(
        "--annotations",
        type=Path,
        default=ANNOTATIONS_FILE,
        help=f"Downward API annotations file ({ANNOTATIONS_FILE})",
    )
    p.add_argument("--decimate", type=int, default=4, help="normal mode's decimation factor (4)")
    p.add_argument("--every", type=int, default=4, help="normal mode analyses every Nth window (4)")
    p.add_argument(
        "--band",
        type=_finite,
        nargs=2,
        metavar=("LO", "HI"),
        help="demodulate this band (Hz) instead of picking the most impulsive",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--input", default=env("INPUT", "-"), help="samples file, - for stdin (env INPUT; -)"
    )
    source.add_argument(
        "--simulate",
        choices=("healthy", "outer", "inner"),
        default=env("SIMULATE") or None,
        help="analyse a synthetic signal instead (env SIMULATE)",
    )
    p.add_argument(
        "--format",
        choices=("jsonl", "f32le", "f64le"),
        default="jsonl",
        help="input format (jsonl)",
    )
    p.add_argument(
        "--realtime", action="store_true", help="with --simulate: pace the signal at its own rate"
    )
    p.add_argument(
        "--windows",
        type=int,
        default=0,
        help="stop after this many windows of signal (0: at the end of the input)",
    )
    return p


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a pod stopped (or moved): a clean exit, every verdict printed


def main(argv: Sequence[str] | None = None) -> int:
    # PID 1 in its container: the kernel delivers it no signal it has no handler for, so
    # without this SIGTERM was ignored and every stop waited for the SIGKILL (30 s).
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.decimate < 1 or args.every < 1 or args.window <= 0 or args.fs <= 0:
        print("--decimate and --every must be >= 1, --window and --fs > 0", file=sys.stderr)
        return 2
    if args.simulate in ("outer", "inner") and args.shaft_hz <= 0:
        print("--simulate a fault needs a turning shaft: --shaft-hz > 0", file=sys.stderr)
        return 2
    settings = Settings(
        fs=args.fs,
        bearing=args.bearing,
        window_s=args.window,
        decimate=args.decimate,
        every=args.every,
        band=tuple(args.band) if args.band else None,
    )
    fixed: Mode | None = args.mode
    annotations: Path = args.annotations

    def mode() -> ModeChoice:
        return ModeChoice(fixed, "--mode") if fixed else read_mode(annotations)

    diag = Diagnostic(settings, mode, args.shaft_hz)
    chunks: Iterator[tuple[Array, float | None]]
    opened: IO[Any] | None = None
    if args.simulate:
        chunks = simulated(args.simulate, settings, args.shaft_hz, args.realtime)
    elif args.format == "jsonl":
        opened = None if args.input == "-" else open(args.input)  # noqa: SIM115
        chunks = read_jsonl(sys.stdin if opened is None else opened)
    else:
        opened = None if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
        chunks = read_raw(sys.stdin.buffer if opened is None else opened, args.format)
    try:
        for samples, shaft in chunks:
            for verdict in diag.feed(samples, shaft):
                print(json.dumps(verdict, allow_nan=False), flush=True)
            if args.windows and diag.index >= args.windows:
                break
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return 1
    finally:
        if opened is not None:
            opened.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
