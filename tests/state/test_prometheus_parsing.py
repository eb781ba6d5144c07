"""Turning Prometheus instant-vector results into load samples."""

from __future__ import annotations

from extender.state.prometheus import merge_samples, missing_metrics, parse_vector


def test_values_are_strings_and_labelled_by_the_policy_label():
    result = [
        {"metric": {"node": "gw1", "instance": "10.0.0.1:9100"}, "value": [1.0, "0.25"]},
        {"metric": {"instance": "gw2"}, "value": [1.0, "0.5"]},  # no `node` label
        {"metric": {"node": "edge1"}, "value": [1.0, "NaN"]},
        {"metric": {"node": "edge2"}, "value": [1.0, "+Inf"]},
        {"metric": {"node": "cloud1"}, "value": [1.0, "1.7"]},  # clamped
        {"metric": {"node": "cloud2"}, "value": "garbage"},
    ]
    assert parse_vector(result, "node") == {"gw1": 0.25, "cloud1": 1.0}
    assert parse_vector(result, "instance") == {"10.0.0.1:9100": 0.25, "gw2": 0.5}


def test_samples_merge_cpu_and_memory_and_gaps_are_named():
    samples = merge_samples({"gw1": 0.5}, {"gw1": 0.2, "edge1": 0.9}, at=100.0)
    assert samples["gw1"].cpu == 0.5
    assert samples["gw1"].peak == 0.5
    assert samples["edge1"].cpu is None
    assert samples["edge1"].peak == 0.9
    assert missing_metrics(["gw1", "edge1", "cloud1", "cloud2"], samples) == ["cloud1", "cloud2"]
