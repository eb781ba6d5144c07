"""The KwokctlConfiguration `up` writes, and the `up --verbosity` flag that feeds it."""

from pathlib import Path

from devcluster.cli import build_parser
from devcluster.cluster import kwokctl_configuration

BIN, SCHED, WORK = Path("/bin-dir"), Path("/state/kube-scheduler-config.yaml"), Path("/state/kwok")
NODE_RESTRICTION = {
    "name": "kube-apiserver",
    "extraArgs": [{"key": "enable-admission-plugins", "value": "NodeRestriction"}],
}


def test_local_binaries_loopback_and_kwokctl_verbosity_by_default() -> None:
    config = kwokctl_configuration(BIN, SCHED, WORK)
    options = config["options"]
    assert isinstance(options, dict)
    assert options["bindAddress"] == "127.0.0.1"
    assert options["kubeSchedulerBinary"] == "/bin-dir/kube-scheduler"
    assert options["kubeSchedulerConfig"] == str(SCHED)
    # NodeRestriction, off by default, guards the gateway label and node-bound tokens
    assert config["componentsPatches"] == [NODE_RESTRICTION]


def test_verbosity_reaches_the_scheduler_and_the_controller_manager() -> None:
    config = kwokctl_configuration(BIN, SCHED, WORK, verbosity=4)
    patches = config["componentsPatches"]
    assert isinstance(patches, list)
    assert {p["name"]: p["extraArgs"] for p in patches} == {
        "kube-apiserver": NODE_RESTRICTION["extraArgs"],
        "kube-scheduler": [{"key": "v", "value": "4"}],
        "kube-controller-manager": [{"key": "v", "value": "4"}],
    }


def test_up_takes_a_verbosity() -> None:
    parser = build_parser()
    assert parser.parse_args(["--name", "x", "up", "--verbosity", "4"]).verbosity == 4
    assert parser.parse_args(["up"]).verbosity is None
