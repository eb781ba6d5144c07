"""What this installation is: its version, the policy it ships, and whether the extra a
console script needs is installed.

Every console script of the wheel is installed whatever the extras, so each one checks its
own extra first and exits with one line naming the install command, instead of failing
later with a ModuleNotFoundError (or retrying a missing D-Bus library for ever).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from prometheus_client import CollectorRegistry, Info

DISTRIBUTION = "cloud4iot-placement"

# The shipped policy (manifests/policy/policy.yaml, the one file every consumer reads):
# package data of the wheel, so the CLI finds it from any directory.
DEFAULT_POLICY = Path(__file__).resolve().parent / "policy" / "default.yaml"


def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line(prog: str) -> str:
    """What `--version` prints."""
    py = ".".join(str(n) for n in sys.version_info[:3])
    return f"{prog} {version()} ({DISTRIBUTION}, Python {py})"


_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def extra_requirements(extra: str) -> list[str]:
    """The distribution names the extra adds, from the installed metadata."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for req in requires:
        marker = _EXTRA.search(req)
        name = _NAME.match(req)
        if marker and marker.group(1) == extra and name:
            names.append(name.group(1))
    return names


def missing_extra(extra: str) -> list[str]:
    """The extra's distributions that are not installed (empty: all there)."""
    missing = []
    for name in extra_requirements(extra):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def require_extra(prog: str, extra: str) -> None:
    """Exit at once (status 1, one line) when the extra this command needs is missing."""
    missing = missing_extra(extra)
    if missing:
        print(
            f"{prog}: this command needs the {extra!r} extra (missing: {', '.join(missing)}); "
            f"install {DISTRIBUTION}[{extra}]",
            file=sys.stderr,
        )
        raise SystemExit(1)


def register_build_info(registry: CollectorRegistry, component: str) -> None:
    """`cloud4iot_build_info{version,component,python} 1` on this registry."""
    info = Info("cloud4iot_build", "The running build of cloud4iot-placement", registry=registry)
    info.info(
        {
            "version": version(),
            "component": component,
            "python": ".".join(str(n) for n in sys.version_info[:3]),
        }
    )
