"""The scheduler configuration: admin template and the devcluster's rendering."""

from pathlib import Path

import pytest
import yaml

from devcluster.schedconfig import SCHEDULER_TEMPLATE, SchedulerTls, render_scheduler_config


def test_admin_template_serves_only_our_profile_with_an_explicit_extender() -> None:
    config = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())
    assert [p["schedulerName"] for p in config["profiles"]] == ["cloud4iot-scheduler"]
    # Its own lease, so it never competes with the cluster's default scheduler.
    assert config["leaderElection"]["resourceName"] == "cloud4iot-scheduler"
    (extender,) = config["extenders"]
    assert extender["filterVerb"] == "filter"
    assert extender["prioritizeVerb"] == "prioritize"
    assert extender["nodeCacheCapable"] is True
    assert extender["weight"] > 0
    assert extender["httpTimeout"] == "5s"
    assert extender["ignorable"] is False


def test_devcluster_rendering_points_at_the_local_extender_and_keeps_default_profile() -> None:
    config = render_scheduler_config("http://127.0.0.1:31234")
    assert config["extenders"][0]["urlPrefix"] == "http://127.0.0.1:31234"
    assert [p["schedulerName"] for p in config["profiles"]] == [
        "default-scheduler",
        "cloud4iot-scheduler",
    ]
    assert config["leaderElection"] == {"leaderElect": False}
    # Rendering never edits the template itself.
    assert "31234" not in SCHEDULER_TEMPLATE.read_text()


def test_admin_template_uses_mutual_tls_and_verifies_the_extender() -> None:
    (extender,) = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())["extenders"]
    assert extender["urlPrefix"].startswith("https://")
    # Without caFile kube-scheduler skips verifying the extender's certificate.
    assert set(extender["tlsConfig"]) == {"certFile", "keyFile", "caFile"}
    assert "insecure" not in extender["tlsConfig"]


def test_plain_rendering_drops_tls_config() -> None:
    (extender,) = render_scheduler_config("http://127.0.0.1:31234")["extenders"]
    assert "tlsConfig" not in extender


def test_tls_rendering_points_at_the_given_files(tmp_path: Path) -> None:
    tls = SchedulerTls(tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "ca.crt")
    (extender,) = render_scheduler_config("https://127.0.0.1:31234", tls=tls)["extenders"]
    assert extender["urlPrefix"] == "https://127.0.0.1:31234"
    assert extender["tlsConfig"] == {
        "certFile": str(tmp_path / "c.crt"),
        "keyFile": str(tmp_path / "c.key"),
        "caFile": str(tmp_path / "ca.crt"),
    }
    with pytest.raises(ValueError, match="non-https"):
        render_scheduler_config("http://127.0.0.1:31234", tls=tls)
