"""`cloud4iot-extender` as a process: starts with no cluster, refuses a bad policy."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from devcluster.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "simulate"


def post(url: str, body: object) -> object:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read())


@pytest.fixture
def extender(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "extender", "--host", "127.0.0.1", "--port", str(port)]
    argv += getattr(request, "param", [])
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "extender did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_standalone_answers_full_node_requests(extender: str) -> None:
    nodes = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())["nodes"]
    pod = yaml.safe_load((EXAMPLES / "pod-mhealth.yaml").read_text())
    result = post(extender + "/filter", {"Pod": pod, "Nodes": {"items": nodes}})
    assert isinstance(result, dict)
    # No cluster: the wearable is unknown, so no gateway; edge only, never cloud.
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["edge-1"]
    assert set(result["FailedAndUnresolvableNodes"]) == {"cloud-1", "cloud-2"}


@pytest.mark.parametrize("extender", [["--state", str(EXAMPLES / "cluster.yaml")]], indirect=True)
def test_state_file_serves_node_names_requests(extender: str) -> None:
    pod = yaml.safe_load((EXAMPLES / "pod-mhealth.yaml").read_text())
    names = ["gw-home", "gw-hospital", "edge-1", "cloud-1"]
    result = post(extender + "/filter", {"Pod": pod, "NodeNames": names})
    assert isinstance(result, dict)
    assert result["NodeNames"] == ["gw-hospital"]


def test_bad_policy_exits_with_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        (ROOT / "policies" / "default.yaml")
        .read_text()
        .replace("tiers: [gateway, edge]", "tiers: [gateway, fog]", 1)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "extender", "--policy", str(bad), "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{bad}:" in proc.stderr
    assert "spec.classes.mhealth-consolidator.tiers[1]" in proc.stderr
