"""Without Go the Go-built tests fail loudly, never vanish: `scripts/go-check.sh` (the
Makefile's `go` target, a prerequisite of `make test`) refuses a missing or too old Go,
and the tests that build bench/go error instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "go-check.sh"


def path_without_go() -> str:
    return os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if d and not Path(d, "go").exists()
    )


def go_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CHECK), *args], capture_output=True, text=True, env=env, check=False
    )


def newest_go_directive() -> str:
    mods = [
        ROOT / "bench" / "go" / "go.mod",
        *sorted((ROOT / "devcluster" / "go").glob("*/go.mod")),
    ]
    wants = [
        line.split()[1]
        for mod in mods
        for line in mod.read_text().splitlines()
        if line.startswith("go ")
    ]
    return max(wants, key=lambda v: tuple(int(p) for p in v.split(".")))


def test_go_check_fails_loudly_without_go() -> None:
    done = go_check(env={**os.environ, "PATH": path_without_go()})
    assert done.returncode == 1
    # The newest directive of all our go.mod files: the control plane's build (1.26 with
    # GOTOOLCHAIN=local), not only bench/go's older one (1.22), which let Go 1.22-1.25
    # pass the check and fail in the build.
    want = newest_go_directive()
    assert want != "1.22"
    assert f"Go >= {want} is needed" in done.stderr
    assert "not on PATH" in done.stderr


@pytest.mark.go
def test_go_check_accepts_the_go_in_use_and_refuses_an_older_one(tmp_path: Path) -> None:
    assert go_check().returncode == 0, go_check().stderr
    mod = tmp_path / "go.mod"
    mod.write_text("module x\n\ngo 1.999\n")
    done = go_check(str(mod))
    assert done.returncode == 1
    assert f"older than the 1.999 that {mod} needs" in done.stderr


def test_the_go_tests_error_without_go_and_the_profile_summary_still_runs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # Skips only in the short summary: its error lines are cut to the terminal's width,
            # so counting messages there depends on where the suite runs.
            "-rs",
            "--tb=line",
            "tests/bench_tools/test_extender_pair_checker.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path_without_go(), "COLUMNS": "200"},
        check=False,
        timeout=120,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 1, done.stdout
    assert "1 passed, 4 errors" in summary, done.stdout
    assert "skipped" not in done.stdout
    assert done.stdout.count("ERROR at setup of test_") == 4, done.stdout
    assert done.stdout.count("Failed: Go is missing: run `make go`") == 4, done.stdout


def fake_go(folder: Path, version: str) -> Path:
    folder.mkdir()
    go = folder / "go"
    go.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'env GOVERSION' ] && echo {version}\n")
    go.chmod(0o755)
    return folder


def test_make_go_takes_go_from_go_bin_and_compares_versions(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": path_without_go()}
    want = newest_go_directive()  # 1.26.0 today
    major, minor = (int(p) for p in want.split(".")[:2])
    older, same = f"go{major}.{minor - 1}.9", f"go{want}"
    for version, ok in ((older, False), (same, True), ("go1.99rc1", True)):
        folder = fake_go(tmp_path / version, version)
        done = subprocess.run(
            ["make", "-s", "go", f"GO_BIN={folder}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert (done.returncode == 0) is ok, (version, done.stderr)
        if not ok:
            assert f"at {folder}/go is older than the {want}" in done.stderr


def test_make_test_checks_go_and_test_unit_leaves_go_tests_out() -> None:
    def dry(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    test = dry("test")
    assert test.index("scripts/go-check.sh") < test.index("bin/pytest")
    demo = dry("demo")  # the demo builds the control plane with Go too
    assert demo.index("scripts/go-check.sh") < demo.index("devcluster/build.sh")
    assert "and not go'" in dry("test-unit")
