"""`python -m devcluster up|status|down` as a script would use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devcluster.processes import marked_processes
from devcluster.schedconfig import REPO_ROOT

pytestmark = pytest.mark.cluster


def run(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUD4IOT_DEVCLUSTER_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "devcluster", "--name", "cli", *args],
        env=env,
        cwd=REPO_ROOT,  # dev tools are not installed: `-m` finds them from the root
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_up_status_down_from_the_command_line(tmp_path: Path) -> None:
    state_dir = tmp_path / "cloud4iot-devcluster-cli"
    up = run(["up"], tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        last = up.stdout.strip().splitlines()[-1]
        assert last.startswith("KUBECONFIG="), up.stdout
        kubeconfig = Path(last.removeprefix("KUBECONFIG="))
        assert kubeconfig.is_relative_to(state_dir)
        assert yaml.safe_load(kubeconfig.read_text())["kind"] == "Config"

        status = run(["status"], tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "extender: ok" in status.stdout

        again = run(["up"], tmp_path)
        assert again.returncode == 0
        assert "already up" in again.stderr, again.stderr
        assert again.stdout.strip().splitlines()[-1] == last
    finally:
        down = run(["down"], tmp_path)
    assert down.returncode == 0, down.stderr
    assert marked_processes(state_dir) == []
    assert not state_dir.exists()
    after = run(["status"], tmp_path)
    assert after.returncode == 1
    assert "not up" in after.stderr
