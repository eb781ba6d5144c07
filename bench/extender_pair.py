"""Filter+prioritize pairs as kube-scheduler sends them: our extender vs a Go no-op.

    python -m devcluster bench extender-pair [--names 500 5000] [--concurrency 1 4]
        [--profile DIR]

A Go client (bench/go/loadgen) does per pod what kube-scheduler does: POST /filter
with ExtenderArgs in NodeNames mode, then POST /prioritize with the names kept
(encoding/json, keep-alive, C workers each doing one pod at a time). It checks every
answer against expectations computed here, independently of our scorer, and exits
non-zero on the first wrong one, so an error path is never what is timed. The floor
is a Go no-op extender (bench/go/noop: decode, keep all, score 0). Both Go programs
are built with `go build` into ~/.cache/cloud4iot/bench (nothing binary is committed).

Worlds of 500 and 5,000 nodes (1/10 gateway, 3/10 edge, the rest cloud; load on every
node; two Devices per node, each heard by one or two gateways, the strongest also
its status.nearest), served by `python -m extender --state FILE`. Every node is
sent, so names = nodes. The pod mix cycles: confidential with a device
(mhealth-consolidator), engine-diagnostic intensive with a device, anonymiser,
unmanaged. Prints Markdown: the pair's p50/p99, pairs/s and the ratios to the no-op,
filter answer size and client decode time, per pod kind, then the extender's RSS with
the largest world loaded and, with --profile, a py-spy profile of the extender during
a repeat of the largest, least concurrent run (never the measured one).

With --before DIR (a source tree of another commit, e.g. `git archive REF | tar -x
-C DIR`), the extender of that tree is served too, from DIR with the same Python and
state, and timed between the no-op and ours at every size and concurrency: the rows
"cloud4iot before" and a before/after table (ours / before) measure a change side
by side in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devcluster.processes import free_port, running, wait_http_ok

ROOT = Path(__file__).resolve().parents[1]
GO_DIR = ROOT / "bench" / "go"
KINDS = ("confidential", "engine-intensive", "anonymiser", "unmanaged")
VARIANTS = 4  # devices per device-bound kind in the mix


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloud4iot" / "bench"


def build_go(out: Path | None = None) -> dict[str, Path]:
    """`go build` the load generator and the no-op (Go's own cache makes a rebuild cheap)."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("extender-pair needs Go (`go` on PATH) to build bench/go")
    out = out or cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    built = {}
    for prog in ("loadgen", "noop"):
        built[prog] = out / prog
        subprocess.run(
            [go, "build", "-o", str(built[prog]), f"./{prog}"], cwd=GO_DIR, env=env, check=True
        )
    return built


def tier_of(i: int) -> str:
    return "gateway" if i % 10 == 0 else "edge" if i % 10 < 4 else "cloud"


def world(n: int, devices_per_node: int = 2, now: float | None = None) -> dict[str, Any]:
    """A state file document: n nodes, n*devices_per_node Devices, load on every node."""
    now = time.time() if now is None else now
    nodes: list[dict[str, Any]] = []
    load: dict[str, dict[str, Any]] = {}
    for i in range(n):
        tier = tier_of(i)
        name = f"{tier}-{i:05d}"
        arch = "arm64" if tier == "gateway" else "amd64"
        labels = {
            "cloud4iot.io/tier": tier,
            "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
        }
        alloc = {"cpu": "4", "memory": "8Gi", "pods": "110"}
        nodes.append(
            {
                "metadata": {"name": name, "labels": labels},
                "status": {"capacity": alloc, "allocatable": alloc},
            }
        )
        # Below every class's load limits: load shapes the score, never the verdict.
        load[name] = {"cpu": (i % 7) / 10, "memory": (i % 5) / 10, "age": "1s"}
    gateways = [nd["metadata"]["name"] for nd in nodes if nd["metadata"]["name"][:1] == "g"]
    devices = []
    for d in range(n * devices_per_node):
        strongest = gateways[d % len(gateways)]
        other = gateways[(d * 7 + 3) % len(gateways)]
        rssi = -50 - d % 20
        sightings = [{"node": strongest, "rssi": rssi, "lastSeen": now - 1}]
        if other != strongest:
            sightings.append({"node": other, "rssi": rssi - 12, "lastSeen": now - 1})
        devices.append(
            {
                "metadata": {"name": f"dev-{d}"},
                "spec": {
                    "address": f"AA:BB:CC:{d >> 16 & 255:02X}:{d >> 8 & 255:02X}:{d & 255:02X}"
                },
                "status": {"sightings": sightings, "nearest": {"node": strongest}},
            }
        )
    return {"now": now, "nodes": nodes, "devices": devices, "load": load}


def pod(function: str | None, device: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """A pending pod as kube-scheduler sends it (the fields the Go client's Pod type has)."""
    ann = {
        k: v
        for k, v in {
            "cloud4iot.io/function": function,
            "cloud4iot.io/device": device,
            "cloud4iot.io/mode": mode,
        }.items()
        if v
    }
    res = {"cpu": "100m", "memory": "500Mi"}
    return {
        "metadata": {"name": "p", "namespace": "bench", "uid": "", "annotations": ann},
        "spec": {
            "schedulerName": "cloud4iot-scheduler",
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"requests": res, "limits": res}}
            ],
        },
        "status": {"phase": "Pending"},
    }


