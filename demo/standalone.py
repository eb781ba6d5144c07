"""`cloud4iot demo`: the extender with the default policy answering kube-scheduler.

Starts the real service (`cloud4iot-extender`, standalone: no cluster, no
Prometheus) on a free loopback port and sends it the requests kube-scheduler
would send for the paper's functions, printing what it answers and why.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "simulate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read())


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"extender exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError("extender did not become ready")


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
    port = _free_port()
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
        _wait_ready(url, proc)
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
