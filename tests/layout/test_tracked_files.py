"""Nothing machine-local is tracked: a `.venv` symlink (a worktree pointing at a shared
venv) was committed once, and a merge then replaced the real venv, which git treats as
ignored and so expendable, with a link to itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = (".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".cache")


def test_no_local_environment_is_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    bad = [
        p.decode() for p in tracked if p and any(part in LOCAL for part in Path(p.decode()).parts)
    ]
    assert bad == []


def test_gitignore_also_ignores_a_venv_symlink() -> None:
    ignored = subprocess.run(
        # a path that does not exist is taken for a file, as a symlink is: '.venv/'
        # alone matches only a directory
        ["git", "check-ignore", "--no-index", "-q", "no/such/.venv"],
        cwd=ROOT,
        check=False,
    )
    assert ignored.returncode == 0
