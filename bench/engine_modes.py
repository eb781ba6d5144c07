"""What the engine diagnostic's two modes cost in CPU, and what each detects.

    .venv/bin/python -m bench.engine_modes

(from the repository root; options: --fs 25600 --seconds 60 --shaft-hz 29.95
--repeat 3 --chunk 0.1; needs numpy: `pip install -e '.[engine]'`)

Runs images/engine-diagnostic/engine_diagnostic.py's `Diagnostic` (the code the
image runs) on synthetic signals (the module's `synthesize`: shaft harmonics,
white noise and, for a fault, impacts ringing a resonance) in both modes, side by
side in one process: `intensive` (every window at the full rate) and `normal`
(every 4th window, decimated by 4). The stream is fed in --chunk second pieces as
a sensor would deliver it. Per signal and mode it prints

- CPU (`time.process_time`) per second of signal fed, the best of --repeat runs
  with the modes interleaved: what the pod costs its node;
- CPU per analysed window and the number of windows analysed;
- the verdicts: how many windows were `fault` with the right fault, `watch`, `healthy`.

Signals: healthy; an outer-race (BPFO) and an inner-race (BPFI) fault ringing a
1.8 kHz resonance, inside the decimated band; an outer-race fault ringing 4 kHz,
which only the full rate can see. Seconds of signal per signal: --seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

SOURCE = (
    Path(__file__).resolve().parents[1] / "images" / "engine-diagnostic" / "engine_diagnostic.py"
)
MODES = ("intensive", "normal")
# name, synthesize kind, resonance Hz, the fault the verdicts should name (None: healthy)
SIGNALS: tuple[tuple[str, str, float, str | None], ...] = (
    ("healthy", "healthy", 1800.0, None),
    ("outer race, 1.8 kHz resonance", "outer", 1800.0, "BPFO"),
    ("inner race, 1.8 kHz resonance", "inner", 1800.0, "BPFI"),
    ("outer race, 4 kHz resonance", "outer", 4000.0, "BPFO"),
)


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_diagnostic", SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    cpu_s: float  # best of the repeats
    windows: int
    analysed: int
    verdicts: Counter[str]


def one_run(ed: ModuleType, signal: Any, mode: str, fs: float, shaft: float, chunk: float) -> Run:
    settings = ed.Settings(fs=fs)
    choice = ed.ModeChoice(mode, "bench")
    diag = ed.Diagnostic(settings, lambda: choice, shaft)
    step = round(chunk * fs)
    verdicts: list[dict[str, Any]] = []
    start = time.process_time()
    for at in range(0, len(signal), step):
        verdicts += diag.feed(signal[at : at + step])
    cpu = time.process_time() - start
    counted: Counter[str] = Counter(
        f"{v['verdict']} {v['fault']}" if v["fault"] else str(v["verdict"]) for v in verdicts
    )
    return Run(cpu, int(diag.index), len(verdicts), counted)


def measure(
    fs: float, seconds: float, shaft: float, repeat: int, chunk: float
) -> list[tuple[str, str | None, dict[str, Run]]]:
    ed = load()
    rows = []
    for name, kind, resonance, fault in SIGNALS:
        signal = ed.synthesize(
            kind, fs=fs, seconds=seconds, shaft_hz=shaft, resonance_hz=resonance, seed=1
        )
        best: dict[str, Run] = {}
        for _ in range(repeat):
            for mode in MODES:  # interleaved: both modes see the same machine load
                run = one_run(ed, signal, mode, fs, shaft, chunk)
                if mode not in best or run.cpu_s < best[mode].cpu_s:
                    best[mode] = run
        rows.append((name, fault, best))
    return rows


def describe(run: Run, fault: str | None) -> str:
    right = run.verdicts.get(f"fault {fault}", 0) if fault else run.verdicts.get("healthy", 0)
    wanted = f"fault {fault}" if fault else "healthy"
    others = ", ".join(f"{n} {k}" for k, n in sorted(run.verdicts.items()) if k != wanted and n)
    return f"{right}/{run.analysed} {wanted}" + (f" ({others})" if others else "")


def report(rows: list[tuple[str, str | None, dict[str, Run]]], fs: float, seconds: float) -> str:
    lines = [
        f"fs {fs:g} Hz, {seconds:g} s of signal per row, 1 s windows;"
        " normal = every 4th window, decimated by 4",
        "",
        "| signal | mode | CPU ms per s of signal | CPU ms per analysed window"
        " | windows analysed | verdicts |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, fault, runs in rows:
        for mode in MODES:
            run = runs[mode]
            per_window = 1000 * run.cpu_s / run.analysed if run.analysed else float("nan")
            lines.append(
                f"| {name} | {mode} | {1000 * run.cpu_s / seconds:.2f} | {per_window:.2f}"
                f" | {run.analysed}/{run.windows} | {describe(run, fault)} |"
            )
    ratios = [r["intensive"].cpu_s / r["normal"].cpu_s for _, _, r in rows if r["normal"].cpu_s]
    if ratios:
        lines += ["", f"intensive / normal CPU: {min(ratios):.1f}x to {max(ratios):.1f}x"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fs", type=float, default=25_600.0, help="sampling rate, Hz")
    parser.add_argument("--seconds", type=float, default=60.0, help="signal per row, s")
    parser.add_argument("--shaft-hz", type=float, default=29.95)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=float, default=0.1, help="seconds per feed() call")
    args = parser.parse_args(argv)
    if args.seconds < 4 or args.repeat < 1 or args.chunk <= 0:
        parser.error("--seconds must be >= 4, --repeat >= 1, --chunk > 0")
    print(
        report(
            measure(args.fs, args.seconds, args.shaft_hz, args.repeat, args.chunk),
            args.fs,
            args.seconds,
        )
    )


if __name__ == "__main__":
    main()
