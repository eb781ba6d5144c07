"""`--log-level` and `--log-format text|json` on every command: a bad value is a usage
error (exit 2, one line), never a traceback; json lines parse, with the decision keys."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from cloud4iot.logs import JsonFormatter, TextFormatter
from devcluster.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples" / "simulate"
COMMANDS = [
    ["cloud4iot-extender"],
    ["cloud4iot-rebalancer", "--kubeconfig", "/nonexistent"],
    ["cloud4iot-gateway-monitor"],
    ["cloud4iot"],
    ["cloud4iot", "replay", "x.csv"],  # its own parser
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (["--log-level", "verbose"], "invalid level 'verbose'"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_a_bad_log_flag_is_a_usage_error_not_a_traceback(command, flag, expected):
    done = subprocess.run(
        [
            str(BIN / command[0]),
            *command[1:],
            *flag,
            *(["check-policy", "x"] if command == ["cloud4iot"] else []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_the_level_is_any_case_and_the_kubernetes_spelling_is_accepted():
    done = subprocess.run(
        [
            str(BIN / "cloud4iot"),
            "--log-level",
            "DEBUG",
            "--logging-format",
            "json",
            "check-policy",
            str(ROOT / "policies" / "default.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "extender.webhook", logging.DEBUG, "f.py", 1, "filter %s", ("a/b",), None
    )
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_structured_keys_and_the_traceback():
    doc = orjson.loads(
        JsonFormatter().format(record(pod="a/b", node="gw-1", reason="best score 7"))
    )
    assert doc["msg"] == "filter a/b"
    assert doc["level"] == "debug"
    assert doc["logger"] == "extender.webhook"
    assert (doc["pod"], doc["node"], doc["reason"]) == ("a/b", "gw-1", "best score 7")
    assert isinstance(doc["ts"], float)
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record()
        rec.exc_info = sys.exc_info()
    doc = orjson.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in doc["err"]


def test_text_lines_carry_the_same_keys():
    line = TextFormatter().format(record(pod="a/b", node=None, reason="every node refused"))
    assert line.endswith('filter a/b pod=a/b node=null reason="every node refused"')


def test_the_extender_logs_one_json_line_per_decision_at_debug(tmp_path):
    port = free_port()
    log = tmp_path / "extender.log"
    argv = [
        str(BIN / "cloud4iot-extender"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stderr=out)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            nodes = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())["nodes"]
            pod = yaml.safe_load((EXAMPLES / "pod-mhealth.yaml").read_text())
            body = orjson.dumps({"Pod": pod, "Nodes": {"items": nodes}})
            req = urllib.request.Request(url + "/filter", data=body, method="POST")
            urllib.request.urlopen(req, timeout=5).close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    lines = [orjson.loads(raw) for raw in log.read_text().splitlines() if raw.strip()]
    decisions = [d for d in lines if d["msg"].startswith("filter ")]
    assert len(decisions) == 1, lines
    d = decisions[0]
    meta = pod["metadata"]
    assert d["pod"] == f"{meta.get('namespace', 'default')}/{meta['name']}"
    assert d["device"] == meta["annotations"]["cloud4iot.io/device"]
    # No cluster: the wearable is unknown, so no gateway; edge only, never cloud.
    assert d["node"] == "edge-1"
    assert d["reason"].startswith("best score ")
    assert d["code"]["tier_not_allowed"] == 2
