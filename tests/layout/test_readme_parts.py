"""README's "The parts" table matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Folders the project cannot do without, whether or not they hold Python.
REQUIRED = {
    "extender",
    "gateway_monitor",
    "policies",
    "manifests",
    "images",
    "tests",
    "devcluster",
    "demo",
    "bench",
    "examples",
}


def parts_table() -> list[str]:
    """The first column of the table under `## The parts`, e.g. `tests/<feature>/`."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## The parts\n", 1)[1].split("\n## ", 1)[0]
    folders = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or not cells or set(cells[0]) <= {"-", " "}:
            continue
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        if match:
            folders.append(match.group(1))
    return folders


def python_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")}


def test_table_lists_every_package_and_required_folder() -> None:
    listed = {entry.split("/")[0] for entry in parts_table()}
    missing = sorted((REQUIRED | python_packages()) - listed)
    assert missing == [], f"README's 'The parts' table does not list: {missing}"


def test_every_folder_in_the_table_exists() -> None:
    entries = parts_table()
    assert "extender/" in entries
    for entry in entries:
        # `tests/<feature>/` names a pattern: what stands before the placeholder must exist
        concrete = entry.split("<", 1)[0]
        assert (ROOT / concrete).is_dir(), f"README's 'The parts' names {entry}: no such folder"


def test_the_architecture_section_names_every_product_package() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    product = {"cloud4iot", "extender", "rebalancer", "gateway_monitor"}
    missing = sorted(p for p in product if f"`{p}/`" not in section)
    assert missing == [], f"README's Architecture section does not name: {missing}"
    for path in ("cloud4iot/vocabulary.py", "cloud4iot/devices.py", "rebalancer/evictor.py"):
        assert (ROOT / path).is_file(), f"README's Architecture section names {path}: no such file"
