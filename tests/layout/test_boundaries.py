"""The wings' boundaries: which product package may import which, and what each image copies.

- `cloud4iot` (the shared kernel) imports no deployable; each deployable imports the
  kernel and never the other deployable.
- `cloud4iot.policy` is a leaf: the schema, loader and store import nothing else of ours
  but the kernel's file-watch loop.
- `extender.state` reads the world without the scorer (no `state` -> `scoring`), nor any
  other extender module: a leaf beside the kernel; `extender.admission` borrows nothing
  from the scheduler webhook (shared HTTP helpers are `cloud4iot.httpjson`).
- The rebalancer wing builds on the extender (its scorer, state, admission's stale-pin
  check); the extender never imports the rebalancer.
- No two folder packages import each other (policy <-> scoring, scoring <-> state, ...);
  the entry points and app factories that wire a deployable together do not count.
- In the rebalancer wing only `rebalancer/evictor.py` names a Kubernetes write
  (eviction, Deployment/StatefulSet patch, Event): the evictor is the one place a
  move is made.
- Outside `extender/scoring/`, verdicts come from `scoring.evaluate` only: nothing
  imports the scorer's inner steps (`judge`, the proximity `narrow`).
- Each image's Dockerfile copies exactly its own packages plus the kernel, and those
  hold every module its entry package reaches.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.layout.test_product_imports import PRODUCT, ROOT, Edge, import_edges, product_files

# image folder -> (the package its entry point lives in, the packages it must copy)
IMAGES = {
    "extender": ("extender", {"cloud4iot", "extender", "rebalancer"}),
    "gateway-monitor": ("gateway_monitor", {"cloud4iot", "gateway_monitor"}),
}
DEPLOYABLES = ("extender", "gateway_monitor", "rebalancer")


def product_edges() -> list[Edge]:
    return [e for e in import_edges() if e.target.split(".")[0] in PRODUCT]


def crossing(edges: list[Edge], source: str, target: str) -> list[str]:
    """Edges from modules under `source` into modules under `target` (dotted prefixes)."""

    def under(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return [
        f"{e.where}: {e.source} -> {e.target}"
        for e in edges
        if under(e.source, source) and under(e.target, target)
    ]


def test_crossing_sees_an_edge_and_only_under_the_prefixes() -> None:
    edges = [
        Edge("extender.state.kube", "extender.scoring.model", "x:1"),
        Edge("extender.stateful", "extender.scoring", "x:2"),
        Edge("extender.state", "extender.scoring_x", "x:3"),
    ]
    assert crossing(edges, "extender.state", "extender.scoring") == [
        "x:1: extender.state.kube -> extender.scoring.model"
    ]


def test_the_kernel_imports_no_deployable() -> None:
    edges = product_edges()
    bad = [line for d in DEPLOYABLES for line in crossing(edges, "cloud4iot", d)]
    assert bad == [], "the shared kernel imports a deployable:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("gateway_monitor", "extender"),
        ("gateway_monitor", "rebalancer"),
        ("extender", "gateway_monitor"),
        ("extender", "rebalancer"),
        ("rebalancer", "gateway_monitor"),
    ],
)
def test_a_deployable_never_imports_the_other(source: str, target: str) -> None:
    bad = crossing(product_edges(), source, target)
    assert bad == [], f"{source} imports {target}:\n" + "\n".join(bad)


LEAF_MAY_USE = {"cloud4iot.filewatch"}  # the kernel's stdlib-only file-watch loop


def test_policy_is_a_leaf() -> None:
    edges = product_edges()
    bad = [
        f"{e.where}: {e.source} -> {e.target}"
        for e in edges
        if e.source.startswith("cloud4iot.policy")
        and not e.target.startswith("cloud4iot.policy")
        and e.target not in LEAF_MAY_USE
    ]
    assert bad == [], "cloud4iot.policy imports outside itself:\n" + "\n".join(bad)


def test_state_does_not_import_scoring() -> None:
    bad = crossing(product_edges(), "extender.state", "extender.scoring")
    assert bad == [], "extender.state imports the scorer:\n" + "\n".join(bad)


def test_state_is_a_leaf_of_the_extender() -> None:
    """extender.state reads the world with the kernel only: no other extender module."""
    bad = [
        line
        for line in crossing(product_edges(), "extender.state", "extender")
        if not line.split(" -> ")[1].startswith("extender.state")
    ]
    assert bad == [], "extender.state imports the rest of the extender:\n" + "\n".join(bad)


def test_admission_does_not_borrow_from_the_webhook() -> None:
    """Its HTTP helpers are cloud4iot.httpjson's, not the scheduler webhook's."""
    bad = crossing(product_edges(), "extender.admission", "extender.webhook")
    assert bad == [], "\n".join(bad)


# --- each image's package set -------------------------------------------------------------


def copied_packages(dockerfile: Path) -> set[str]:
    """Top-level Python packages of the repository a Dockerfile COPYs from the build context."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    copied: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*COPY\s+(.*)", line, re.IGNORECASE)
        if not match or "--from" in match.group(1):
            continue
        *sources, _dest = match.group(1).split()
        copied |= {s.strip("./") for s in sources} & packages
    return copied


