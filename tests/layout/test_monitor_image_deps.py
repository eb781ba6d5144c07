"""The gateway monitor's image installs only what the monitor imports (issue 23 item 4):
its Dockerfile's pip list is the `gateway` extra plus the base dependencies the monitor's
modules import (read from the source, transitively through the kernel), each with the
version pyproject.toml asks for."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "images" / "gateway-monitor" / "Dockerfile"
# import name -> distribution, for the third-party packages the monitor may import
DISTRIBUTIONS = {
    "bleak": "bleak",
    "dbus_fast": "dbus-fast",
    "prometheus_client": "prometheus-client",
    "orjson": "orjson",
    "yaml": "PyYAML",
}
LOCAL = {"cloud4iot", "gateway_monitor"}


def imported(module: str) -> set[str]:
    """Top-level names of everything `module` imports (lazily too), following our own
    modules transitively."""
    seen, outside = set(), set()
    todo = [module] + [f"{module}.{f.stem}" for f in sorted((ROOT / module).glob("*.py"))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = ROOT / Path(*name.split("."))
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not file.is_file():
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n.split(".")[0] in LOCAL:
                    todo.append(n)
                else:
                    outside.add(n.split(".")[0])
    return outside - set(sys.stdlib_module_names) - {"__future__"}


def pip_installed() -> dict[str, str]:
    """name -> spec of the quoted requirements the Dockerfile pip-installs."""
    specs = re.findall(r'"([A-Za-z0-9_.-]+)([<>=!~][^"]*)"', DOCKERFILE.read_text())
    return dict(specs)


def wanted(name: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in [*project["dependencies"], *project["optional-dependencies"]["gateway"]]:
        if re.split(r"[<>=!~ ]", req, maxsplit=1)[0].lower() == name.lower():
            return req[len(name) :].split(";")[0].strip()
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def test_the_image_installs_exactly_what_the_monitor_imports() -> None:
    third_party = imported("gateway_monitor")
    assert third_party <= set(DISTRIBUTIONS), third_party - set(DISTRIBUTIONS)
    installed = pip_installed()
    assert set(installed) == {DISTRIBUTIONS[m] for m in third_party}
    for name, spec in installed.items():
        assert spec == wanted(name), name
    assert "--no-deps ." in DOCKERFILE.read_text()  # the package itself, without aiohttp & co


def test_imported_sees_lazy_imports() -> None:
    assert {"bleak", "yaml"} <= imported("gateway_monitor")
    assert "aiohttp" not in imported("gateway_monitor")
