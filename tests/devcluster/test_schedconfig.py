"""The scheduler configuration: admin template and the devcluster's rendering."""

from pathlib import Path

import pytest
import yaml

from devcluster.schedconfig import (
    SCHEDULER_TEMPLATE,
    SchedulerTls,
    render_baseline_config,
    render_default_only_config,
    render_scheduler_config,
    write_scheduler_config,
)


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
    assert set(extender["tlsConfig"]) == {"certFile", "keyFile", "caFile", "serverName"}
    # The name the extender's certificate holds whatever namespace it runs in.
    assert extender["tlsConfig"]["serverName"] == "cloud4iot-extender"
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


def test_admin_template_sets_client_limits_and_samples_like_any_profile() -> None:
    config = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())
    # kube-scheduler ignores --kube-api-qps/--kube-api-burst with --config: the
    # limits must be here, and well above the defaults (50/100).
    assert config["clientConnection"]["qps"] >= 200
    assert config["clientConnection"]["burst"] >= 2 * config["clientConnection"]["qps"]
    assert "percentageOfNodesToScore" not in config
    # The narrowing webhook pins classed pods to their best nodes: no need to
    # score every node (manifests/placement/extender/narrowing-webhook.yaml).
    (ours,) = config["profiles"]
    assert "percentageOfNodesToScore" not in ours


def test_devcluster_rendering_keeps_client_limits_and_samples_the_default_profile() -> None:
    template = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())
    config = render_scheduler_config("http://127.0.0.1:31234")
    # kwokctl adds clientConnection.kubeconfig and keeps the rest.
    assert config["clientConnection"] == template["clientConnection"]
    assert "kubeconfig" not in config["clientConnection"]
    profiles = {p["schedulerName"]: p for p in config["profiles"]}
    assert all("percentageOfNodesToScore" not in p for p in profiles.values())
    assert "percentageOfNodesToScore" not in config
    # Without the narrowing webhook our profile scores every node, and only ours.
    scored = render_scheduler_config("http://127.0.0.1:31234", score_every_node=True)
    profiles = {p["schedulerName"]: p for p in scored["profiles"]}
    assert profiles["cloud4iot-scheduler"]["percentageOfNodesToScore"] == 100
    assert "percentageOfNodesToScore" not in profiles["default-scheduler"]


def test_baseline_rendering_has_no_extender_same_limits_and_default_sampling() -> None:
    template = yaml.safe_load(SCHEDULER_TEMPLATE.read_text())
    config = render_baseline_config()
    assert "extenders" not in config
    assert config["clientConnection"] == template["clientConnection"]
    assert [p["schedulerName"] for p in config["profiles"]] == [
        "default-scheduler",
        "cloud4iot-scheduler",
    ]
    assert all("percentageOfNodesToScore" not in p for p in config["profiles"])
    assert config["leaderElection"] == {"leaderElect": False}


def test_write_without_an_extender_url_writes_the_baseline(tmp_path: Path) -> None:
    path = write_scheduler_config(None, tmp_path / "s.yaml")
    assert yaml.safe_load(path.read_text()) == render_baseline_config()
    path = write_scheduler_config("http://127.0.0.1:1", tmp_path / "t.yaml")
    assert yaml.safe_load(path.read_text())["extenders"][0]["urlPrefix"] == "http://127.0.0.1:1"


def test_default_only_is_an_ordinary_elected_default_scheduler() -> None:
    """tests/install's cluster: nothing of ours, so only the installed scheduler serves
    cloud4iot-scheduler, and the default one holds kube-system/kube-scheduler."""
    config = render_default_only_config()
    assert config["profiles"] == [{"schedulerName": "default-scheduler"}]
    assert "extenders" not in config
    assert config["leaderElection"] == {"leaderElect": True}