def reached_packages(entry: str) -> set[str]:
    """Top-level product packages the entry package reaches through its imports."""
    graph: defaultdict[str, set[str]] = defaultdict(set)
    for e in product_edges():
        graph[e.source].add(e.target)
    seen: set[str] = set()
    todo = [m for m in {e.source for e in product_edges()} if m.split(".")[0] == entry]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return {m.split(".")[0] for m in seen}


def test_copied_packages_reads_copy_lines(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "COPY pyproject.toml README.md ./\nCOPY extender ./extender\n"
        "COPY cloud4iot/ cloud4iot/\nCOPY --from=build /wheels /wheels\n"
    )
    assert copied_packages(dockerfile) == {"extender", "cloud4iot"}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_copies_its_packages_and_the_kernel_only(image: str) -> None:
    entry, expected = IMAGES[image]
    copied = copied_packages(ROOT / "images" / image / "Dockerfile")
    assert copied == expected
    missing = reached_packages(entry) - copied
    assert missing == set(), f"{image} imports packages its image does not copy: {missing}"


# --- no two packages import each other ----------------------------------------------------

# Entry points and app factories wire every package of their deployable together; they
# sit on top of the graph, so their imports do not make their folder a two-way partner.
COMPOSITION = {
    f"{package}.{module}"
    for package in ("extender", "gateway_monitor", "rebalancer")
    for module in ("__main__", "app", "cli")
}


def package_of(module: str, files: dict[str, Path]) -> str:
    """The folder package a module lives in (a package's __init__ is its own)."""
    return module if files[module].name == "__init__.py" else module.rpartition(".")[0]


def two_way_packages(edges: list[Edge], files: dict[str, Path]) -> dict[tuple[str, str], str]:
    """(a, b) with a < b -> one import each way, for folder packages that import each other."""
    first: dict[tuple[str, str], str] = {}
    for e in edges:
        if e.target not in files or e.source in COMPOSITION:
            continue
        a, b = package_of(e.source, files), package_of(e.target, files)
        if a != b:
            first.setdefault((a, b), f"{e.where}: {e.source} -> {e.target}")
    return {
        (a, b): f"{w}; {first[b, a]}" for (a, b), w in first.items() if a < b and (b, a) in first
    }


def test_two_way_packages_finds_a_pair() -> None:
    names = ("p.a", "q.b", "q.c", "r.d", "extender.app", "extender.x.y")
    files = {m: Path(m.replace(".", "/") + ".py") for m in names}
    edges = [Edge("p.a", "q.b", "x:1"), Edge("q.c", "p.a", "x:2"), Edge("q.b", "r.d", "x:3")]
    # the app factory's imports do not count
    edges += [
        Edge("extender.app", "extender.x.y", "x:4"),
        Edge("extender.x.y", "extender.app", "x:5"),
    ]
    assert two_way_packages(edges, files) == {("p", "q"): "x:1: p.a -> q.b; x:2: q.c -> p.a"}


def test_no_two_packages_import_each_other() -> None:
    bad = two_way_packages(product_edges(), dict(product_files()))
    assert bad == {}, "packages importing each other:\n" + "\n".join(
        f"{a} <-> {b}: {why}" for (a, b), why in bad.items()
    )


# --- the evictor is the one place a move is made ------------------------------------------

WRITE_VERB = re.compile(r"^(create|patch|replace|delete)_(namespaced|cluster)_")


def kube_writes(source: str) -> list[str]:
    """Kubernetes client write methods a module names (called or picked, as in
    `patch = apps.patch_namespaced_deployment if ... else ...`)."""
    return sorted(
        {
            node.attr
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and WRITE_VERB.match(node.attr)
        }
    )


def test_kube_writes_sees_picked_and_called_methods() -> None:
    source = (
        "f = apps.patch_namespaced_deployment if d else apps.patch_namespaced_stateful_set\n"
        "await core.create_namespaced_pod_eviction(n, ns, body)\n"
        "asyncio.create_task(x)\ncore.read_namespaced_pod(n, ns)\n"
    )
    assert kube_writes(source) == [
        "create_namespaced_pod_eviction",
        "patch_namespaced_deployment",
        "patch_namespaced_stateful_set",
    ]


def test_only_the_evictor_writes_from_the_rebalancer_wing() -> None:
    writes = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "rebalancer").rglob("*.py"))
        if (found := kube_writes(path.read_text()))
    }
    assert writes == {
        "rebalancer/evictor.py": [
            "create_namespaced_event",
            "create_namespaced_pod_eviction",
            "patch_namespaced_deployment",
            "patch_namespaced_replica_set",
            "patch_namespaced_stateful_set",
        ]
    }


# --- one evaluation path ------------------------------------------------------------------

# The scorer's inner steps: a verdict outside extender/scoring comes from `evaluate` only
# (the sighting override and the proximity narrowing are worked out there, once).
INNER_STEPS = {"judge", "narrow", "_narrowing"}


def test_only_the_scorer_calls_its_inner_steps() -> None:
    bad = []
    for module, path in product_files():
        if module.startswith("extender.scoring"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("extender.scoring")
                and (names := {a.name for a in node.names} & INNER_STEPS)
            ):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {sorted(names)}")
    assert bad == [], "the scorer's inner steps used outside it:\n" + "\n".join(bad)
