"""How long `up` lets Prometheus fill before it calls the cluster up."""

from pathlib import Path

from devcluster.cluster import MAX_RATE_WINDOW_S, Devcluster
from devcluster.prometheus import RATE_WINDOW_S


def cluster_with_policy(tmp_path: Path, queries: str) -> Devcluster:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"spec:\n  prometheus:\n    queries:\n{queries}")
    return Devcluster("unit", state_root=tmp_path, policy=policy)


def test_waits_for_the_longest_range_in_the_policy(tmp_path: Path) -> None:
    cluster = cluster_with_policy(
        tmp_path,
        "      cpu: 1 - avg by (node) (rate(node_cpu_seconds_total[30s]))\n"
        "      other: avg_over_time(x[1m])\n",
    )
    assert cluster._rate_window_s() == 61


def test_without_ranges_or_extender_the_simulator_window_is_enough(tmp_path: Path) -> None:
    cluster = cluster_with_policy(tmp_path, "      memory: 1 - a / b\n")
    assert cluster._rate_window_s() == RATE_WINDOW_S + 1
    assert Devcluster("unit", with_extender=False)._rate_window_s() == RATE_WINDOW_S + 1


def test_a_very_long_window_is_capped(tmp_path: Path) -> None:
    cluster = cluster_with_policy(tmp_path, "      cpu: rate(x[10m])\n")
    assert cluster._rate_window_s() == MAX_RATE_WINDOW_S


def test_the_window_holds_two_scrapes_at_a_long_interval(tmp_path: Path) -> None:
    cluster = Devcluster("unit", with_extender=False, scrape_interval_s=15)
    assert cluster._rate_window_s() == 31
