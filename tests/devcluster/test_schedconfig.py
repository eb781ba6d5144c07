"""The scheduler configuration: admin template and the devcluster's rendering."""

import yaml

from devcluster.schedconfig import SCHEDULER_TEMPLATE, render_scheduler_config


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
