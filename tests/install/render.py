"""Render manifests/ and its overlays with the kubectl built from k8s.io/kubectl v0.36.3
(devcluster/build.sh), the same client the install test applies them with."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("namespaces", "cert-manager", "kube-prometheus", "kube-prometheus-stack")


@functools.cache
def kubectl() -> Path:
    out = subprocess.run(
        ["bash", str(ROOT / "devcluster" / "build.sh"), "--print-kubectl-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = Path(out.stdout.strip()) / "kubectl"
    assert path.is_file(), f"{path} missing: build it with `make devcluster-build`"
    return path


@functools.cache
def render(folder: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize manifests/overlays/<folder>` ("": manifests/), as documents."""
    out = subprocess.run(
        [
            str(kubectl()),
            "kustomize",
            str(MANIFESTS / "overlays" / folder if folder else MANIFESTS),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc
