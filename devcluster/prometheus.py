"""Prometheus from the Debian package, run with our own config on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

# Scrape every second so a load change shows within seconds; queries should use
# rate windows of at least 4-5 scrapes, e.g. rate(...[5s]). Thousands of nodes
# need a longer interval (Devcluster(scrape_interval_s=...); see BENCHMARKS.md).
SCRAPE_INTERVAL_S = 1.0
# The rate window the devcluster waits to have filled before it calls itself up.
RATE_WINDOW_S = 6


class PrometheusMissingError(RuntimeError):
    pass


def find_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusMissingError(
            "prometheus not found on PATH; install it with `make system-deps` "
            "(Debian package prometheus)"
        )
    return binary


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def write_config(
    path: Path, jobs: dict[str, list[str]], interval_s: float = SCRAPE_INTERVAL_S
) -> Path:
    """A config scraping each job's host:port targets every `interval_s`."""
    interval = _duration(interval_s)
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_argv(config: Path, data_dir: Path, port: int) -> list[str]:
    return [
        find_prometheus(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=2h",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def ready_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/-/ready"


def query(base_url: str, promql: str, timeout_s: float = 5.0) -> dict[str, float]:
    """An instant query; the result by the `node` label (or "" without one)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body = json.load(resp)
    return {r["metric"].get("node", ""): float(r["value"][1]) for r in body["data"]["result"]}


def samples_in(seconds: float, interval_s: float = SCRAPE_INTERVAL_S) -> int:
    """How many scrapes a window of `seconds` holds once filled (a rate needs two)."""
    return max(2, int(seconds / interval_s))


def wait_for_history(
    base_url: str,
    nodes: list[str],
    seconds: int,
    timeout_s: float = 60,
    interval_s: float = SCRAPE_INTERVAL_S,
) -> None:
    """Wait until every node has `seconds` of samples scraped every `interval_s`.

    Until then a rate over that window only sees part of it and comes out too
    low, so idle nodes would look loaded to whoever queries first.
    """
    promql = f"count_over_time(node_memory_MemTotal_bytes[{seconds}s])"
    wanted = samples_in(seconds, interval_s)
    deadline = time.monotonic() + timeout_s
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            counts = query(base_url, promql, timeout_s=30)
            if all(counts.get(n, 0) >= wanted for n in nodes):
                return
        time.sleep(0.5)
    missing = {n: counts.get(n, 0) for n in nodes if counts.get(n, 0) < wanted}
    shown = dict(list(missing.items())[:10])
    raise TimeoutError(
        f"Prometheus has not scraped {seconds}s of load for {len(missing)} node(s), e.g. {shown}"
    )
