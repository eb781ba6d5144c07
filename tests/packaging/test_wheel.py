"""The wheel as an admin installs it: it carries the shipped policy (so the CLI works from
any directory), every console script answers --version, and a console script whose extra
is not installed exits at once with one line naming the install command.

The installs are real: the wheel built from this tree, installed with pip into fresh
virtual environments whose other packages are this run's own, minus one extra's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from cloud4iot.buildinfo import extra_requirements

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "manifests" / "policy" / "policy.yaml"
SCRIPTS = ("cloud4iot", "cloud4iot-extender", "cloud4iot-rebalancer", "cloud4iot-gateway-monitor")


# What the Dockerfiles copy into their build stage (tests/layout checks their COPY sets):
# the wheel is built from these alone, never from a tree with a stale build/ folder.
PACKAGES = tuple(
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
)
SOURCES = ("pyproject.toml", "README.md", *PACKAGES)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    (src / "manifests" / "policy").mkdir(parents=True)
    shutil.copy2(POLICY, src / "manifests" / "policy" / "policy.yaml")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("cloud4iot_placement-*.whl")
    return whl


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _install_without(tmp: Path, wheel: Path, extra: str) -> Path:
    """A fresh venv holding this run's packages minus `extra`'s, plus the wheel: the
    equivalent of `pip install 'cloud4iot-placement[<the other extra>]'`. Returns bin/."""
    venv = tmp / f"without-{extra}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    dropped = {_norm(n) for n in extra_requirements(extra)}
    assert dropped, f"no requirements found for extra {extra}"
    # Our own editable install and the dropped distributions stay out; import names of
    # the dropped ones match their distribution names (bleak, dbus_fast, cachetools,
    # prometheus_api_client, cryptography).
    dropped |= {"cloud4iot_placement", "__editable__", "_cloud4iot_placement_editable"}
    ours = {*PACKAGES, "devcluster", "demo", "bench", "tests"}
    src, dst = _site_packages(Path(sys.executable)), _site_packages(venv / "bin" / "python")
    for entry in src.iterdir():
        stem = _norm(entry.name.split("-", 1)[0].removesuffix(".py").removesuffix(".pth"))
        if stem in dropped or stem in ours or any(stem.startswith(d) for d in dropped):
            continue
        if entry.suffix == ".pth" and "editable" in entry.name:
            continue
        (dst / entry.name).symlink_to(entry)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("installs")
    return {
        "extender": _install_without(tmp, wheel, "gateway"),
        "gateway": _install_without(tmp, wheel, "extender"),
    }


def test_the_wheel_carries_the_shipped_policy_as_a_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "cloud4iot/policy/default.yaml" in names
        assert z.read("cloud4iot/policy/default.yaml") == POLICY.read_bytes()
    # The product only: no dev tool in the wheel.
    assert not {n.split("/", 1)[0] for n in names} & {"devcluster", "demo", "bench", "tests"}


def test_policies_default_is_the_manifests_policy() -> None:
    """One file: policies/default.yaml and the package's copy link to manifests/policy/."""
    for link in (
        ROOT / "policies" / "default.yaml",
        ROOT / "cloud4iot" / "policy" / "default.yaml",
    ):
        assert link.is_symlink()
        assert link.resolve() == POLICY.resolve()


def test_simulate_works_from_any_directory(installs: dict[str, Path], tmp_path: Path) -> None:
    examples = ROOT / "examples" / "simulate"
    out = subprocess.run(
        [
            str(installs["extender"] / "cloud4iot"),
            "simulate",
            "-o",
            "json",
            "--state",
            str(examples / "cluster.yaml"),
            "--pod",
            str(examples / "pod-mhealth.yaml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"policy": "default@' in out.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_version(installs: dict[str, Path], script: str) -> None:
    out = subprocess.run(
        [str(installs["extender"] / script), "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{script} 0.1.0 (cloud4iot-placement, Python ")


@pytest.mark.parametrize(
    ("install", "argv", "extra"),
    [
        ("extender", ["cloud4iot-gateway-monitor", "--node", "gw"], "gateway"),
        ("gateway", ["cloud4iot-extender"], "extender"),
        ("gateway", ["cloud4iot-rebalancer", "--kubeconfig", "/nonexistent"], "extender"),
        ("gateway", ["cloud4iot", "simulate", "--state", "s", "--pod", "p"], "extender"),
    ],
)
def test_a_script_without_its_extra_exits_with_one_line(
    installs: dict[str, Path], install: str, argv: list[str], extra: str
) -> None:
    out = subprocess.run(
        [str(installs[install] / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].endswith(f"install cloud4iot-placement[{extra}]")


def test_what_needs_no_extra_runs_without_it(installs: dict[str, Path]) -> None:
    """check-policy is core: it runs on a gateway-only install."""
    out = subprocess.run(
        [str(installs["gateway"] / "cloud4iot"), "check-policy", str(POLICY)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["cloud4iot-extender", "--policy", "/nonexistent/policy.yaml"],
        ["cloud4iot-rebalancer", "--policy", "/nonexistent/policy.yaml", "--kubeconfig", "k"],
        ["cloud4iot-gateway-monitor", "--node", "gw", "--policy", "/nonexistent/policy.yaml"],
    ],
)
def test_a_missing_policy_is_an_error_the_process_reports(
    installs: dict[str, Path], argv: list[str]
) -> None:
    """The pod's log says why it stops; no service starts on a default it was not given."""
    bindir = installs["extender"] if argv[0] != "cloud4iot-gateway-monitor" else None
    if bindir is None:
        bindir = Path(sys.executable).parent  # every extra: the gateway's own install
    out = subprocess.run(
        [str(bindir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2, out.stderr
    assert "/nonexistent/policy.yaml" in out.stderr
    assert "Traceback" not in out.stderr
