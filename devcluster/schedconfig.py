"""Render the admin-facing KubeSchedulerConfiguration for the devcluster."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_TEMPLATE = REPO_ROOT / "manifests/placement/scheduler/kube-scheduler-config.yaml"
PROFILE = "cloud4iot-scheduler"


@dataclass(frozen=True, slots=True)
class SchedulerTls:
    """kube-scheduler's side of mutual TLS with the extender (its `tlsConfig`)."""

    cert: Path  # the scheduler's client certificate
    key: Path
    ca: Path  # verifies the extender's server certificate

    def tls_config(self) -> dict[str, str]:
        return {"certFile": str(self.cert), "keyFile": str(self.key), "caFile": str(self.ca)}


def render_scheduler_config(
    extender_url: str,
    template: Path = SCHEDULER_TEMPLATE,
    tls: SchedulerTls | None = None,
    score_every_node: bool = False,
) -> dict[str, Any]:
    """The template with our extender's URL, plus the default profile.

    Without `tls` the extender entry has no `tlsConfig` (a plain `http://` URL);
    with it, the entry carries these files, and the URL must be `https://`.

    `score_every_node` sets `percentageOfNodesToScore: 100` on our profile: what
    a cluster without the narrowing webhook needs for proximity (the template's
    comment says why); with the webhook, the profile samples like any other.

    The devcluster runs a single kube-scheduler, so it also serves
    `default-scheduler` (adaptive sampling); with nobody to compete
    with, leader election is off (a restart then never waits for a lease to
    expire). The template's `clientConnection` (qps, burst) is kept: kwokctl
    only adds `clientConnection.kubeconfig` to it.
    """
    config = _with_default_profile(template)
    extenders = config.get("extenders") or []
    if len(extenders) != 1:
        raise ValueError(f"{template}: expected exactly one extender, found {len(extenders)}")
    extenders[0]["urlPrefix"] = extender_url
    if tls is None:
        extenders[0].pop("tlsConfig", None)
    else:
        if not extender_url.startswith("https://"):
            raise ValueError(f"tlsConfig given for a non-https extender URL {extender_url}")
        extenders[0]["tlsConfig"] = tls.tls_config()
    if score_every_node:
        for profile in config["profiles"]:
            if profile["schedulerName"] == PROFILE:
                profile["percentageOfNodesToScore"] = 100
    return config


def render_baseline_config(template: Path = SCHEDULER_TEMPLATE) -> dict[str, Any]:
    """The same scheduler without any extender, for benchmarks' baseline.

    Same profiles and client limits (so the baseline is not held by the rate
    limiter either), but no extender and every profile at kube-scheduler's
    default, adaptive sampling: what a cluster without us would run.
    """
    config = _with_default_profile(template)
    config.pop("extenders", None)
    for profile in config["profiles"]:
        profile.pop("percentageOfNodesToScore", None)
    config.pop("percentageOfNodesToScore", None)
    return config


def render_default_only_config(template: Path = SCHEDULER_TEMPLATE) -> dict[str, Any]:
    config = _with_default_profile(template)
    config.pop("extenders", None)
    config["profiles"] = [{"schedulerName": "default-scheduler"}]
    config["leaderElection"] = {"leaderElect": True}
    return config


def _with_default_profile(template: Path) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(template.read_text()))
    profiles = config.setdefault("profiles", [])
    names = {p.get("schedulerName") for p in profiles}
    if PROFILE not in names:
        raise ValueError(f"{template}: no profile named {PROFILE}")
    if "default-scheduler" not in names:
        profiles.insert(0, {"schedulerName": "default-scheduler"})
    config["leaderElection"] = {"leaderElect": False}
    return config


def write_scheduler_config(
    extender_url: str | None,
    path: Path,
    tls: SchedulerTls | None = None,
    score_every_node: bool = False,
    default_only: bool = False,
) -> Path:
    """The devcluster's configuration; without an extender URL, the baseline.
    `default_only`: a cluster's ordinary default scheduler (profile default-scheduler
    only, leader election on the Lease kube-system/kube-scheduler), beside which
    tests/install runs the second scheduler of the manifests."""
    if default_only:
        config = render_default_only_config()
    elif extender_url is None:
        config = render_baseline_config()
    else:
        config = render_scheduler_config(extender_url, tls=tls, score_every_node=score_every_node)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
