"""One service shell for the three processes (issue 21 item 3), read from the source:

- each deployable declares exactly one `web.AppKey`, `RUNTIME`, holding its `Runtime`;
- /healthz, /readyz and /metrics are routed only by `cloud4iot.service.service_routes`
  (no process adds them by hand), and only the shell builds the health and metrics
  answers;
- JSON answers go through `cloud4iot.httpjson` (no `web.json_response` of aiohttp's).

The gateway monitor is the one exception, for a Pi-class gateway's memory (issue 23
item 4): no aiohttp at all, so no AppKey and no shell; its /healthz and /metrics are
gateway_monitor/httpserver.py's, built in gateway_monitor/app.py alone, and it must
never import aiohttp, the kubernetes client or pydantic (checked below).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layout.test_product_imports import PRODUCT, ROOT

DEPLOYABLES = {
    "extender": "extender/runtime.py",
    "gateway_monitor": "gateway_monitor/app.py",
    "rebalancer": "rebalancer/app.py",
}
AIOHTTP_SERVICES = ("extender", "rebalancer")  # the gateway monitor: see the docstring
MONITOR_ANSWERS = "gateway_monitor/app.py"
SHELL = "cloud4iot/service.py"
HEALTH_PATHS = {"/healthz", "/readyz", "/metrics"}


def sources(package: str) -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path)))
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def _is_app_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "AppKey"


def _key_args(call: ast.Call) -> tuple[str, str]:
    args = [
        ast.literal_eval(a) if isinstance(a, ast.Constant) else ast.unparse(a) for a in call.args
    ]
    return str(args[0]) if args else "?", str(args[1]) if len(args) > 1 else "?"


def app_keys(tree: ast.Module) -> list[tuple[str, str, str]]:
    """(variable, key name, value type) of each `web.AppKey(...)` call; "?" when the
    key is not assigned to a name."""
    found, assigned = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_app_key(node.value):
            assert isinstance(node.value, ast.Call)
            assigned.add(id(node.value))
            found.append((ast.unparse(node.targets[0]), *_key_args(node.value)))
    for node in ast.walk(tree):
        if _is_app_key(node) and id(node) not in assigned:
            assert isinstance(node, ast.Call)
            found.append(("?", *_key_args(node)))
    return found


def test_app_keys_reads_the_declarations() -> None:
    tree = ast.parse(
        'SETTINGS = web.AppKey("settings", Settings)\nRUNTIME = AppKey("rt", Runtime)\n'
        'def f(app):\n    app[web.AppKey("x", int)] = 1'
    )
    assert app_keys(tree) == [
        ("SETTINGS", "settings", "Settings"),
        ("RUNTIME", "rt", "Runtime"),
        ("?", "x", "int"),
    ]


@pytest.mark.parametrize("package", AIOHTTP_SERVICES)
def test_each_deployable_keeps_one_runtime_under_one_app_key(package: str) -> None:
    declared = [(where, *key) for where, tree in sources(package) for key in app_keys(tree)]
    assert declared == [(DEPLOYABLES[package], "RUNTIME", "runtime", "Runtime")]


def test_the_gateway_monitor_imports_no_aiohttp_kubernetes_or_pydantic() -> None:
    """Its command line and app, imported as the console script does, leave the heavy
    packages out (their RSS is BENCHMARKS.md's gateway monitor table)."""
    code = (
        "import sys, gateway_monitor.cli, gateway_monitor.app;"
        "print(sorted({m.split('.')[0] for m in sys.modules} &"
        " {'aiohttp', 'kubernetes', 'pydantic', 'requests', 'urllib3', 'yaml'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    declared = [key for _, tree in sources("gateway_monitor") for key in app_keys(tree)]
    assert declared == []


def routed_health_paths(tree: ast.Module) -> list[str]:
    """Health paths routed by hand: router.add_get("/healthz", ...), web.get("/metrics", ...),
    router.add_route("GET", "/readyz", ...)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        where = {"add_get": 0, "get": 0, "add_route": 1}.get(node.func.attr)
        if where is None or len(node.args) <= where:
            continue
        path = node.args[where]
        if isinstance(path, ast.Constant) and path.value in HEALTH_PATHS:
            found.append(str(path.value))
    return found


def test_routed_health_paths_sees_both_spellings() -> None:
    tree = ast.parse(
        'app.router.add_get("/healthz", h)\nroutes = [web.get("/metrics", m)]\n'
        'app.router.add_route("GET", "/readyz", r)\nd.get("/filter")'
    )
    assert sorted(routed_health_paths(tree)) == ["/healthz", "/metrics", "/readyz"]


def test_only_the_shell_routes_health_and_metrics() -> None:
    by_hand = [
        f"{where}: {path}"
        for package in PRODUCT
        for where, tree in sources(package)
        if where != SHELL
        for path in routed_health_paths(tree)
    ]
    assert by_hand == [], "health routes added outside cloud4iot.service:\n" + "\n".join(by_hand)


def calls_to(tree: ast.Module, names: set[str]) -> list[str]:
    return [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in names)
            or (isinstance(node.func, ast.Attribute) and node.func.attr in names)
        )
    ]


def test_only_the_shell_builds_health_and_metrics_answers() -> None:
    names = {"healthz_response", "metrics_response", "generate_latest"}
    outside = [
        f"{where}: {call}"
        for package in PRODUCT
        for where, tree in sources(package)
        if where not in (SHELL, MONITOR_ANSWERS)
        for call in calls_to(tree, names)
    ]
    assert outside == []


def test_json_answers_go_through_httpjson() -> None:
    found = [
        f"{where}: {call}"
        for package in PRODUCT
        for where, tree in sources(package)
        for call in calls_to(tree, {"json_response"})
        if call != "json_response"  # cloud4iot.httpjson's, imported by name
    ]
    assert found == [], "aiohttp's own json_response beside cloud4iot.httpjson:\n" + "\n".join(
        found
    )


def test_every_deployable_app_uses_the_shell() -> None:
    for module in ("extender/app.py", "rebalancer/app.py"):
        tree = ast.parse((ROOT / module).read_text())
        assert "service_routes" in calls_to(tree, {"service_routes"}), module


def test_deployables_listed_are_the_products() -> None:
    assert set(DEPLOYABLES) == set(PRODUCT) - {"cloud4iot"}
    assert all((ROOT / Path(p)).is_file() for p in DEPLOYABLES.values())


# The files a process re-reads while running, each through the one loop.
WATCHERS = {
    "cloud4iot/policy/store.py": "the policy",
    "extender/tls.py": "the TLS certificate and key",
    "gateway_monitor/app.py": "the gateway's calibration offset",
}


def test_every_file_watch_is_the_one_loop() -> None:
    for where in WATCHERS:
        tree = ast.parse((ROOT / where).read_text())
        assert "watch_file" in calls_to(tree, {"watch_file"}), where
    sleeping_on_files = [
        where
        for package in PRODUCT
        for where, tree in sources(package)
        if where != "cloud4iot/filewatch.py"
        and calls_to(tree, {"st_mtime", "stat"})
        and calls_to(tree, {"sleep"})
        and not calls_to(tree, {"watch_file"})
    ]
    assert sleeping_on_files == [], "a file re-check loop beside cloud4iot.filewatch"
