"""Render the admin-facing KubeSchedulerConfiguration for the devcluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_TEMPLATE = REPO_ROOT / "manifests" / "scheduler" / "kube-scheduler-config.yaml"
PROFILE = "cloud4iot-scheduler"


def render_scheduler_config(
    extender_url: str, template: Path = SCHEDULER_TEMPLATE
) -> dict[str, Any]:
    """The template with our extender's URL, plus the default profile.

    The devcluster runs a single kube-scheduler, so it also serves
    `default-scheduler`; with nobody to compete with, leader election is off
    (a restart then never waits for a lease to expire).
    kwokctl fills in `clientConnection.kubeconfig` itself.
    """
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(template.read_text()))
    extenders = config.get("extenders") or []
    if len(extenders) != 1:
        raise ValueError(f"{template}: expected exactly one extender, found {len(extenders)}")
    extenders[0]["urlPrefix"] = extender_url
    profiles = config.setdefault("profiles", [])
    names = {p.get("schedulerName") for p in profiles}
    if PROFILE not in names:
        raise ValueError(f"{template}: no profile named {PROFILE}")
    if "default-scheduler" not in names:
        profiles.insert(0, {"schedulerName": "default-scheduler"})
    config["leaderElection"] = {"leaderElect": False}
    return config


def write_scheduler_config(extender_url: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump(render_scheduler_config(extender_url), sort_keys=False))
    return path