def plan(w: dict[str, Any]) -> dict[str, Any]:
    """The pod mix and, per pod, what a correct filter answer keeps (from the policy's
    classes, worked out by hand here rather than asked of our scorer)."""
    names = [nd["metadata"]["name"] for nd in w["nodes"]]
    by_tier: dict[str, list[str]] = {t: [] for t in ("gateway", "edge", "cloud")}
    for nd in w["nodes"]:
        by_tier[nd["metadata"]["labels"]["cloud4iot.io/tier"]].append(nd["metadata"]["name"])
    step = max(1, len(w["devices"]) // VARIANTS)
    devices = [w["devices"][(7 + v * step) % len(w["devices"])] for v in range(VARIANTS)]
    cases = []
    for dev in devices:
        name = dev["metadata"]["name"]
        nearest = dev["status"]["nearest"]["node"]
        # Proximity required, nearest gateway heard and under its limits: only it stays.
        cases.append(
            {
                "Kind": "confidential",
                "Pod": pod("mhealth-consolidator", name),
                "Exact": [nearest],
                "Forbid": by_tier["cloud"],
                "MinKept": 1,
            }
        )
        # Proximity preferred, every tier allowed, all under the 0.9 CPU limit: all stay.
        cases.append(
            {
                "Kind": "engine-intensive",
                "Pod": pod("engine-diagnostic", name, "intensive"),
                "MinKept": len(names),
            }
        )
        # Gateway and edge only, no proximity: every non-cloud node stays.
        cases.append(
            {
                "Kind": "anonymiser",
                "Pod": pod("anonymiser"),
                "Forbid": by_tier["cloud"],
                "MinKept": len(by_tier["gateway"]) + len(by_tier["edge"]),
            }
        )
        cases.append({"Kind": "unmanaged", "Pod": pod(None), "MinKept": len(names)})
    return {"NodeNames": names, "Cases": cases}


def bench_policy(dest: Path) -> Path:
    """policies/default.yaml with only the data ages raised: the state file's world ages
    in real time, and sightings and load must stay fresh for the whole run."""
    text = (ROOT / "policies" / "default.yaml").read_text()
    for key in ("loadMaxAge", "sightingMaxAge"):
        text, count = re.subn(rf"{key}: \S+", f"{key}: 1h", text)
        assert count == 1, key
    dest.write_text(text)
    return dest


@contextlib.contextmanager
def serving(argv: list[str], url: str, timeout_s: float = 120, tree: Path = ROOT) -> Iterator[int]:
    # `python -m` puts the working directory first on sys.path: the tree's packages load.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    log = Path(tempfile.gettempdir()) / f"bench-serving-{urlsplit(url).port}.log"
    with running(argv, log, env, cwd=tree) as pid:
        wait_http_ok(url + "/readyz", timeout_s, pid=pid, log=log)
        yield pid


def ours_argv(port: int, policy: Path, state: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "extender",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        str(policy),
        "--state",
        str(state),
        "--log-level",
        "WARNING",
    ]


def run_loadgen(
    loadgen: Path,
    url: str,
    plan_file: Path,
    pairs: int,
    concurrency: int,
    *,
    protocol_only: bool = False,
    warmup: int = 40,
) -> dict[str, Any]:
    """One measured run; raises on an incorrect answer (the Go client exits 1).

    protocol_only: check the protocol but not the pod kinds' expectations (the no-op).
    """
    argv = [str(loadgen), "-url", url, "-plan", str(plan_file), "-pairs", str(pairs)]
    argv += ["-warmup", str(warmup), "-concurrency", str(concurrency)]
    if protocol_only:
        argv.append("-protocol-only")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"load generator against {url} failed:\n{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def vm_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


# --- profile ---------------------------------------------------------------------------


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py:12)`."""
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in frame:
            head, _, tail = frame.partition(" (")
            path = tail.split(marker, 1)[1]
            return f"{head} ({'python3' if marker == '/lib/python3' else ''}{path}"
    return frame


def summarise_profile(raw: Path, top: int = 15) -> tuple[str, int]:
    """py-spy's folded stacks -> Markdown: top functions by self and by total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    lines = ["| self % | total % | function |", "|---:|---:|---|"]
    for frame, n in own.most_common(top):
        lines.append(
            f"| {100 * n / samples:.1f} | {100 * total[frame] / samples:.1f} | `{frame}` |"
        )
    lines += ["", "| total % | function (ours, by inclusive samples) |", "|---:|---|"]
    entry = ("extender/cli.py", "extender/__main__.py")  # under every stack: no news
    ours = [
        (f, n)
        for f, n in total.most_common()
        if "extender/" in f and not any(e in f for e in entry)
    ]
    for frame, n in ours[:top]:
        lines.append(f"| {100 * n / samples:.1f} | `{frame}` |")
    return "\n".join(lines), samples


@contextlib.contextmanager
def profiling(pid: int, raw: Path, rate: int) -> Iterator[None]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy (in the `dev` extra)")
    # --gil: only samples holding the GIL, i.e. Python at work (not epoll or idle threads).
    argv = [pyspy, "record", "--pid", str(pid), "--format", "raw", "--function", "--gil"]
    argv += ["--rate", str(rate), "--output", str(raw)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # attached before the first request
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        _, err = proc.communicate(timeout=60)
        if not raw.exists():
            raise SystemExit(f"py-spy wrote no profile: {err.strip()}")


# --- the run ---------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"{go.strip().removeprefix('go version ')}"
    )


def default_pairs(names: int) -> int:
    return max(200, min(2000, 2_000_000 // names))


def row(names: int, c: int, label: str, r: dict[str, Any], base: dict[str, Any]) -> str:
    a, b = r["All"], base["All"]
    return (
        f"| {names} | {c} | {label} | {a['Pairs']} | {a['P50Ms']:.2f} | {a['P99Ms']:.2f} "
        f"| {r['PairsPerSec']:.0f} | {a['P50Ms'] / b['P50Ms']:.2f}x "
        f"| {r['PairsPerSec'] / base['PairsPerSec']:.2f}x | {a['FilterBytesMean'] / 1024:.1f} "
        f"| {a['DecodeMsMean']:.3f} |"
    )


def kind_rows(names: int, c: int, ours: dict[str, Any], noop: dict[str, Any]) -> list[str]:
    out = []
    for kind in KINDS:
        o, n = ours["Kinds"][kind], noop["Kinds"][kind]
        out.append(
            f"| {names} | {c} | {kind} | {o['P50Ms']:.2f} | {n['P50Ms']:.2f} "
            f"| {o['P50Ms'] / n['P50Ms']:.2f}x | {o['FilterBytesMean'] / 1024:.1f} "
            f"| {n['FilterBytesMean'] / 1024:.1f} | {o['DecodeMsMean']:.3f} "
            f"| {n['DecodeMsMean']:.3f} |"
        )
    return out


Results = dict[tuple[int, int], dict[str, dict[str, Any]]]


def measure_world(
    names: int, args: argparse.Namespace, binaries: dict[str, Path], tmp: Path
) -> tuple[Results, dict[str, Any], str]:
    """One world: both extenders serving, every concurrency side by side, memory, profile."""
    w = world(names, args.devices_per_node)
    state, plan_file = tmp / f"state-{names}.json", tmp / f"plan-{names}.json"
    state.write_text(json.dumps(w))
    plan_file.write_text(json.dumps(plan(w)))
    pairs = args.pairs or default_pairs(names)
    ours_port, noop_port = free_port(), free_port()
    urls = {"noop": f"http://127.0.0.1:{noop_port}", "ours": f"http://127.0.0.1:{ours_port}"}
    noop_argv = [str(binaries["noop"]), "-addr", f"127.0.0.1:{noop_port}"]
    results: Results = {}
    profile_md = ""
    labels: tuple[str, ...] = ("noop", "ours")
    with contextlib.ExitStack() as stack:
        stack.enter_context(serving(noop_argv, urls["noop"]))
        if args.before is not None:
            before_port = free_port()
            urls["before"] = f"http://127.0.0.1:{before_port}"
            before_argv = ours_argv(before_port, args.policy_file, state)
            stack.enter_context(serving(before_argv, urls["before"], tree=args.before))
            labels = ("noop", "before", "ours")
        ours_pid = stack.enter_context(
            serving(ours_argv(ours_port, args.policy_file, state), urls["ours"])
        )
        loaded = vm_kb(ours_pid)
        for c in args.concurrency:
            # Side by side: the no-op, (before,) then ours, at one size and concurrency.
            results[names, c] = {
                label: run_loadgen(
                    binaries["loadgen"],
                    urls[label],
                    plan_file,
                    pairs,
                    c,
                    protocol_only=label == "noop",
                )
                for label in labels
            }
            print(f"... {names} names, concurrency {c}: done", file=sys.stderr, flush=True)
        memory = {"devices": len(w["devices"]), "loaded": loaded, "after": vm_kb(ours_pid)}
        if args.profile and names == max(args.names):
            # A repeat of the largest, least concurrent run: the measured one stays unprofiled.
            c = min(args.concurrency)
            args.profile.mkdir(parents=True, exist_ok=True)
            raw = args.profile / f"extender-{names}-c{c}.folded.txt"
            with profiling(ours_pid, raw, args.profile_rate):
                t0 = time.monotonic()
                run_loadgen(binaries["loadgen"], urls["ours"], plan_file, pairs, c)
                seconds = time.monotonic() - t0
            table, samples = summarise_profile(raw)
            busy = samples / (args.profile_rate * seconds)
            profile_md = (
                f"Profile of cloud4iot, {names} names, concurrency {c}: "
                f"py-spy {args.profile_rate} Hz, `--function --gil` (samples holding the GIL): "
                f"{samples} samples in {seconds:.1f} s of load ({100 * busy:.0f}% of the time "
                f"running Python); folded "
                f"stacks: `{raw}`\n\n{table}\n"
            )
            (args.profile / "summary.md").write_text(profile_md)
    return results, memory, profile_md


def report(results: Results, memory: dict[int, dict[str, Any]], concurrency: list[int]) -> None:
    print(
        "| names | C | extender | pairs | p50 ms | p99 ms | pairs/s | p50 ratio | pairs/s ratio "
        "| filter answer KiB | client decode ms |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (names, c), r in results.items():
        print(row(names, c, "Go no-op", r["noop"], r["noop"]))
        if "before" in r:
            print(row(names, c, "cloud4iot before", r["before"], r["noop"]))
        print(row(names, c, "cloud4iot", r["ours"], r["noop"]))
    if any("before" in r for r in results.values()):
        print(
            "\nBefore/after, side by side (ours / before; below 1 is faster):\n\n"
            "| names | C | before p50 ms | after p50 ms | p50 after/before "
            "| before pairs/s | after pairs/s | pairs/s after/before |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (names, c), r in results.items():
            b, a = r["before"], r["ours"]
            print(
                f"| {names} | {c} | {b['All']['P50Ms']:.2f} | {a['All']['P50Ms']:.2f} "
                f"| {a['All']['P50Ms'] / b['All']['P50Ms']:.2f}x | {b['PairsPerSec']:.0f} "
                f"| {a['PairsPerSec']:.0f} | {a['PairsPerSec'] / b['PairsPerSec']:.2f}x |"
            )
    print(
        "\nPer pod kind (mean filter answer and client decode per filter answer):\n\n"
        "| names | C | pod | ours p50 ms | no-op p50 ms | p50 ratio | ours KiB | no-op KiB "
        "| ours decode ms | no-op decode ms |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (names, c), r in results.items():
        if c == min(concurrency):
            print("\n".join(kind_rows(names, c, r["ours"], r["noop"])))
    print("\nExtender memory (/proc/PID/status), world loaded from its state file:\n")
    print("| nodes | Devices | VmRSS at ready MB | VmRSS after the runs MB | VmHWM MB |")
    print("|---:|---:|---:|---:|---:|")
    for names, m in memory.items():
        print(
            f"| {names} | {m['devices']} | {m['loaded']['VmRSS'] / 1024:.0f} "
            f"| {m['after']['VmRSS'] / 1024:.0f} | {m['after']['VmHWM'] / 1024:.0f} |"
        )


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--names", type=int, nargs="+", default=[500, 5000], help="world sizes")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--pairs", type=int, help="measured pairs per run (default: by size)")
    p.add_argument("--devices-per-node", type=int, default=2)
    p.add_argument("--profile", type=Path, help="write a py-spy profile and its summary here")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also time the extender of this source tree (another commit), side by side",
    )
    args = p.parse_args(argv)
    if args.before is not None and not (args.before / "extender" / "__main__.py").is_file():
        p.error(f"--before {args.before}: not a source tree with extender/__main__.py")
    started = time.monotonic()
    binaries = build_go()
    command = " ".join([prog or "python -m bench.extender_pair", *(argv or sys.argv[1:])])
    print(f"Command: `{command}`\n\nMachine: {machine()}\n", flush=True)
    results: Results = {}
    memory: dict[int, dict[str, Any]] = {}
    profile_md = ""
    with tempfile.TemporaryDirectory(prefix="extender-pair-") as tmp:
        args.policy_file = bench_policy(Path(tmp) / "policy.yaml")
        for names in args.names:
            r, memory[names], md = measure_world(names, args, binaries, Path(tmp))
            results.update(r)
            profile_md = profile_md or md
    report(results, memory, args.concurrency)
    if profile_md:
        print(f"\n{profile_md}")
    print(f"\nWall time of the whole bench: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
