"""The devcluster: a real control plane on 127.0.0.1, our extender, Prometheus and
a load simulator, all as local processes.

kwokctl (binary runtime, our locally built binaries) runs etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok-controller; this module runs
the rest and keeps what it needs to find everything again in `state.json`, so
`up`, `status` and `down` can be separate commands.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from kubernetes import client

from cloud4iot.policy.loader import load_policy
from devcluster import kube, prometheus
from devcluster.binaries import require_binaries
from devcluster.certs import MtlsSet, Pair, make_mtls_set
from devcluster.processes import (
    MARKER_ENV,
    free_port,
    http_ok,
    is_alive,
    marked_processes,
    start_detached,
    stop_processes,
    wait_http_ok,
)
from devcluster.schedconfig import REPO_ROOT, SchedulerTls, write_scheduler_config
from devcluster.supervisor import Book, Supervisor, locked
from devcluster.topology import DEFAULT_TOPOLOGY, load_topology
from extender.admission.tier_affinity import render as render_tier_affinity

DEFAULT_POLICY = REPO_ROOT / "policies" / "default.yaml"
DEVICE_CRD = REPO_ROOT / "manifests" / "crd" / "devices.cloud4iot.io.yaml"
REPORT_CRD = REPO_ROOT / "manifests" / "crd" / "gatewayreports.cloud4iot.io.yaml"
CLASS_CRD = REPO_ROOT / "manifests" / "crd" / "deviceclasses.cloud4iot.io.yaml"
# Who may write which sighting (the gateway monitors' ServiceAccount only; the
# admin kubeconfig that tests and the demo's monitors use is not constrained).
REPORT_ADMISSION = REPO_ROOT / "manifests/gateway-monitor/admission/report-admission.yaml"
NODE_TIER_ADMISSION = REPO_ROOT / "manifests/placement/node-tier/node-tier-admission.yaml"
CONTROLLER_WRITES = REPO_ROOT / "manifests/placement/controller-writes"
CONTROLLER_WRITES_ADMISSION = (
    CONTROLLER_WRITES / "extender-writes.yaml",
    CONTROLLER_WRITES / "rebalancer-writes.yaml",
)
NARROWING_WEBHOOK = REPO_ROOT / "manifests" / "placement" / "extender" / "narrowing-webhook.yaml"
KUBE_VERSION = "v1.36.3"
GATEWAY_NAMESPACE = "cloud4iot-gateway"
# PromQL range selectors in a policy, in seconds or minutes.
RANGE = re.compile(r"\[(\d+)([sm])\]")
# `up` waits at most this long for Prometheus history.
MAX_RATE_WINDOW_S = 120

Log = Callable[[str], None]


def default_state_root() -> Path:
    override = os.environ.get("CLOUD4IOT_DEVCLUSTER_ROOT")
    if override:
        return Path(override)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir) if runtime_dir and os.path.isdir(runtime_dir) else Path("/tmp")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Components whose klog verbosity `verbosity` raises (the two that run informers
# and queues we look into when something is slow).
VERBOSE_COMPONENTS = ("kube-scheduler", "kube-controller-manager")


def kwokctl_configuration(
    bin_dir: Path, sched_config: Path, kwok_workdir: Path, verbosity: int | None = None
) -> dict[str, object]:
    """The KwokctlConfiguration `up` hands to `kwokctl create cluster`."""
    options = {
        "runtime": "binary",
        # kwokctl's default is 0.0.0.0 and it has no flag for this.
        "bindAddress": "127.0.0.1",
        "kubeVersion": KUBE_VERSION,
        "etcdBinary": str(bin_dir / "etcd"),
        "kubeApiserverBinary": str(bin_dir / "kube-apiserver"),
        "kubeControllerManagerBinary": str(bin_dir / "kube-controller-manager"),
        "kubeSchedulerBinary": str(bin_dir / "kube-scheduler"),
        "kwokControllerBinary": str(bin_dir / "kwok"),
        "kubeSchedulerConfig": str(sched_config),
        "cacheDir": str(kwok_workdir / "cache"),
        "disableQPSLimits": True,
        # kwokctl's defaults on a secure port, spelled out: RBAC (the gateway
        # monitors' least privilege) and admission (the sighting policy,
        # ServiceAccount token binding) are what the tests rely on. The
        # node claim of pod-bound tokens needs no feature gate on v1.36
        # (ServiceAccountTokenPodNodeInfo is GA and locked on since 1.32).
        "kubeAuthorization": True,
        "kubeAdmission": True,
    }
    config: dict[str, object] = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
    }
    # NodeRestriction is off by default in kube-apiserver, and "only gateways vote"
    # rests on it: it keeps kubelets from setting node-restriction.kubernetes.io/
    # labels on their Node (the gateway label) and from minting tokens bound to pods
    # of other nodes (a gateway writing another's report). Real clusters run it; so do
    # we (found in review, 2026-12-07: a kubelet here labelled itself a gateway).
    patches: list[dict[str, object]] = [
        {
            "name": "kube-apiserver",
            "extraArgs": [{"key": "enable-admission-plugins", "value": "NodeRestriction"}],
        }
    ]
    if verbosity is not None:
        # kwokctl appends each extra arg as --key=value after its own; klog takes the last.
        patches += [
            {"name": name, "extraArgs": [{"key": "v", "value": str(verbosity)}]}
            for name in VERBOSE_COMPONENTS
        ]
    config["componentsPatches"] = patches
    return config


@dataclass
class Component:
    """A process the launcher runs itself (kwokctl runs the control plane)."""

    argv: list[str]
    log: str
    health_url: str
    pid: int | None = None


@dataclass
class State:
    name: str
    kubeconfig: str
    bin_dir: str
    ports: dict[str, int]
    components: dict[str, Component] = field(default_factory=dict)
    started_at: float = 0.0
    supervisor_pid: int | None = None  # devcluster.supervisor: restarts dead processes
    # The extender serves mutual TLS (see Devcluster.tls).
    tls: bool = False
    # The admission-narrowing webhook is installed (see Devcluster.narrowing).
    narrowing: bool = False

    @classmethod
    def load(cls, path: Path) -> State:
        raw = json.loads(path.read_text())
        raw["components"] = {k: Component(**v) for k, v in raw["components"].items()}
        return cls(**raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


class DevclusterError(RuntimeError):
    pass


class Devcluster:
    """One named local cluster; its files live in `<state root>/cloud4iot-devcluster-<name>`."""

    def __init__(
        self,
        name: str = "dev",
        *,
        state_root: Path | None = None,
        topology: Path = DEFAULT_TOPOLOGY,
        policy: Path = DEFAULT_POLICY,
        with_extender: bool = True,
        with_rebalancer: bool = True,
        follow_pods: bool = True,
        tls: bool = False,
        tier_affinity: bool = True,
        narrowing: bool = True,
        candidates: int | None = None,
        sighting_admission: bool = True,
        default_scheduler_only: bool = False,
        verbosity: int | None = None,
        scrape_interval_s: float = prometheus.SCRAPE_INTERVAL_S,
        log: Log = _stderr,
    ) -> None:
        self.name = name
        self.state_dir = (state_root or default_state_root()) / f"cloud4iot-devcluster-{name}"
        self.topology = topology
        self.policy = policy
        self.with_extender = with_extender
        # The rebalancer scores with the extender's scorer and policy: one needs the other.
        self.with_rebalancer = with_extender and with_rebalancer
        self.follow_pods = follow_pods
        # Mutual TLS between kube-scheduler and the extender: certificates made at
        # `up` (devcluster.certs), the extender on HTTPS requiring a client
        # certificate, the scheduler config with an https urlPrefix and tlsConfig.
        # The extender's health, readiness and metrics move to a plain port.
        self.tls = tls
        # The policy's tier restrictions as pods' node affinity, applied by
        # kube-scheduler in Go before the extender (manifests/placement/scheduler/
        # tier-affinity.yaml, rendered from this cluster's policy). Off: every
        # node reaches the extender (a benchmark's comparison).
        self.tier_affinity = with_extender and tier_affinity
        # Admission narrowing (extender/admission): the extender also serves /admit
        # over HTTPS (the devcluster's CA), and manifests/placement/extender/narrowing-webhook.yaml
        # is installed pointing at it, so new pods of our scheduler are pinned to the
        # scorer's best nodes.
        self.narrowing = with_extender and narrowing
        # Nodes a narrowed pod is pinned to (the extender's --candidates; None: its default).
        self.candidates = candidates
        # The gateway-sighting ValidatingAdmissionPolicy; off when a test installs the
        # manifests itself (tests/install applies them with server-side apply).
        self.sighting_admission = sighting_admission
        # Without an extender: the kube-scheduler serves only default-scheduler, elected
        # on kube-system/kube-scheduler as in a real cluster (tests/install brings ours).
        self.default_scheduler_only = default_scheduler_only and not with_extender
        # klog -v of kube-scheduler and kube-controller-manager (None: kwokctl's default).
        self.verbosity = verbosity
        # Prometheus's scrape interval. 1 s shows a load change within seconds;
        # thousands of nodes need longer (the load simulator's page grows with
        # them; BENCHMARKS.md, "The real kube-scheduler's throughput").
        self.scrape_interval_s = scrape_interval_s
        self._log = log

    # --- where things are -------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kwok_workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def kubeconfig(self) -> Path:
        return self.kwok_workdir / "clusters" / self.name / "kubeconfig.yaml"

    def state(self) -> State:
        if not self.state_file.exists():
            raise DevclusterError(f"devcluster {self.name!r} is not up (no {self.state_file})")
        return State.load(self.state_file)

    def _url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.state().ports[component]}"

    @property
    def extender_url(self) -> str:
        """The webhook: https (client certificate `tls_files.client`) with `tls`."""
        if self.state().tls:
            return f"https://127.0.0.1:{self.state().ports['extender']}"
        return self._url("extender")

    @property
    def extender_health_url(self) -> str:
        """Where /healthz, /readyz and /metrics answer over plain HTTP."""
        state = self.state()
        return self._url("extender-health" if state.tls else "extender")

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def tls_files(self) -> MtlsSet:
        """The CA, the extender's server pair and kube-scheduler's client pair."""
        d = self.tls_dir
        return MtlsSet(
            ca=Pair(d / "ca.crt", d / "ca.key"),
            server=Pair(d / "extender.crt", d / "extender.key"),
            client=Pair(d / "kube-scheduler.crt", d / "kube-scheduler.key"),
        )

    @property
    def scheduler_metrics_url(self) -> str:
        """kube-scheduler's /metrics: HTTPS with kwokctl's self-signed certificate,
        readable without credentials (kwokctl starts it with
        --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics)."""
        pid_file = self.kwok_workdir / "clusters" / self.name / "pids" / "kube-scheduler.pid"
        try:
            pid = int(pid_file.read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError) as err:
            raise DevclusterError(f"kube-scheduler of {self.name!r} is not running") from err
        for arg in argv:
            if arg.startswith(b"--secure-port="):
                return f"https://127.0.0.1:{int(arg.split(b'=', 1)[1])}/metrics"
        raise DevclusterError(f"kube-scheduler of {self.name!r} has no --secure-port")

    @property
    def rebalancer_url(self) -> str:
        return self._url("rebalancer")

    @property
    def policy_file(self) -> Path:
        """The cluster's own copy of the policy, read (and hot-reloaded) by the
        extender and the rebalancer: `write_policy` changes it for both."""
        return self.state_dir / "policy.yaml"

    def write_policy(self, text: str) -> None:
        tmp = self.policy_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.policy_file)

    @property
    def prometheus_url(self) -> str:
        return self._url("prometheus")

    @property
    def loadsim_url(self) -> str:
        return self._url("loadsim")

    def process_env(self) -> dict[str, str]:
        """The environment of every process of this cluster; a process started
        with it (e.g. a test restarting the apiserver) is stopped by `down`."""
        return self._env()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[MARKER_ENV] = str(self.state_dir)
        # Children that default to a kubeconfig get ours, never ~/.kube/config.
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KWOK_WORKDIR"] = str(self.kwok_workdir)
        env["KWOK_RUNTIME"] = "binary"
        # kwokctl keeps an HTTP cache under ~/.kube/cache; keep it in our state.
        env["HOME"] = str(self.state_dir / "home")
        return env

    # --- up -----------------------------------------------------------------

    def up(self) -> State:
        """Start everything and wait until it serves; idempotent when already up."""
        if self.state_file.exists():
            if self._healthy():
                self._log(f"devcluster {self.name!r} is already up")
                return self.state()
            self._log(f"devcluster {self.name!r} is partly down; restarting it")
            self.down()
        bin_dir = require_binaries()
        nodes = load_topology(self.topology)
        if self.with_extender and not self.policy.is_file():
            raise DevclusterError(f"extender policy {self.policy} not found")
        (self.state_dir / "home").mkdir(parents=True, exist_ok=True)
        ports = {c: free_port() for c in ("extender", "rebalancer", "loadsim", "prometheus")}
        tls = self.tls and self.with_extender
        if tls:
            ports["extender-health"] = free_port()
        if self.narrowing:
            ports["admission"] = free_port()
        if tls or self.narrowing:
            made = make_mtls_set(self.tls_dir)
            assert made == self.tls_files, (made, self.tls_files)
        state = State(
            name=self.name,
            kubeconfig=str(self.kubeconfig),
            bin_dir=str(bin_dir),
            ports=ports,
            started_at=time.time(),
            tls=tls,
            narrowing=self.narrowing,
        )
        state.save(self.state_file)
        if self.with_extender:
            shutil.copyfile(self.policy, self.policy_file)
        start = time.monotonic()
        try:
            self._create_control_plane(state, bin_dir)
            # Prometheus history is what `up` waits for longest: start
            # collecting it first.
            self._start(state, "loadsim", self._loadsim_component(state))
            self._start(state, "prometheus", self._prometheus_component(state))
            api = kube.api_client(self.kubeconfig)
            with api:
                kube.wait_control_plane(api)
                kube.install_crd(api, DEVICE_CRD)
                kube.install_crd(api, REPORT_CRD)
                # The gateway monitors' namespace: their liveness Leases, which the
                # extender and the rebalancer watch (docs/gateway-writes.md, 2).
                kube.ensure_namespace(api, GATEWAY_NAMESPACE)
                kube.install_crd(api, CLASS_CRD)
                if self.sighting_admission:  # (off where the manifests bring them)
                    kube.install_admission_policies(api, REPORT_ADMISSION)
                    # Kubelets may not label their own node's tier (the nodes here are
                    # made by kwok and us as admins, which it does not constrain).
                    kube.install_admission_policies(api, NODE_TIER_ADMISSION)
                    # What the extender's and the rebalancer's ServiceAccounts may write
                    # (the devcluster runs both as admin, which they do not constrain).
                    for path in CONTROLLER_WRITES_ADMISSION:
                        kube.install_admission_policies(api, path)
                if self.tier_affinity:
                    self.install_tier_affinity(api)
                started = time.monotonic()
                kube.apply_nodes(api, nodes)
                self._log(f"{len(nodes)} nodes created in {time.monotonic() - started:.1f}s")
                self._log(
                    "control plane up, Device CRD established, admission policies"
                    " installed, nodes created"
                )
                # Thousands of nodes: more time for every wait (60 s at the demo's 5).
                slack = 60 + len(nodes) / 25
                if self.with_extender:
                    self._start(state, "extender", self._extender_component(state), slack)
                if self.narrowing:
                    self.install_narrowing(api)
                if self.with_rebalancer:
                    self._start(state, "rebalancer", self._rebalancer_component(state), slack)
                kube.wait_nodes_ready(api, [n.name for n in nodes], timeout_s=slack)
                window = self._rate_window_s()
                self._log(f"waiting for Prometheus to fill a {window}s rate window")
                prometheus.wait_for_history(
                    f"http://127.0.0.1:{ports['prometheus']}",
                    [n.name for n in nodes],
                    window,
                    timeout_s=window + slack + 2 * self.scrape_interval_s,
                    interval_s=self.scrape_interval_s,
                )
            self._start_supervisor(state)
        except BaseException:
            self._log(f"devcluster {self.name!r} failed to start; tearing it down")
            self.down(keep_logs=True)
            raise
        self._log(f"devcluster {self.name!r} up in {time.monotonic() - start:.1f}s")
        return state

    def install_narrowing(self, api: client.ApiClient) -> list[str]:
        """manifests/placement/extender/narrowing-webhook.yaml, pointed at this cluster's extender
        (a URL on loopback) and trusting the devcluster's CA; replaces an installed one."""
        port = self.state().ports["admission"]
        ca = base64.b64encode(self.tls_files.ca.cert.read_bytes()).decode()
        doc = yaml.safe_load(NARROWING_WEBHOOK.read_text())
        for hook in doc["webhooks"]:
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/admit", "caBundle": ca}
        return kube.install_admission_documents(api, yaml.safe_dump(doc))

    def install_tier_affinity(self, api: client.ApiClient) -> list[str]:
        """The tier-affinity MutatingAdmissionPolicy rendered from the cluster's policy
        (as `cloud4iot tier-affinity` does); replaces an installed one."""
        loaded = load_policy(self.policy_file)
        return kube.install_admission_documents(
            api, render_tier_affinity(loaded.policy, str(self.policy))
        )

    def _rate_window_s(self) -> int:
        """The longest PromQL range ("[30s]", "[1m]") in the extender's policy.

        Until Prometheus holds that much history, a rate over it sees only part
        of the window and reads far too high a load for an idle node (0.75
        instead of 0.05 for a [30s] window 6 s after start).
        """
        # A rate needs two scrapes in its window, whatever the scrape interval.
        windows = [prometheus.RATE_WINDOW_S, math.ceil(2 * self.scrape_interval_s)]
        if self.with_extender:
            text = self.policy.read_text()
            windows += [int(n) * (60 if unit == "m" else 1) for n, unit in RANGE.findall(text)]
        return min(max(windows) + 1, MAX_RATE_WINDOW_S)

    def _create_control_plane(self, state: State, bin_dir: Path) -> None:
        sched_config = self.state_dir / "kube-scheduler-config.yaml"
        if self.with_extender and state.tls:
            files = self.tls_files
            write_scheduler_config(
                f"https://127.0.0.1:{state.ports['extender']}",
                sched_config,
                tls=SchedulerTls(cert=files.client.cert, key=files.client.key, ca=files.ca.cert),
                score_every_node=not state.narrowing,
            )
        elif self.with_extender:
            write_scheduler_config(
                f"http://127.0.0.1:{state.ports['extender']}",
                sched_config,
                score_every_node=not state.narrowing,
            )
        else:
            write_scheduler_config(None, sched_config, default_only=self.default_scheduler_only)
        kwokctl_config = self.state_dir / "kwokctl.yaml"
        kwokctl_config.write_text(
            yaml.safe_dump(
                kwokctl_configuration(bin_dir, sched_config, self.kwok_workdir, self.verbosity)
            )
        )
        log = self.state_dir / "logs" / "kwokctl.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(bin_dir / "kwokctl"),
            "--name",
            self.name,
            "-c",
            str(kwokctl_config),
            "create",
            "cluster",
            # An empty path: do not add a context to ~/.kube/config.
            "--kubeconfig",
            "",
            "--timeout",
            "3m",
        ]
        self._log("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
        with open(log, "ab") as out:
            result = subprocess.run(
                argv, env=self._env(), stdout=out, stderr=subprocess.STDOUT, timeout=240
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise DevclusterError(f"kwokctl create cluster failed:\n{tail}")

    def _component_log(self, name: str) -> str:
        return str(self.state_dir / "logs" / f"{name}.log")

    def _loadsim_component(self, state: State) -> Component:
        argv = [
            sys.executable,
            "-m",
            "devcluster.loadsim",
            "--topology",
            str(self.topology),
            "--port",
            str(state.ports["loadsim"]),
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        if self.follow_pods:
            argv.append("--follow-pods")
        url = f"http://127.0.0.1:{state.ports['loadsim']}/healthz"
        return Component(argv=argv, log=self._component_log("loadsim"), health_url=url)

    def _prometheus_component(self, state: State) -> Component:
        prom_dir = self.state_dir / "prometheus"
        prom_dir.mkdir(exist_ok=True)
        jobs = {"loadsim": [f"127.0.0.1:{state.ports['loadsim']}"]}
        if self.with_extender:
            metrics_port = state.ports["extender-health" if state.tls else "extender"]
            jobs["cloud4iot-extender"] = [f"127.0.0.1:{metrics_port}"]
        if self.with_rebalancer:
            jobs["cloud4iot-rebalancer"] = [f"127.0.0.1:{state.ports['rebalancer']}"]
        config = prometheus.write_config(prom_dir / "prometheus.yml", jobs, self.scrape_interval_s)
        port = state.ports["prometheus"]
        return Component(
            argv=prometheus.prometheus_argv(config, prom_dir / "data", port),
            log=self._component_log("prometheus"),
            health_url=prometheus.ready_url(port),
        )

    def _extender_component(self, state: State) -> Component:
        component = self._service_component(state, "extender", "extender")
        if state.tls:
            files, health_port = self.tls_files, state.ports["extender-health"]
            component.argv += [
                "--tls-cert",
                str(files.server.cert),
                "--tls-key",
                str(files.server.key),
                "--client-ca",
                str(files.ca.cert),
                "--health-port",
                str(health_port),
            ]
            component.health_url = f"http://127.0.0.1:{health_port}/readyz"
        if state.narrowing:
            files = self.tls_files
            component.argv += [
                "--admission-port",
                str(state.ports["admission"]),
                "--admission-cert",
                str(files.server.cert),
                "--admission-key",
                str(files.server.key),
            ]
            if self.candidates is not None:
                component.argv += ["--candidates", str(self.candidates)]
        return component

    def _rebalancer_component(self, state: State) -> Component:
        return self._service_component(state, "rebalancer", "rebalancer")

    def _service_component(self, state: State, name: str, module: str) -> Component:
        """One of our services on the cluster's policy copy, its kubeconfig and Prometheus."""
        port = state.ports[name]
        argv = [
            sys.executable,
            "-m",
            module,
            "--policy",
            str(self.policy_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--kubeconfig",
            str(self.kubeconfig),
            "--prometheus-url",
            f"http://127.0.0.1:{state.ports['prometheus']}",
        ]
        return Component(
            argv=argv,
            log=self._component_log(name),
            health_url=f"http://127.0.0.1:{port}/readyz",
        )

    def _start(self, state: State, name: str, component: Component, timeout_s: float = 60) -> None:
        component.pid = start_detached(
            component.argv, Path(component.log), self._env(), cwd=REPO_ROOT
        )
        state.components[name] = component
        state.save(self.state_file)
        wait_http_ok(component.health_url, timeout_s, pid=component.pid, log=Path(component.log))
        self._log(f"{name} ready (pid {component.pid})")

    # --- one component at a time (tests stop and restart the extender) ------

    def stop_component(self, name: str) -> None:
        """Stop one of our processes on purpose: the supervisor leaves it stopped."""
        with locked(self.state_dir):
            state = self.state()
            component = state.components[name]
            if component.pid is not None:
                stop_processes([component.pid])
            component.pid = None
            state.save(self.state_file)

    def start_component(self, name: str, timeout_s: float = 60) -> None:
        with locked(self.state_dir):
            state = self.state()
            component = state.components[name]
            if component.pid is not None and is_alive(component.pid):
                return
            component.pid = start_detached(
                component.argv, Path(component.log), self._env(), cwd=REPO_ROOT
            )
            state.save(self.state_file)
        wait_http_ok(component.health_url, timeout_s, pid=component.pid, log=Path(component.log))
        self._log(f"{name} ready (pid {component.pid})")

    def restart(self, name: str, timeout_s: float = 60) -> int:
        """Restart one component now (control plane, Prometheus, load simulator, or ours);
        returns its new pid."""
        if name in self.state().components and name not in Book.load(self._book).recipes:
            self.stop_component(name)
            self.start_component(name, timeout_s)
            pid = self.state().components[name].pid
            assert pid is not None
            return pid
        recipe = Book.load(self._book).recipes.get(name)
        if recipe is None:
            raise DevclusterError(f"no component {name!r} (the supervisor knows no recipe for it)")
        supervisor = Supervisor(self.state_dir, self.kwok_workdir / "clusters" / self.name)
        with locked(self.state_dir):
            old = supervisor.pid_of(recipe)
            if old is not None:
                stop_processes([old])
            pid = supervisor.start(recipe)
        return pid

    @property
    def _book(self) -> Path:
        return self.state_dir / "supervisor.json"

    def restarts(self) -> dict[str, int]:
        """How many times the supervisor restarted each component since `up`."""
        return dict(Book.load(self._book).restarts)

    def _start_supervisor(self, state: State) -> None:
        argv = [
            sys.executable,
            "-m",
            "devcluster.supervisor",
            "--state-dir",
            str(self.state_dir),
            "--cluster-dir",
            str(self.kwok_workdir / "clusters" / self.name),
        ]
        log = self.state_dir / "logs" / "supervisor.log"
        with locked(self.state_dir):
            state.supervisor_pid = start_detached(argv, log, self._env(), cwd=REPO_ROOT)
            state.save(self.state_file)
        # It reads the recipes at start: wait until it has, so a death right after
        # `up` is already covered.
        deadline = time.monotonic() + 30
        while not Book.load(self._book).recipes:
            if time.monotonic() > deadline or not is_alive(state.supervisor_pid):
                raise DevclusterError(f"the supervisor did not start; see {log}")
            time.sleep(0.1)

    def stop_extender(self) -> None:
        self.stop_component("extender")

    def start_extender(self) -> None:
        self.start_component("extender")

    # --- load of the fake nodes ---------------------------------------------

    def set_load(self, node: str, cpu: float | None = None, memory: float | None = None) -> None:
        body = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
        self._loadsim_request("PUT", f"/load/{node}", body)

    def clear_load(self, node: str | None = None) -> None:
        self._loadsim_request("DELETE", "/load" if node is None else f"/load/{node}")

    def _loadsim_request(
        self, method: str, path: str, body: dict[str, float] | None = None
    ) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.loadsim_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    # --- status and down ----------------------------------------------------

    def status(self) -> dict[str, bool]:
        """Whether each part runs: kwokctl's components (from its pid files; the
        apiserver must also answer), then ours (they must answer their health URL)."""
        state = self.state()
        result = {}
        for pid_file in sorted((self.kwok_workdir / "clusters" / self.name / "pids").glob("*.pid")):
            try:
                alive = is_alive(int(pid_file.read_text().strip()))
            except (OSError, ValueError):
                alive = False
            result[pid_file.stem] = alive
        result["kube-apiserver"] = result.get("kube-apiserver", False) and self._apiserver_ok()
        for name, component in state.components.items():
            alive = component.pid is not None and is_alive(component.pid)
            result[name] = alive and http_ok(component.health_url)
        result["supervisor"] = state.supervisor_pid is not None and is_alive(state.supervisor_pid)
        return result

    def _apiserver_ok(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        try:
            with kube.api_client(self.kubeconfig) as api:
                kube.wait_control_plane(api, timeout_s=0)
            return True
        except Exception:
            return False

    def _healthy(self, attempts: int = 3) -> bool:
        # A busy machine can make one health request time out; never tear a
        # working cluster down for that.
        for attempt in range(attempts):
            if all(self.status().values()):
                return True
            if attempt + 1 < attempts:
                time.sleep(1)
        return False

    def leftover_processes(self) -> list[int]:
        return marked_processes(self.state_dir)

    def down(self, keep_logs: bool = False) -> None:
        """Stop every process of this cluster and remove its files."""
        control_plane_logs = self.kwok_workdir / "clusters" / self.name / "logs"
        if keep_logs and control_plane_logs.is_dir():
            shutil.copytree(
                control_plane_logs, self.state_dir / "logs" / "control-plane", dirs_exist_ok=True
            )
        if self.state_file.exists():
            state = self.state()
            if state.supervisor_pid is not None:  # first: nothing may restart what goes now
                stop_processes([state.supervisor_pid])
            pids = [c.pid for c in state.components.values() if c.pid is not None]
            stop_processes(pids)
            kwokctl = Path(state.bin_dir) / "kwokctl"
            if kwokctl.exists() and (self.kwok_workdir / "clusters" / self.name).exists():
                subprocess.run(
                    # No --kubeconfig: an empty one is refused here, and the
                    # default lies under our HOME, the state directory.
                    [str(kwokctl), "--name", self.name, "delete", "cluster"],
                    env=self._env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=120,
                    check=False,
                )
        # Whatever is still marked as ours (a crashed kwokctl, a lost pid) goes too.
        stop_processes(marked_processes(self.state_dir))
        leftover = marked_processes(self.state_dir)
        if leftover:
            raise DevclusterError(f"processes {leftover} of {self.state_dir} survived SIGKILL")
        if keep_logs:
            for entry in self.state_dir.iterdir() if self.state_dir.exists() else []:
                if entry.name != "logs":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)
