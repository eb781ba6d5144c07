"""Where the extender's memory goes with extender-pair's largest world, step by step.

    python -m devcluster bench extender-memory [--nodes 5000] [--devices-per-node 2] [--pods 450]

Each step runs in a fresh interpreter and reports VmRSS: the imports alone; the
Snapshot built from the state document decoded as JSON (what the reflectors hold,
without the YAML loader); the same through the state file's YAML loader (what
`--state` does); and the filter -> prioritize VerdictCache holding `--pods` pods'
verdicts for every node (450 = 30 s of TTL at 15 pairs/s, as in extender-pair).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("imports", "snapshot-json", "snapshot-yaml", "verdict-cache")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def step(name: str, state: Path, pods: int) -> float:
    """Run in a fresh interpreter: the RSS after `name`, everything transient collected."""
    import orjson

    from cloud4iot.policy.loader import load_policy
    from extender.app import create_app  # noqa: F401  (what the extender imports)
    from extender.scoring import PodFacts, TableCache, evaluate
    from extender.state.statefile import load_state, snapshot_from_state
    from extender.verdict_cache import VerdictCache

    if name == "imports":
        return rss_mb()
    if name == "snapshot-yaml":
        snapshot, now = load_state(state)
    else:
        snapshot, now = snapshot_from_state(orjson.loads(state.read_bytes()))
    gc.collect()
    if name == "verdict-cache":
        policy = load_policy(ROOT / "policies" / "default.yaml")
        cache, names, tables = VerdictCache(), sorted(snapshot.nodes), TableCache()
        for i in range(pods):
            meta = {"uid": f"u{i}", "annotations": {"cloud4iot.io/function": "anonymiser"}}
            pod = {"metadata": meta}
            facts = PodFacts.from_pod(pod)
            cache.put(
                pod,
                snapshot,
                policy,
                evaluate(
                    facts, snapshot, policy.policy, now, names=names, tables=tables
                ).verdicts(),
            )
        gc.collect()
    return rss_mb()


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--devices-per-node", type=int, default=2)
    p.add_argument("--pods", type=int, default=450)
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        print(step(args.step, args.state, args.pods))
        return
    from bench.extender_pair import world

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.json"
        state.write_text(json.dumps(world(args.nodes, args.devices_per_node)))
        print(
            f"| step ({args.nodes} nodes, {args.nodes * args.devices_per_node} Devices) | VmRSS MB |"
        )
        print("|---|---:|")
        for name in STEPS:
            argv_ = [sys.executable, "-m", "bench.extender_memory", "--step", name]
            argv_ += ["--state", str(state), "--pods", str(args.pods)]
            out = subprocess.run(argv_, cwd=ROOT, capture_output=True, text=True, check=True)
            label = (
                f"{name} ({args.pods} pods x {args.nodes} verdicts)"
                if name == "verdict-cache"
                else name
            )
            print(f"| {label} | {float(out.stdout):.0f} |", flush=True)


if __name__ == "__main__":
    main()
