"""The monitoring that ships (manifests/components/monitoring): the PrometheusRule passes
`promtool check rules` and its unit tests (alerts_test.yaml), names only metrics our
processes export, each alert has a runbook entry, the dashboard queries our metrics,
and in a real Prometheus scraping a real extender and gateway monitor, killing the
extender's Prometheus and stopping the gateway monitor make two alerts fire."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import prometheus
from devcluster.processes import (
    MARKER_ENV,
    free_port,
    marked_processes,
    start_detached,
    stop_processes,
    wait_http_ok,
)
from extender.metrics import Metrics
from gateway_monitor.metrics import Metrics as GatewayMetrics
from rebalancer.metrics import RebalancerMetrics
from tests.cluster_world import until

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "components" / "monitoring"
RUNBOOK = ROOT / "docs" / "operations.md"
BIN = Path(sys.executable).parent
# Series other components export that the rules read on purpose.
FOREIGN = {"up", "apiserver_admission_webhook_fail_open_count"}


def rule_spec() -> dict[str, Any]:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    spec: dict[str, Any] = doc["spec"]
    return spec


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_spec()["groups"] for r in g["rules"] if "alert" in r]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: make system-deps (Debian package prometheus)"
    return path


def test_the_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    shutil.copy(Path(__file__).parent / "alerts_test.yaml", tmp_path)
    check = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in check.stdout
    unit = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    # Every alert is exercised by at least one unit test.
    tested = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts_test.yaml").read_text()))
    assert tested == {a["alert"] for a in alerts()}


def exported() -> set[str]:
    """Every series name our three processes export (a counter's _total, a histogram's
    _bucket, ...), labelled metrics with no child yet included."""
    names: set[str] = set()
    for metrics in (Metrics(), RebalancerMetrics(), GatewayMetrics()):
        names |= set(metrics.registry._names_to_collectors)
    return names


def series_in(expr: str) -> set[str]:
    names = set(re.findall(r"\b(cloud4iot_\w+|up|apiserver_\w+)\b", expr))
    return names


def test_rules_and_dashboard_read_only_series_that_exist() -> None:
    ours = exported()
    for a in alerts():
        missing = series_in(a["expr"]) - ours - FOREIGN
        assert not missing, (a["alert"], missing)
    dash = json.loads((MONITORING / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        assert not series_in(expr) - ours, expr
    # What the issue asks the dashboard to show.
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("placements", "moves", "latency", "freshness"):
        assert topic in titles


def test_each_alert_has_a_runbook_entry() -> None:
    text = RUNBOOK.read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#### (\w+)", text, re.M)}
    for a in alerts():
        url = a["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{a['alert'].lower()}"
        assert a["alert"].lower() in headings, a["alert"]
        assert a["labels"]["severity"] in {"critical", "warning", "info"}


def test_the_overlays_ship_it() -> None:
    for overlay in ("kube-prometheus", "kube-prometheus-stack"):
        k = yaml.safe_load(
            (ROOT / "manifests" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        assert "../../components/monitoring" in k["components"], overlay


# --- a real Prometheus evaluating the rules as shipped, `for` shortened ---------------


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def firing(url: str) -> set[str]:
    doc = get(url + "/api/v1/alerts")
    return {a["labels"]["alertname"] for a in doc["data"]["alerts"] if a["state"] == "firing"}


@pytest.fixture
def watched(prom_stack: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An extender reading load from `prom_stack`'s Prometheus, a gateway monitor on a
    replayed radio, and a second Prometheus scraping both and evaluating our rules."""
    env = {**os.environ, MARKER_ENV: str(tmp_path)}
    ext_port, gw_port, mon_port = free_port(), free_port(), free_port()
    ext = start_detached(
        [
            str(BIN / "cloud4iot-extender"),
            "--host",
            "127.0.0.1",
            "--port",
            str(ext_port),
            "--prometheus-url",
            prom_stack.prometheus_url,
        ],
        tmp_path / "extender.log",
        env,
    )
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"t": i * 0.5, "address": "AA:BB:CC:00:00:01", "rssi": -60})
            for i in range(7200)
        )
        + "\n"
    )
    gw = start_detached(
        [
            str(BIN / "cloud4iot-gateway-monitor"),
            "--dry-run",
            "--node",
            "gw-home",
            "--device",
            "patient=AA:BB:CC:00:00:01",
            "--replay",
            str(trace),
            "--host",
            "127.0.0.1",
            "--port",
            str(gw_port),
        ],
        tmp_path / "gateway.log",
        env,
    )
    spec = rule_spec()
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "3s"  # minutes in production; the expressions are as shipped
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    config = prometheus.write_config(
        tmp_path / "prometheus.yml",
        {
            "cloud4iot-system/cloud4iot-extender": [f"127.0.0.1:{ext_port}"],
            "cloud4iot-gateway/cloud4iot-gateway-monitor": [f"127.0.0.1:{gw_port}"],
        },
        interval_s=1,
    )
    doc = yaml.safe_load(config.read_text())
    doc["rule_files"] = [str(tmp_path / "rules.yaml")]
    config.write_text(yaml.safe_dump(doc))
    mon = start_detached(
        prometheus.prometheus_argv(config, tmp_path / "data", mon_port), tmp_path / "mon.log", env
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{ext_port}/healthz", 30, pid=ext)
        wait_http_ok(
            f"http://127.0.0.1:{gw_port}/healthz", 30, pid=gw, log=tmp_path / "gateway.log"
        )
        wait_http_ok(prometheus.ready_url(mon_port), 60, pid=mon, log=tmp_path / "mon.log")
        yield {"url": f"http://127.0.0.1:{mon_port}", "gateway": gw, "prom": prom_stack}
    finally:
        stop_processes(marked_processes(tmp_path))


@pytest.mark.prometheus
def test_rules_load_and_two_alerts_fire_on_real_faults(watched: dict[str, Any]) -> None:
    url = watched["url"]
    groups = get(url + "/api/v1/rules")["data"]["groups"]
    assert {r["name"] for g in groups for r in g["rules"]} == {a["alert"] for a in alerts()}

    def healthy() -> bool:
        q = prometheus.query(url, 'min(cloud4iot_extender_source_up{source="prometheus"})')
        up = prometheus.query(url, 'min(up{job=~".*cloud4iot-gateway-monitor"})')
        return q.get("") == 1.0 and up.get("") == 1.0

    until(
        "the extender reading load and the gateway monitor scraped",
        healthy,
        60,
        interval=0.5,
        tolerate=(),
    )
    time.sleep(5)  # longer than the shortened `for`: nothing fires while all is well
    groups = get(url + "/api/v1/rules")["data"]["groups"]
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}  # evaluated, no error
    assert not firing(url) & {"Cloud4IoTLoadDataStale", "Cloud4IoTGatewayMonitorDown"}

    os.kill(watched["prom"].prometheus_pid, signal.SIGKILL)  # the extender's load source
    os.kill(watched["gateway"], signal.SIGKILL)
    fired = until(
        "both alerts firing",
        lambda: (
            (f := firing(url)) >= {"Cloud4IoTLoadDataStale", "Cloud4IoTGatewayMonitorDown"} and f
        ),
        60,
        interval=0.5,
        tolerate=(),
    )
    # The extender itself still answers: its alert stays quiet.
    assert "Cloud4IoTExtenderDown" not in fired
