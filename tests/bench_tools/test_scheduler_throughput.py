"""The scheduler-throughput bench's pure parts: its world, its pod mix, its numbers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from bench import sched_workload as w
from bench.scheduler_throughput import bench_policy, default_pods
from cloud4iot.policy.loader import load_policy
from devcluster.topology import load_topology


def test_topology_mixes_tiers_ten_thirty_sixty_and_loads_as_a_devcluster_file(
    tmp_path: Path,
) -> None:
    entries = w.topology(500)
    assert Counter(e["tier"] for e in entries) == {"gateway": 50, "edge": 150, "cloud": 300}
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump({"nodes": entries}))
    nodes = load_topology(path)  # the devcluster's own parser accepts it
    assert len({n.name for n in nodes}) == 500
    assert {n.arch for n in nodes if n.tier == "gateway"} == {"arm64"}
    # Few CPUs per node: the load simulator exports a series per CPU.
    assert max(n.cpu_cores for n in nodes) <= 4


def test_devices_spread_over_gateways_each_heard_nearest_first() -> None:
    gws = ["gw-a", "gw-b", "gw-c"]
    plans = w.devices(7, gws)
    assert [p.heard_by[0][0] for p in plans] == [
        "gw-a",
        "gw-b",
        "gw-c",
        "gw-a",
        "gw-b",
        "gw-c",
        "gw-a",
    ]
    assert all(p.heard_by[0][1] > p.heard_by[1][1] for p in plans)
    assert len({p.address for p in plans}) == len({p.name for p in plans}) == 7
    status = plans[0].status("2026-11-30T18:00:00Z")["status"]["sightings"]
    assert status == [
        {"node": "gw-a", "rssi": w.NEAR_RSSI, "lastSeen": "2026-11-30T18:00:00Z"},
        {"node": "gw-b", "rssi": w.FAR_RSSI, "lastSeen": "2026-11-30T18:00:00Z"},
    ]
    # One gateway: the device is heard by it alone.
    assert w.devices(1, ["gw-a"])[0].heard_by == (("gw-a", w.NEAR_RSSI),)
    with pytest.raises(ValueError, match="no gateways"):
        w.devices(1, [])


def test_device_addresses_match_the_crd_pattern() -> None:
    import re

    crd = yaml.safe_load(Path("manifests/crd/devices.cloud4iot.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pattern = re.compile(spec["properties"]["address"]["pattern"])
    assert all(pattern.match(p.address) for p in w.devices(70000, ["gw"])[::997])


def test_pod_mix_is_a_quarter_of_each_kind_interleaved_with_its_own_devices() -> None:
    names = [f"d{i}" for i in range(w.device_pods(1000))]
    pods = w.pods(1000, names)
    kinds = Counter(p["metadata"]["labels"]["bench-kind"] for p in pods)
    assert kinds == {
        "confidential": 250,
        "diagnostic-intensive": 250,
        "anonymiser": 250,
        "unmanaged": 250,
    }
    # Interleaved: every stretch of four holds each kind once.
    assert {p["metadata"]["labels"]["bench-kind"] for p in pods[400:404]} == set(kinds)
    assert all(p["spec"]["schedulerName"] == "cloud4iot-scheduler" for p in pods)
    ann = [p["metadata"]["annotations"] for p in pods]
    assert ann[0] == {"cloud4iot.io/function": "mhealth-consolidator", "cloud4iot.io/device": "d0"}
    assert ann[1] == {
        "cloud4iot.io/function": "engine-diagnostic",
        "cloud4iot.io/mode": "intensive",
        "cloud4iot.io/device": "d1",
    }
    assert ann[2] == {"cloud4iot.io/function": "anonymiser"}
    assert ann[3] == {}
    used = [a["cloud4iot.io/device"] for a in ann if "cloud4iot.io/device" in a]
    assert sorted(used) == sorted(names)  # each device serves exactly one pod
    assert len({p["metadata"]["name"] for p in pods}) == 1000


def test_pod_mix_needs_enough_devices_and_counts_partial_cycles() -> None:
    assert [w.device_pods(n) for n in (0, 1, 2, 3, 4, 5)] == [0, 1, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="need 3 devices"):
        w.pods(5, ["a", "b"])


def test_pod_classes_exist_in_the_default_policy() -> None:
    policy = load_policy(Path("policies/default.yaml")).policy
    classes = {k[1] for k in w.KINDS if k[1] is not None}
    assert classes <= set(policy.spec.classes)


def test_bench_policy_keeps_sightings_for_the_whole_run(tmp_path: Path) -> None:
    policy = load_policy(bench_policy(tmp_path / "p.yaml")).policy
    assert policy.spec.stale_data.sighting_max_age == 3600
    assert policy.spec.classes == load_policy(Path("policies/default.yaml")).policy.spec.classes


def test_default_pod_counts_follow_the_scale_issue() -> None:
    assert [default_pods(n) for n in (100, 500, 2500, 5000, 10000)] == [
        1000,
        1000,
        1000,
        2000,
        2000,
    ]


SCHED_BEFORE = """\
# TYPE scheduler_scheduling_attempt_duration_seconds histogram
scheduler_scheduling_attempt_duration_seconds_bucket{profile="cloud4iot-scheduler",result="scheduled",le="+Inf"} 10
scheduler_scheduling_attempt_duration_seconds_sum{profile="cloud4iot-scheduler",result="scheduled"} 0.5
scheduler_scheduling_attempt_duration_seconds_count{profile="cloud4iot-scheduler",result="scheduled"} 10
scheduler_scheduling_attempt_duration_seconds_sum{profile="default-scheduler",result="scheduled"} 9
scheduler_scheduling_attempt_duration_seconds_count{profile="default-scheduler",result="scheduled"} 9
# TYPE rest_client_rate_limiter_duration_seconds histogram
rest_client_rate_limiter_duration_seconds_sum{host="127.0.0.1:1",verb="POST"} 0.1
rest_client_rate_limiter_duration_seconds_count{host="127.0.0.1:1",verb="POST"} 10
"""
SCHED_AFTER = """\
# TYPE scheduler_scheduling_attempt_duration_seconds histogram
scheduler_scheduling_attempt_duration_seconds_sum{profile="cloud4iot-scheduler",result="scheduled"} 20.5
scheduler_scheduling_attempt_duration_seconds_count{profile="cloud4iot-scheduler",result="scheduled"} 1010
scheduler_scheduling_attempt_duration_seconds_sum{profile="cloud4iot-scheduler",result="unschedulable"} 1
scheduler_scheduling_attempt_duration_seconds_count{profile="cloud4iot-scheduler",result="unschedulable"} 2
scheduler_scheduling_attempt_duration_seconds_sum{profile="default-scheduler",result="scheduled"} 9
scheduler_scheduling_attempt_duration_seconds_count{profile="default-scheduler",result="scheduled"} 9
# TYPE rest_client_rate_limiter_duration_seconds histogram
rest_client_rate_limiter_duration_seconds_sum{host="127.0.0.1:1",verb="POST"} 2.1
rest_client_rate_limiter_duration_seconds_count{host="127.0.0.1:1",verb="POST"} 2010
"""


def test_histograms_are_differenced_per_label_set() -> None:
    before, after = w.parse_samples(SCHED_BEFORE), w.parse_samples(SCHED_AFTER)
    name = "scheduler_scheduling_attempt_duration_seconds"
    ours = w.histo(before, after, name, profile="cloud4iot-scheduler")
    assert ours == w.Histo(seconds=21.0, count=1002)
    assert w.histo(before, after, name, profile="default-scheduler") == w.Histo(0.0, 0.0)
    assert w.label_values(after, f"{name}_count", "result") == ["scheduled", "unschedulable"]
    limiter = w.histo(before, after, "rest_client_rate_limiter_duration_seconds", verb="POST")
    assert limiter.mean_ms() == pytest.approx(1.0)
    assert limiter.per_pod_ms(1000) == pytest.approx(2.0)
    assert w.Histo(0.0, 0.0).mean_ms() is None


def run(extender: bool, rate: float, repeat: int = 1) -> w.Run:
    r = w.Run(500, 1000, extender, repeat, create_s=2.0, total_s=1000 / rate, bound=1000)
    r.attempt = w.Histo(seconds=9.0, count=1000)
    r.algorithm = w.Histo(seconds=5.0 if extender else 2.0, count=1000)
    r.extension_points = {
        "Filter": w.Histo(seconds=1.0, count=1000),
        "Score": w.Histo(seconds=0.5, count=1000),
        "Bind": w.Histo(seconds=30.0, count=1000),  # async: not part of the algorithm
    }
    if extender:
        r.filter = w.Histo(seconds=3.0, count=1000)
        r.prioritize = w.Histo(seconds=1.0, count=1000)
    r.cpu_s = {"kube-scheduler": 1.0, "extender": 2.0} if extender else {"kube-scheduler": 1.0}
    return r


def test_summary_reports_medians_the_ratio_and_handler_time() -> None:
    runs = [run(True, 100), run(False, 200), run(False, 300, 2), run(True, 120, 2)]
    table = w.summary_table(runs)
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "500"
    assert cells[2] == "2 + 2"
    assert cells[3] == "110.0 (100.0-120.0)"
    assert cells[4] == "250.0 (200.0-300.0)"
    assert cells[5] == "0.44"
    assert cells[6] == "4.0"  # (3 s filter + 1 s prioritize) / 1,000 pods
    assert cells[7] == "5.0 / 2.0"  # the scheduling algorithm, ms per pod


def test_runs_split_the_algorithm_into_in_tree_plugins_and_extender_calls() -> None:
    ours = run(True, 100)
    assert w.algorithm_ms_per_pod(ours) == pytest.approx(5.0)
    assert w.in_tree_ms_per_pod(ours) == pytest.approx(1.5)  # Filter + Score, not Bind
    assert w.extender_calls_ms_per_pod(ours) == pytest.approx(3.5)
    row = [c.strip() for c in w.runs_table([ours]).splitlines()[2].strip("|").split("|")]
    assert row[6] == "100.0"  # pods/s
    assert row[7:10] == ["5.0", "1.5", "3.5"]
    assert row[10] == "3.0 / 1.0"  # our filter / prioritize, ms per call
    assert row[11] == "50"  # 5 s of algorithm in a 10 s run
    ours.algorithm = None
    assert w.extender_calls_ms_per_pod(ours) is None


def test_run_tables_have_a_row_per_run_and_show_missing_values() -> None:
    runs = [run(True, 100), run(False, 200)]
    rows = w.runs_table(runs).splitlines()[2:]
    assert len(rows) == 2
    assert "| no extender |" in rows[1]
    assert "| - |" in rows[1]
    cpu = w.cpu_table(runs).splitlines()
    assert "extender" in cpu[0]
    assert "kube-scheduler" in cpu[0]
    assert "2.0 (20%)" in cpu[2]  # 2 s of CPU over a 10 s run
    assert cpu[3].count("| - |") == 1


def test_cpu_ticks_reads_utime_and_stime_even_with_spaces_in_the_name() -> None:
    stat = "42 (kube sched) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 12 0"
    assert w.cpu_ticks(stat) == 280


def test_report_round_trips_through_the_json_file() -> None:
    import json
    from dataclasses import asdict

    runs = [run(True, 100), run(False, 250)]
    runs[0].limiter = {"POST": w.Histo(0.002, 2000)}
    runs[0].attempts_by_result = {"scheduled": 1000}
    runs[0].notes = ["devcluster up in 40s"]
    again = w.runs_from_json(json.loads(json.dumps([asdict(r) for r in runs])))
    assert again == runs
    text = w.report(again, "# header")
    assert text.startswith("# header\n")
    assert "| 500 | 1000 | 1 + 1 | 100.0 (1 run) | 250.0 (1 run) | 0.40 |" in text
    assert "Filter 1.00, Score 0.50" in text
    assert "attempts: scheduled 1000" in text
    assert "run 1: devcluster up in 40s" in text


def test_machine_busy_ticks_leave_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n"
    assert w.machine_busy_ticks(stat) == 160


def test_cpu_table_shows_the_whole_machine_apart_from_the_cluster() -> None:
    r = run(True, 100)
    r.cpu_s[w.MACHINE] = 15.0
    head, _, row = w.cpu_table([r]).splitlines()
    assert head.split("|")[-3].strip() == w.MACHINE
    assert "15.0 (150%)" in row
    assert row.rstrip("| ").endswith("3.0 (30%)")  # the cluster's own processes only


def test_per_pod_cpu_is_net_of_each_process_at_rest() -> None:
    r = run(True, 100)  # 1,000 pods in 10 s
    r.cpu_wall_s = 10.0
    r.cpu_s = {"kube-apiserver": 6.0, "kwok": 2.0, w.MACHINE: 9.0}
    # 5 s before the clock: the apiserver at 20 % of a core, kwok at 20 %, the rest idle.
    r.rest_wall_s, r.rest_cpu_s = 5.0, {"kube-apiserver": 1.0, "kwok": 1.0, w.MACHINE: 2.0}
    got = w.per_pod_cpu(r)
    assert got["kube-apiserver"] == pytest.approx((0.2, 4.0))  # (6 - 0.2 x 10) / 1000 pods
    assert got["kwok"] == pytest.approx((0.2, 0.0))  # its heartbeats only: nothing per pod
    assert got[w.MACHINE] == pytest.approx((0.4, 5.0))
    head, _, row = w.pod_cpu_table([r]).splitlines()
    assert head.split("|")[-2].strip() == w.MACHINE
    assert "| 20% / 4.00 |" in row
    # A run recorded before the rest reading: no numbers made up for it.
    old = run(False, 100)
    assert w.per_pod_cpu(old) == {}
    assert w.pod_cpu_table([r, old]).splitlines()[-1].count("| - ") == 4  # rest s too


def test_placement_check_counts_pods_where_the_policy_wants_them() -> None:
    gws = ["gw-00000", "gw-00010", "gw-00020"]
    plans = w.devices(4, gws)
    manifests = w.pods(8, [p.name for p in plans])
    near = {p.name: p.heard_by[0][0] for p in plans}
    placed: dict[str, str] = {}
    for m in manifests:
        meta = m["metadata"]
        device = meta["annotations"].get("cloud4iot.io/device")
        kind = meta["labels"]["bench-kind"]
        placed[meta["name"]] = (
            near[device] if device else ("edge-00001" if kind == "anonymiser" else "cloud-00004")
        )
    # One confidential pod on the other gateway, one anonymiser in the cloud, one unbound.
    first_conf = next(
        m for m in manifests if m["metadata"]["labels"]["bench-kind"] == "confidential"
    )
    placed[first_conf["metadata"]["name"]] = "gw-00020"
    anonymisers = [m for m in manifests if m["metadata"]["labels"]["bench-kind"] == "anonymiser"]
    placed[anonymisers[0]["metadata"]["name"]] = "cloud-00005"
    del placed[anonymisers[1]["metadata"]["name"]]
    assert w.placement_check(manifests, plans, placed) == {
        "confidential": (1, 2),
        "diagnostic-intensive": (2, 2),
        "anonymiser": (0, 1),
        "unmanaged": (2, 2),
    }


def test_the_admission_note_reads_both_ends() -> None:
    ext_before = w.parse_samples('cloud4iot_extender_admissions_total{outcome="narrowed"} 2\n')
    ext_after = w.parse_samples(
        'cloud4iot_extender_admissions_total{outcome="narrowed"} 12\n'
        'cloud4iot_extender_admissions_total{outcome="skipped"} 5\n'
    )
    api_before = w.parse_samples(
        "# TYPE apiserver_admission_webhook_fail_open_count counter\n"
        'apiserver_admission_webhook_fail_open_count{name="n",type="admit"} 1\n'
    )
    api_after = w.parse_samples(
        "# TYPE apiserver_admission_webhook_fail_open_count counter\n"
        'apiserver_admission_webhook_fail_open_count{name="n",type="admit"} 4\n'
    )
    note = w.admission_note(ext_before, ext_after, api_before, api_after)
    assert note == (
        "admissions answered: narrowed 10, skipped 5;"
        " admitted by the apiserver without an answer: 3"
    )
