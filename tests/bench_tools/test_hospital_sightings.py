"""The hospital-sightings bench's pure parts: what it reads off etcd and the apiserver."""

from __future__ import annotations

import pytest

from bench.hospital_sightings import (
    etcd_metrics_url,
    etcd_sizes,
    writes_by_resource,
)

ETCD_METRICS = """\
# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically allocated in bytes.
# TYPE etcd_mvcc_db_total_size_in_bytes gauge
etcd_mvcc_db_total_size_in_bytes 1.14229248e+08
# HELP etcd_mvcc_db_total_size_in_use_in_bytes Total size of the underlying database logically in use in bytes.
# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge
etcd_mvcc_db_total_size_in_use_in_bytes 3.1531008e+07
# HELP etcd_debugging_mvcc_current_revision The current revision of store.
# TYPE etcd_debugging_mvcc_current_revision gauge
etcd_debugging_mvcc_current_revision 48211
# HELP etcd_debugging_mvcc_compact_revision The revision of the last compaction in store.
# TYPE etcd_debugging_mvcc_compact_revision gauge
etcd_debugging_mvcc_compact_revision 40007
# HELP etcd_server_has_leader Whether or not a leader exists.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
"""


def test_etcd_sizes_reads_file_in_use_and_revisions() -> None:
    assert etcd_sizes(ETCD_METRICS) == {
        "total": 114_229_248,
        "in_use": 31_531_008,
        "revision": 48_211,
        "compacted": 40_007,
    }


def test_etcd_metrics_url_from_either_flag_form() -> None:
    for argv, want in (
        (
            ["etcd", "--listen-client-urls=http://0.0.0.0:32379,http://[::]:32379"],
            "http://127.0.0.1:32379",
        ),
        (["etcd", "--advertise-client-urls", "http://127.0.0.1:4001"], "http://127.0.0.1:4001"),
    ):
        assert etcd_metrics_url(argv) == want + "/metrics"
    with pytest.raises(LookupError):
        etcd_metrics_url(["etcd", "--data-dir=/var/lib/etcd"])


def test_writes_by_resource_counts_only_writes_with_their_bytes() -> None:
    text = """\
# TYPE apiserver_request_total counter
apiserver_request_total{resource="leases",verb="PUT",code="200"} 10
apiserver_request_total{resource="leases",verb="GET",code="200"} 99
apiserver_request_total{resource="gatewayreports",verb="APPLY",code="200"} 4
# TYPE apiserver_request_body_size_bytes histogram
apiserver_request_body_size_bytes_sum{resource="gatewayreports",verb="patch"} 4096
apiserver_request_body_size_bytes_count{resource="gatewayreports",verb="patch"} 4
"""
    assert writes_by_resource(text) == {"leases": (10.0, 0.0), "gatewayreports": (4.0, 4096.0)}
