"""`make`'s system-deps step (scripts/system-deps.sh) asks apt for what is missing,
python3-venv included when the Python that makes .venv cannot (Debian's python3 without
it has no ensurepip, and `python3 -m venv` then leaves a venv without pip)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, python: str, *args: str) -> list[str]:
    """system-deps.sh with every other tool present and apt-get recording what it is asked."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    calls = tmp_path / "apt-calls"
    for tool in ("prometheus", "dbus-daemon", "openssl"):
        if not (bin_ / tool).exists():
            (bin_ / tool).write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_ / "sudo").write_text('#!/bin/sh\nexec "$@"\n')  # not root: still our apt-get
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "PYTHON": python}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "system-deps.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def test_a_python_without_ensurepip_gets_python3_venv(tmp_path: Path) -> None:
    no_venv = tmp_path / "python-without-ensurepip"
    no_venv.write_text("#!/bin/sh\nexit 1\n")  # `-c 'import ensurepip'` fails
    no_venv.chmod(0o755)
    calls = run(tmp_path, str(no_venv))
    installs = [c for c in calls if c.startswith("install")]
    assert len(installs) == 1, calls
    assert installs[0].split()[-1] == "python3-venv"


def test_nothing_missing_runs_no_apt(tmp_path: Path) -> None:
    assert run(tmp_path, "python3") == []


def test_the_venv_step_asks_for_python3_venv_alone(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    # prometheus "missing" (a stand-in that is not executable is not found by command -v)
    (tmp_path / "bin" / "prometheus").write_text("")
    no_venv = tmp_path / "python-without-ensurepip"
    no_venv.write_text("#!/bin/sh\nexit 1\n")
    no_venv.chmod(0o755)
    installs = [c for c in run(tmp_path, str(no_venv), "venv") if c.startswith("install")]
    assert len(installs) == 1
    assert installs[0].split()[-1] == "python3-venv"


def test_fast_targets_never_ask_for_system_packages() -> None:
    """`make test-unit` and `make lint` need no root: only a venv to be made may install
    (python3-venv alone); `make test` and `make demo` install what their tests run."""

    def dry(target: str) -> list[str]:
        done = subprocess.run(  # -B: every recipe, as on a fresh clone
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return [line for line in done.stdout.splitlines() if "system-deps.sh" in line]

    for target in ("test-unit", "lint"):
        lines = dry(target)
        assert lines, target  # the venv step's own check is there
        assert all("system-deps.sh venv" in line for line in lines), lines
    for target in ("test", "demo"):
        assert any(line.rstrip().endswith("scripts/system-deps.sh") for line in dry(target))
