"""What each `nearest` knob (and the monitor's smoothing) does on the flat's recordings,
replayed on the live loops' timing: the table in policies/README.md.

    python -m devcluster bench nearest-knobs

Each row changes one thing from the shipped policy and monitor defaults; the baselines
(EMA 3 s + 6 dB, strongest 5 s mean, hindsight) come from the same replay. Pooled over
the five runs with truth (calib1-4, test_robot), and test_robot and test_walk (held out,
no truth) on their own. "fn moves/h" is the function bound to the device
(mhealth-consolidator) moved by the rebalancer's planner, over the five runs.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

from cloud4iot.buildinfo import DEFAULT_POLICY
from cloud4iot.policy.loader import LoadedPolicy, parse_policy
from replay.chain import ChainConfig
from replay.evaluate import BASELINES, evaluate
from replay.functions import FunctionStats, default_class
from replay.inputs import read_csv_adverts, read_truth
from replay.metrics import Score

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "ble-flat"
WITH_TRUTH = ("calib1", "calib2", "calib3", "calib4", "test_robot")
RUNS = (*WITH_TRUTH, "test_walk")

# label -> (policy changes {yaml key: value}, tracker changes, publish changes)
Row = tuple[dict[str, str], dict[str, float], dict[str, float]]
ROWS: dict[str, Row] = {
    "defaults": ({}, {}, {}),
    "rule: dwell": ({"rule": "dwell"}, {}, {}),
    "switchCostDbS: 4": ({"switchCostDbS": "4"}, {}, {}),
    "switchCostDbS: 8": ({"switchCostDbS": "8"}, {}, {}),
    "switchCostDbS: 12": ({"switchCostDbS": "12"}, {}, {}),
    "deadbandDb: 4.5": ({"deadbandDb": "4.5"}, {}, {}),
    "deadbandDb: 6.5": ({"deadbandDb": "6.5"}, {}, {}),
    "switchCostDbS: 12, deadbandDb: 3 (the policy before)": (
        {"switchCostDbS": "12", "deadbandDb": "3"},
        {},
        {},
    ),
    "arrivalWait: 0s": ({"arrivalWait": "0s"}, {}, {}),
    "settle: 0s": ({"settle": "0s"}, {}, {}),
    "monitor --rssi-window 2": ({}, {"rssi_window": 2.0}, {}),
    "monitor --rssi-window 5": ({}, {"rssi_window": 5.0}, {}),
    "monitor --rssi-step 3 --min-interval 2": ({}, {}, {"step": 3, "min_interval": 2.0}),
    # The Lease path's publisher (PublishConfig; no monitor flag): steps below 6 dB held
    # up to `coalesce` s (off by default), any write `report_interval` s after the last.
    "publish coalesce 10 s (before)": ({}, {}, {"coalesce": 10.0}),
    "publish report_interval 0 s": ({}, {}, {"report_interval": 0.0}),
}


def variant(changes: dict[str, str]) -> LoadedPolicy:
    text = DEFAULT_POLICY.read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"(\n    {key}: )\S+", rf"\g<1>{value}", text)
        if n != 1:
            raise SystemExit(f"{key} not found once in {DEFAULT_POLICY}")
    return parse_policy(text, str(DEFAULT_POLICY))


def _cells(s: dict[str, float | int | None], truth: bool) -> list[str]:
    def f(key: str, fmt: str) -> str:
        v = s.get(key)
        return "-" if v is None else format(v, fmt)

    out = [f"{f('deficit_p90_db', '.2f')}", f"{f('below_10db_pct', '.1f')}%"]
    out.append(f("changes_per_min", ".2f"))
    if truth:
        out = [f"{f('accuracy_pct', '.0f')}%", f"{s['reached']}/{s['true_changes']}", *out]
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rows", nargs="*", metavar="LABEL", help="only these rows (the defaults always)"
    )
    args = p.parse_args(argv)
    rows = {k: v for k, v in ROWS.items() if not args.rows or k == "defaults" or k in args.rows}
    began = time.perf_counter()
    recordings = {r: read_csv_adverts(DATA / f"{r}.adverts.csv.gz") for r in RUNS}
    truths = {r: read_truth(DATA / f"{r}.truth.csv.gz") for r in WITH_TRUTH}
    table: dict[str, dict[str, list[str]]] = {}
    fn_rate: dict[str, str] = {}
    for label, (changes, tracker, publish) in rows.items():
        policy = variant(changes)
        base = ChainConfig()
        cfg = ChainConfig(
            tracker=replace(base.tracker, **tracker),  # type: ignore[arg-type]
            publish=replace(base.publish, **publish),  # type: ignore[arg-type]
            function_class=default_class(policy),
        )
        pooled: dict[str, Score] = {}
        robot: dict[str, Score] = {}
        walk: dict[str, Score] = {}
        fns = FunctionStats()
        first = label == "defaults"
        for run, rec in recordings.items():
            ev = evaluate(rec, {label: policy}, truths.get(run), cfg, with_baselines=first)
            for m in ev.methods:
                total = ev.total(m)
                if run == "test_walk":
                    walk.setdefault(m, Score()).add(total)
                else:
                    pooled.setdefault(m, Score()).add(total)
                if run == "test_robot":
                    robot.setdefault(m, Score()).add(total)
            if run != "test_walk":
                for stats in ev.chains[label].functions.values():
                    fns.add(stats)
        fn_rate[label] = f"{fns.summary()['function_moves_per_h']}"
        for m in pooled:
            table[m] = {
                "all5": _cells(pooled[m].summary(), True),
                "robot": _cells(robot[m].summary(), False),
                "walk": _cells(walk[m].summary(), False),
            }
    print(
        "| row | right gw (5 runs) | true changes reached | deficit p90 dB | >= 10 dB below "
        "| moves/min | fn moves/h | test_robot: p90 / >=10 dB / moves/min "
        "| test_walk: p90 / >=10 dB / moves/min |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = ["defaults", *BASELINES, *[r for r in rows if r != "defaults"]]
    for m in order:
        t = table[m]
        print(
            f"| {m} | {' | '.join(t['all5'])} | {fn_rate.get(m, '-')} | "
            f"{' / '.join(t['robot'])} | {' / '.join(t['walk'])} |"
        )
    print(f"\n{len(rows)} variants x {len(RUNS)} recordings in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
