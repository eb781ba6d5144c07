"""README "Deploying on a cluster" runs exactly the commands tests/install runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.install.test_install import README_COMMANDS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_commands_are_the_install_tests() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Deploying on a cluster\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [ln.split("#", 1)[0].strip() for b in blocks for ln in b.splitlines()]
    lines = [ln for ln in lines if ln]
    expected = [c.format(overlay="manifests/", ns="cloud4iot-system") for c in README_COMMANDS]
    assert lines[: len(expected)] == expected, lines
