"""`python -m devcluster demo --standalone`: the extender with the default policy
answering kube-scheduler.

Starts the real service (`cloud4iot-extender`, standalone: no cluster, no
Prometheus) on a free loopback port and sends it the requests kube-scheduler
would send for the paper's functions, printing what it answers and why.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from devcluster.processes import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "simulate"


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read())


def _scenarios() -> list[tuple[str, dict[str, Any]]]:
    pods = {
        p: yaml.safe_load((EXAMPLES / f"pod-{p}.yaml").read_text())
        for p in ("mhealth", "engine-intensive", "engine-normal")
    }
    plain = {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {}}
    return [
        ("Open mHealth consolidator (confidential, needs its wearable)", pods["mhealth"]),
        ("Engine diagnostic, intensive monitoring", pods["engine-intensive"]),
        ("Engine diagnostic, normal monitoring", pods["engine-normal"]),
        ("A pod that names no function class", plain),
    ]


def run_demo(args: argparse.Namespace) -> int:
    state = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    nodes = {"metadata": {}, "items": state["nodes"]}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "extender",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        str(ROOT / "policies" / "default.yaml"),
        "--log-level",
        "WARNING",
    ]
    print(f"$ {' '.join(cmd[2:])}")
    proc = subprocess.Popen(cmd)
    try:
        wait_http_ok(url + "/readyz", 30, pid=proc.pid)
        print(
            f"extender ready at {url}; nodes: "
            + ", ".join(n["metadata"]["name"] for n in state["nodes"])
        )
        print(
            "(standalone: no cluster, so no device sightings and no load data;"
            " the policy fails open)\n"
        )
        for title, pod in _scenarios():
            args_body = {"Pod": pod, "Nodes": nodes, "NodeNames": None}
            result = _post(url + "/filter", args_body)
            kept = [n["metadata"]["name"] for n in result["Nodes"]["items"]]
            scores = (
                _post(
                    url + "/prioritize",
                    args_body | {"Nodes": {"metadata": {}, "items": result["Nodes"]["items"]}},
                )
                if kept
                else []
            )
            print(f"== {title}")
            for host in sorted(scores, key=lambda s: -s["Score"]):
                print(f"   keep   {host['Host']:<12} score {host['Score']}")
            for kind, key in (("retry", "FailedNodes"), ("never", "FailedAndUnresolvableNodes")):
                for node, why in sorted(result[key].items()):
                    print(f"   {kind:<6} {node:<12} {why}")
            print()
        print(f"Try it: curl -s {url}/metrics | grep cloud4iot_extender_requests_total")
        if args.keep:
            print("Extender left running (Ctrl-C to stop).")
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
    return 0
