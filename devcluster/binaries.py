"""Where the control-plane binaries are: devcluster/build.sh owns the cache key."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
)


class BinariesMissingError(RuntimeError):
    pass


def _run_build_script(*args: str) -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def binaries_dir() -> Path:
    """The cache folder for the pinned versions (it may not exist yet)."""
    return _run_build_script("--print-dir")


def require_binaries() -> Path:
    folder = binaries_dir()
    missing = [b for b in BINARIES if not (folder / b).is_file()]
    if missing:
        raise BinariesMissingError(
            f"devcluster binaries missing in {folder}: {', '.join(missing)}. "
            "Build them first: `make devcluster-build` (or `python -m devcluster build`; "
            "about 20 minutes cold on 2 cores)."
        )
    return folder


def build() -> Path:
    """Build (or reuse) the binaries; progress goes to stderr."""
    return _run_build_script()
