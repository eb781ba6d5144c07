"""``cloud4iot replay``: a recorded site through the live decision chain, with a report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cloud4iot.buildinfo import DEFAULT_POLICY, require_extra
from cloud4iot.logs import configure, log_flags
from cloud4iot.output import emit, output_flag

IDLE_CPU = 0.3  # replay.functions.IDLE_CPU (not imported here: numpy may be missing)

MISSING_EXTRA = (
    "cloud4iot replay: this command needs the 'replay' extra (numpy, matplotlib); "
    "install cloud4iot-placement[replay]"
)

COLUMNS = (
    ("accuracy_pct", "right gw %"),
    ("reached", "changes reached"),
    ("lag_p50_s", "lag p50 s"),
    ("deficit_p50_db", "deficit p50 dB"),
    ("deficit_p90_db", "deficit p90 dB"),
    ("below_10db_pct", ">=10 dB below %"),
    ("changes_per_min", "moves/min"),
    ("undecided_s", "undecided s"),
    ("function_moves_per_h", "fn moves/h"),
    ("unplaced_s", "fn unplaced s"),
)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError("use NAME=VALUE")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloud4iot replay",
        description="Replays per-gateway advert recordings through each gateway's tracker "
        "and publish plan and the elected writer's nearest decision, on a virtual clock "
        "(no cluster), and scores the decisions against the best link, the baselines and "
        "optional truth.",
    )
    p.add_argument(
        "csv",
        type=Path,
        nargs="*",
        help="CSV recordings: time_s,gateway,rssi_dbm[,device] (.gz ok)",
    )
    p.add_argument(
        "--trace",
        type=_pair,
        action="append",
        default=[],
        metavar="NODE=FILE",
        help="a gateway's monitor trace or --record file (JSONL; repeatable)",
    )
    p.add_argument(
        "--device",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=ADDRESS",
        help="name a traced address, on air or a recorded Device's identity address "
        "(repeatable; each must match)",
    )
    p.add_argument("--truth", type=Path, help="CSV: time_s,nearest_gateway[,device]")
    p.add_argument(
        "--policy", type=Path, default=DEFAULT_POLICY, help="default: the shipped policy"
    )
    p.add_argument("--compare", type=Path, help="a second policy, side by side")
    p.add_argument(
        "--function-class",
        metavar="CLASS",
        help="the class of the function bound to each device, placed by the scorer and "
        "moved by the rebalancer's planner (default: the policy's first class with "
        "proximity required on gateways; 'none': decisions only)",
    )
    p.add_argument(
        "--node",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=TIER",
        help="a node besides the recording's gateways, e.g. edge-1=edge (repeatable)",
    )
    p.add_argument(
        "--load",
        type=Path,
        help=f"CSV: time_s,node,cpu[,memory] (0..1); default every node at {IDLE_CPU} CPU",
    )
    p.add_argument("--no-baselines", action="store_true", help="only the policies")
    output_flag(p)  # wide: the per-device tables too
    p.add_argument("--per-device", action="store_true", help="a table per device too")
    log_flags(p, "warning")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw the decisions over time")
    return p


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Any]:
    from cloud4iot.policy.loader import load_policy
    from replay.inputs import (
        InputError,
        check_load,
        check_load_overlap,
        check_span,
        check_truth,
        check_units,
        merge,
        read_csv_adverts,
        read_trace_adverts,
        read_truth,
    )

    names = _device_names(args)
    parts = {str(p): read_csv_adverts(p) for p in args.csv}
    matched: set[str] = set()
    for node, f in args.trace:
        parts[f"{node}={f}"] = read_trace_adverts(node, Path(f), names, matched)
    if unmatched := [n for n in names if n not in matched]:
        raise InputError(
            "; ".join(f"--device {n}={names[n]}: no trace has this address" for n in unmatched)
            + " (a Device with an identity key is on air under rotating addresses: only"
            " a --record file that names its identity address matches it)"
        )
    check_span(parts)
    # CSV only: its time_s is typed by people; a monitor's trace is epoch seconds, and a
    # far gateway's may rightly hear a device less often than every 10 s
    check_units({name: parts[name] for name in map(str, args.csv)})
    recording = merge(list(parts.values()))
    policies = {"policy": load_policy(args.policy)}
    if args.compare is not None:
        policies["compare"] = load_policy(args.compare)
    truth = read_truth(args.truth) if args.truth else None
    if truth is not None:
        check_truth(truth, recording, args.truth)
    config = _chain_config(args, policies["policy"])
    if config.load is not None:
        check_load(config.load, [*recording.gateways, *config.extra_nodes], args.load)
        max_age = policies["policy"].policy.spec.stale_data.load_max_age
        check_load_overlap(config.load, recording, args.load, max_age)
    return recording, policies, truth, config


def _device_names(args: argparse.Namespace) -> dict[str, str]:
    """--device NAME=ADDRESS as name -> address (upper case); refuses what would be
    ignored: a repeated name or address, an address no radio makes, --device with no
    --trace (CSV recordings carry no addresses)."""
    from gateway_monitor.traces import ADDRESS
    from replay.inputs import InputError

    if args.device and not args.trace:
        raise InputError("--device names addresses in --trace files; CSV rows name their device")
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for name, address in args.device:
        address = address.strip().upper()
        if not ADDRESS.fullmatch(address):
            raise InputError(
                f"--device {name}={address}: not a Bluetooth address (XX:XX:XX:XX:XX:XX)"
            )
        if name in names:
            raise InputError(f"--device {name}: given twice ({names[name]}, {address})")
        if address in owners:
            raise InputError(f"--device {address}: given two names ({owners[address]}, {name})")
        names[name], owners[address] = address, name
    return names


def _chain_config(args: argparse.Namespace, policy: Any) -> Any:
    from replay.chain import ChainConfig
    from replay.functions import default_class
    from replay.inputs import InputError, read_load

    tiers = ("gateway", "edge", "cloud")
    for name, tier in args.node:
        if tier not in tiers:
            raise InputError(f"--node {name}={tier}: the tier is one of {', '.join(tiers)}")
    cls = args.function_class
    if cls is None:
        cls = default_class(policy)
    elif cls == "none":
        cls = None
    elif cls not in policy.policy.spec.classes:
        raise InputError(f"--function-class {cls}: the policy has no such class")
    # Only the functions' placement reads them: refused, not ignored.
    if cls is None and (
        given := [f for f, v in (("--node", args.node), ("--load", args.load)) if v]
    ):
        why = "--function-class none" if args.function_class else "the policy has no class to place"
        raise InputError(f"{' and '.join(given)}: no function to place ({why})")
    load = read_load(args.load) if args.load else None
    return ChainConfig(function_class=cls, extra_nodes=dict(args.node), load=load)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    require_extra("cloud4iot replay", "replay")  # installed metadata says it is missing
    try:
        import numpy  # noqa: F401
    except ImportError:  # a source tree without it
        print(MISSING_EXTRA, file=sys.stderr)
        return 1
    from cloud4iot.policy.loader import PolicyError
    from replay.evaluate import evaluate
    from replay.inputs import InputError

    if not args.csv and not args.trace:
        print("cloud4iot replay: give CSV recordings or --trace NODE=FILE", file=sys.stderr)
        return 2
    plot: Any = None
    if args.plot is not None:  # before the replay, which may take minutes
        try:
            from replay.plot import plot
        except ImportError:
            print(MISSING_EXTRA, file=sys.stderr)
            return 1
        if (why := _unwritable(args.plot)) is not None:
            print(f"cloud4iot replay: --plot {args.plot}: {why}", file=sys.stderr)
            return 2
    try:
        recording, policies, truth, config = _load(args)
    except (InputError, PolicyError, OSError) as exc:
        print(f"cloud4iot replay: {exc}", file=sys.stderr)
        return 2
    if not recording.adverts:
        print("cloud4iot replay: the recordings hold no adverts", file=sys.stderr)
        return 2
    ev = evaluate(recording, policies, truth, config, with_baselines=not args.no_baselines)
    _report(args, ev.as_json())  # first: a plot that fails loses no result
    if plot is not None:
        try:
            plot(ev, args.plot, truth)
        except (OSError, ValueError) as exc:
            print(f"cloud4iot replay: --plot {args.plot}: {exc}", file=sys.stderr)
            return 1
    return 0


def _unwritable(path: Path) -> str | None:
    """Why --plot cannot write ``path`` (None: it can), known before the replay runs."""
    if path.is_dir():
        return f"a directory; give a file in it, e.g. {path / 'replay.png'}"
    if not path.parent.is_dir():
        return f"no directory {path.parent}"
    if not os.access(path.parent, os.W_OK):
        return f"cannot write in {path.parent}"
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if (suffix := path.suffix.lower().lstrip(".")) and suffix not in kinds:
        return f"matplotlib draws no .{suffix} (png, svg, pdf, ...)"
    return None


def _report(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.output in ("json", "yaml"):
        emit(doc, args.output, lambda _doc, _wide: "")
        return
    print(_table("all devices", doc["total"]))
    if args.per_device or args.output == "wide":
        for device, rows in doc["devices"].items():
            print()
            print(_table(device, rows))
    for method, chain in doc["chain"].items():
        print(
            f"\n{method}: {chain['adverts']} adverts through the chain in {chain['seconds']} s "
            f"({chain['adverts_per_s']} adverts/s), {chain['applies']} applies"
        )


def _table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    head = ["method", *[label for _, label in COLUMNS]]
    body = []
    for method, s in rows.items():
        cells = [method]
        for key, _ in COLUMNS:
            v = s.get(key)
            if key == "reached":
                cells.append(f"{v} of {s['true_changes']}" if s["true_changes"] else "-")
            else:
                cells.append("-" if v is None else f"{v:g}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in body
    ]
    return "\n".join(lines)
