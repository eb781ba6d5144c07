"""One vocabulary (issue 21 item 2): every name the product writes on or reads from
Kubernetes objects under `cloud4iot.io/` or `node-restriction.kubernetes.io/` is spelled
in `cloud4iot/vocabulary.py` only; other modules import it. Docstrings may mention a
name (they explain); code may not spell one. The PlacementPolicy's apiVersion is the
policy schema's, not an object name."""

from __future__ import annotations

import ast
import re

from tests.layout.test_product_imports import ROOT, product_files

VOCABULARY = "cloud4iot/vocabulary.py"
NAME = re.compile(r"(cloud4iot\.io|node-restriction\.kubernetes\.io)/[a-z]")
NOT_A_NAME = {"cloud4iot.io/v1alpha1"}  # the policy's apiVersion (cloud4iot.policy.schema)


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def spelled_names(source: str) -> list[str]:
    """String constants in code (f-string parts included, docstrings not) holding a name."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and node.value not in NOT_A_NAME
        and NAME.search(node.value)
    ]


def test_spelled_names_skips_docstrings_and_sees_fstring_parts() -> None:
    source = '''
"""Module doc: cloud4iot.io/tier."""
def f():
    """Doc: cloud4iot.io/device."""
    return f"no cloud4iot.io/tier label on {node}"
X = "node-restriction.kubernetes.io/cloud4iot-gateway"
V = "cloud4iot.io/v1alpha1"
'''
    assert sorted(spelled_names(source)) == [
        "no cloud4iot.io/tier label on ",
        "node-restriction.kubernetes.io/cloud4iot-gateway",
    ]


def test_object_names_are_spelled_in_the_vocabulary_only() -> None:
    found = []
    for _, path in product_files():
        where = str(path.relative_to(ROOT))
        if where == VOCABULARY:
            continue
        found += [f"{where}: {value!r}" for value in spelled_names(path.read_text())]
    assert found == [], "names spelled outside cloud4iot/vocabulary.py:\n" + "\n".join(found)


def test_the_vocabulary_spells_them() -> None:
    assert len(spelled_names((ROOT / VOCABULARY).read_text())) >= 12
