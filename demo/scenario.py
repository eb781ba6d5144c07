"""The main demo: roaming, offloading, confidentiality and a mode switch on a real cluster.

Everything is real except the radios and the kubelets: the devcluster's
kube-apiserver, kube-scheduler (profile `cloud4iot-scheduler`) calling our
extender, kube-controller-manager rolling Deployments out, Prometheus scraping
the load simulator, and two `cloud4iot-gateway-monitor` processes replaying BLE
advert traces of a patient walking from home to the hospital. Nothing in this
script moves a pod: the rebalancer does, the Kubernetes way (a rollout of the
Deployment, so the new replica is placed by the scheduler through the extender
and the old one goes once the new one is Ready), and says why in an Event.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from kubernetes import client

from bench import synthetic_traces
from demo import opening
from demo.omh_fleet import Fleet, Ingest, Tally
from demo.timeline import Function, Recorder, Timeline, save
from devcluster import kube
from devcluster.cluster import Devcluster
from gateway_monitor import traces

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
GROUP, VERSION, PLURAL = "cloud4iot.io", "v1alpha1", "devices"
PATIENT, ENGINE = "patient-42-hr", "truck-7-engine"
ADDRESS = "C0:FF:EE:00:00:42"  # the patient's strap
OMH_DEPLOYMENT = "omh-consolidator-42"
SPEED = 3.0  # trace seconds per real second
DEPART = 90.0  # trace seconds: when the patient leaves home (30 s into the replay)
OMH_SELECTOR = "app.kubernetes.io/name=omh-consolidator"
DIAG_SELECTOR = "app.kubernetes.io/name=engine-diagnostic"
# What the timeline follows: the demo's devices and functions (namespace, pod selector).
FUNCTIONS = {
    "omh-consolidator": Function("health", OMH_SELECTOR),
    "engine-diagnostic": Function("fleet", DIAG_SELECTOR),
    **{
        name: Function(opening.NAMESPACE, selector, workload=deployment)
        for name, (selector, deployment) in opening.FUNCTIONS.items()
    },
}
# Seconds the engine diagnostic runs in normal mode before the switch, and the
# recording goes on after the last step: long enough to show on the timeline.
HOLD = 5.0
TIMELINE = Path("demo-timeline.png")  # `make demo` writes it (and .json, .html) here
T = TypeVar("T")


class DemoError(RuntimeError):
    """A step did not reach its expected state in time; the message says which."""


@dataclass
class Step:
    name: str
    node: str
    seconds: float
    detail: str = ""


@dataclass
class Result:
    steps: list[Step] = field(default_factory=list)
    timeline: Timeline | None = None  # what the recorder saw during the run
    batches: Tally | None = None  # the consolidators' batches against what the cloud got
    switched_off: float | None = None  # when the opening's strap went silent (epoch)

    def node_of(self, name: str) -> str:
        return next(s.node for s in self.steps if s.name == name)


Say = Callable[[str], None]


def wait(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(client.ApiException):
            value = probe()
            if value:
                return value
        time.sleep(0.25)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def write_traces(folder: Path) -> dict[str, Path]:
    """Gateway-side advert traces: the patient walks home -> hospital (20 m apart,
    leaving after 90 s); the engine sensor stays next to gw-home the whole time."""
    walk = synthetic_traces.Walk(start=1.0, end=19.0, depart=DEPART, speed=1.0)
    home, hospital = synthetic_traces.walk("C0:FF:EE:00:00:42", [0.0, 20.0], walk, duration=600.0)
    engine = synthetic_traces.stationary("C0:FF:EE:00:00:07", -62.0, duration=600.0, seed=9)
    merged = sorted(home + engine, key=lambda r: r.t)
    files = {"gw-home": folder / "gw-home.jsonl", "gw-hospital": folder / "gw-hospital.jsonl"}
    traces.write_trace(files["gw-home"], merged)
    traces.write_trace(files["gw-hospital"], hospital)
    return files


@contextmanager
def gateway_monitors(cluster: Devcluster, files: dict[str, Path], logs: Path) -> Iterator[None]:
    # Local processes with the cluster's admin kubeconfig, not the DaemonSet's pod-bound
    # ServiceAccount tokens: the report admission policy does not apply to them (see
    # gateway_monitor/README.md). Each writes its node's GatewayReport, which the
    # devcluster's elected extender made for the labelled gateways.
    exe = Path(sys.executable).with_name("cloud4iot-gateway-monitor")
    procs = []
    for node, trace in files.items():
        log = open(logs / f"monitor-{node}.log", "ab")  # noqa: SIM115 - closed below
        argv = [
            str(exe),
            "--node",
            node,
            "--replay",
            str(trace),
            "--speed",
            str(SPEED),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        yield
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def apply_examples(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    for doc in yaml.safe_load_all((EXAMPLES / "devices.yaml").read_text()):
        with suppress(client.ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, doc["metadata"]["name"])
        custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, doc)
    for ns in ("health", "fleet"):
        with suppress(client.ApiException):
            kube.create_namespace(api, ns)


def meta(pod: client.V1Pod) -> client.V1ObjectMeta:
    if pod.metadata is None:
        raise DemoError("a pod without metadata")
    return pod.metadata


def nearest(api: client.ApiClient, device: str) -> str | None:
    obj: Any = client.CustomObjectsApi(api).get_cluster_custom_object(
        GROUP, VERSION, PLURAL, device
    )
    node = ((obj.get("status") or {}).get("nearest") or {}).get("node")
    return node if isinstance(node, str) else None


def running_pod(api: client.ApiClient, namespace: str, selector: str) -> client.V1Pod | None:
    pods = [
        p
        for p in kube.pods_of(api, namespace, selector)
        if kube.is_bound(p) and not kube.is_deleted(p)
    ]
    return pods[0] if len(pods) == 1 else None


# The demo runs the rebalancer's limits at demo speed (policies/README.md has the
# production defaults): moves a few seconds after the cause, not minutes. The dwell must
# outlast the walk's hand-over gap: gw-home's 1 s mean falls under the class's
# rssiThreshold (-85 dBm) ~8 trace seconds before gw-hospital's tracker claims the
# device (median of 3 at -75 dBm), 2.5-3 s at x3; with a 2 s dwell the rebalancer
# sent the consolidator to edge-1 in that gap and back 6 s later (a CI run after the
# publisher stopped holding steps). 6 s bridges it with the report interval to spare.
DEMO_REBALANCE = {"interval": "15s", "dwell": "6s", "cooldown": "20s"}
# The extender and the rebalancer refresh node load from Prometheus each on its own
# 5 s timer. A rebalancer that sees a load change first rolls a pod out which the
# scheduler then places through an extender still holding the old load (a demo run:
# Offloading gw-hospital -> edge-1, the new pod back on gw-hospital). A refresh shorter
# than the dwell lets the extender know of a change before the rebalancer acts on it.
DEMO_PROMETHEUS = {"refreshInterval": "1s"}


def demo_policy(text: str) -> str:
    doc = yaml.safe_load(text)
    doc["spec"].setdefault("rebalance", {}).update(DEMO_REBALANCE)
    doc["spec"].setdefault("prometheus", {}).update(DEMO_PROMETHEUS)
    # The opening's strap functions: the consolidator's class, held (not moved to the
    # edge) when away, so that their DeviceClass parks them.
    classes = doc["spec"]["classes"]
    classes[opening.PARK_CLASS] = dict(classes["mhealth-consolidator"], whenDeviceAway="park")
    doc["metadata"]["name"] = "demo"
    return yaml.safe_dump(doc, sort_keys=False)


def policy_in_force(url: str) -> str:
    with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
        return str(orjson.loads(resp.read()).get("policy", ""))


@contextmanager
def demo_speed(cluster: Devcluster) -> Iterator[None]:
    """The demo's rebalance timings in the cluster's policy; the original restored after."""
    original = cluster.policy_file.read_text()
    cluster.write_policy(demo_policy(original))
    try:
        for url in (cluster.extender_url, cluster.rebalancer_url):

            def in_force(url: str = url) -> bool:
                return policy_in_force(url).startswith("demo@")

            wait("the demo policy to be in force", in_force, 30)
        yield
    finally:
        cluster.write_policy(original)


def rebalancer_event(api: client.ApiClient, namespace: str, name: str, after: float) -> str | None:
    """The newest rebalancer Event on a Deployment since `after`: 'Reason: message'."""
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Deployment"
        )
        .items
    )
    ours = [
        (e.last_timestamp.timestamp(), f"{e.reason}: {e.message}")
        for e in events
        if e.source is not None
        and e.source.component == "cloud4iot-rebalancer"
        and e.last_timestamp is not None
        and e.last_timestamp.timestamp() >= after - 1
    ]
    return max(ours)[1] if ours else None


def moved(
    api: client.ApiClient,
    namespace: str,
    selector: str,
    old: client.V1Pod,
    expect: str,
    timeout: float = 120,
) -> tuple[str, float]:
    """Wait until the rebalancer has replaced `old` (the new pod alone runs: the old
    one left only after its successor was Ready); (node, seconds)."""
    start = time.monotonic()

    def replacement() -> client.V1Pod | None:
        pod = running_pod(api, namespace, selector)
        return pod if pod is not None and meta(pod).uid != meta(old).uid else None

    pod = wait(f"the rebalancer to move {selector} to {expect}", replacement, timeout)
    node = kube.node_of(pod)
    if node != expect:
        raise DemoError(f"{selector} landed on {node}, expected {expect}")
    return node, time.monotonic() - start


def why_not(cluster: Devcluster, pod: client.V1Pod | None) -> dict[str, str]:
    """Ask the extender's /explain endpoint about a pod: node -> verdict."""
    if pod is None:
        return {}
    body = client.ApiClient().sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
    req = urllib.request.Request(cluster.extender_url + "/explain", data=orjson.dumps(body))
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc = orjson.loads(resp.read())
    return {
        n["node"]: (f"score {n['score']}" if n["feasible"] else n["reason"]) for n in doc["nodes"]
    }


def opening_scene(
    cluster: Devcluster, api: client.ApiClient, say: Say, recorder: Recorder, result: Result
) -> None:
    """Step 0, the paper's opening: an unregistered strap switched on at the hospital is
    discovered and gets its functions there; switched off, they are parked (the Device
    is forgotten later: `opening_forgotten`)."""
    mark = recorder.mark
    opening.install(api)
    say("0. A new patient's strap is switched on at the hospital (nobody registered it).")
    with (
        opening.StrapRadio() as radio,
        opening.scanning_monitor(cluster, radio.bus_address, cluster.state_dir),
    ):
        radio.on = True
        start = time.monotonic()
        mark("0", "strap on")
        wait("the strap's Device", lambda: opening.device_exists(api), 60)
        say(
            f"   gw-hospital heard Heart Rate adverts from {opening.STRAP_ADDRESS} at"
            f" {opening.STRAP_RSSI} dBm (class {opening.CLASS}, arrival -70 dBm): Device"
            f" {opening.STRAP} created by the extender ({time.monotonic() - start:.1f}s)"
        )
        mark("0", "discovered")
        where = wait("the strap's functions to be bound", lambda: opening.placed(api), 60)
        nodes = set(where.values())
        node = nodes.pop() if len(nodes) == 1 else ",".join(sorted(where.values()))
        result.steps.append(Step("discovered", node, time.monotonic() - start))
        say(f"   its reader and consolidator, from the class's templates, bound to {node}")
        mark("0", "placed")
        time.sleep(HOLD)  # they run a moment: the timeline shows it
        radio.on = False
        off = time.monotonic()
        mark("0", "strap off")
        say("   switched off: gw-hospital gives it up after 30 s without an advert ...")
        wait("the strap's functions parked", lambda: opening.parked(api), 120)
        result.steps.append(Step("parked", "-", time.monotonic() - off))
        say(
            "   ... and 5 s later (the class's awayAfter) the extender parks both (scaled to"
            f" zero), {result.steps[-1].seconds:.1f}s after"
        )
        mark("0", "parked")
    result.switched_off = time.time() - (time.monotonic() - off)


def opening_forgotten(api: client.ApiClient, say: Say, recorder: Recorder, result: Result) -> None:
    """The end of the opening: the unheard strap's Device deleted after forgetAfter."""
    wait("the strap's Device forgotten", lambda: not opening.device_exists(api), 180)
    stamp = opening.event_time(api, "Forgotten") or time.time()
    since = stamp - (result.switched_off or stamp)
    result.steps.append(Step("forgotten", "-", since))
    recorder.mark("0", "forgotten", t=stamp - recorder.started_at())
    say(
        f"   (the opening's end: the strap's Device was forgotten {since:.0f}s after it was"
        " switched off, its functions with it)"
    )


def recorder_for(cluster: Devcluster) -> Recorder:
    """A timeline recorder following the demo's devices and functions."""
    return Recorder(cluster, [PATIENT, ENGINE, opening.STRAP], FUNCTIONS)


def run(cluster: Devcluster, say: Say = print, recorder: Recorder | None = None) -> Result:
    """The scenario on a running devcluster; cleans up what it created.

    `recorder` (default: a new one) samples the run for the timeline picture; the
    caller keeps it to get the timeline even when a step fails."""
    result = Result()
    recorder = recorder or recorder_for(cluster)
    mark = recorder.mark
    with kube.api_client(cluster.kubeconfig) as api, tempfile.TemporaryDirectory() as tmp:
        apply_examples(api)
        files = write_traces(Path(tmp))
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        omh, diag = OMH_SELECTOR, DIAG_SELECTOR
        ingest = Ingest()
        disks = Path(tmp) / "gateways"  # each gateway's local disk: a directory per node
        disks.mkdir()
        try:
            with demo_speed(cluster), recorder.recording():
                opening_scene(cluster, api, say, recorder, result)
                with (
                    gateway_monitors(cluster, files, cluster.state_dir),
                    Fleet(api, "health", omh, PATIENT, ADDRESS, disks, ingest, say) as fleet,
                ):
                    replay_t0 = recorder.elapsed()
                    t0 = time.monotonic()
                    say("1. Gateway monitors replay BLE adverts (x3 speed): patient 42 is at home.")
                    mark("1", "gateway monitors replay BLE adverts")
                    wait(
                        "gw-home to be nearest to the wearable",
                        lambda: nearest(api, PATIENT) == "gw-home",
                    )
                    say(
                        f"   Device {PATIENT}: nearest gateway gw-home"
                        f" ({time.monotonic() - t0:.1f}s)"
                    )

                    say("2. Deploy the patient's Open mHealth consolidator (confidential class).")
                    mark("2", "consolidator deployed")
                    kube.create_deployment(
                        api,
                        "health",
                        yaml.safe_load((EXAMPLES / "omh-consolidator.yaml").read_text()),
                    )
                    start = time.monotonic()
                    pod = wait(
                        "the consolidator to be bound", lambda: running_pod(api, "health", omh)
                    )
                    result.steps.append(Step("placed", kube.node_of(pod), time.monotonic() - start))
                    say(f"   bound to {kube.node_of(pod)} in {result.steps[-1].seconds:.1f}s")
                    for node, verdict in sorted(why_not(cluster, pod).items()):
                        say(f"     {node:<12} {verdict}")

                    def moved_by_rebalancer(old: client.V1Pod, expect: str, step: str) -> None:
                        since = time.time()
                        node, secs = moved(api, "health", omh, old, expect)
                        event = rebalancer_event(api, "health", OMH_DEPLOYMENT, since - secs)
                        result.steps.append(Step(step, node, secs, event or ""))
                        say(f"   the rebalancer rolled it out to {node} in {secs:.1f}s:")
                        say(f"     Event {event}")

                    say("3. Roaming: at t+30s the patient walks to the hospital (20 m, 6 s).")
                    say("   The cloud ingest is down from here to the end of step 5.")
                    ingest.down = True
                    # The walk is DEPART / SPEED into the replay.
                    mark("3", "patient walks to the hospital", t=replay_t0 + DEPART / SPEED)
                    wait(
                        "gw-hospital to be nearest",
                        lambda: nearest(api, PATIENT) == "gw-hospital",
                        timeout=120,
                    )
                    say(
                        f"   t+{time.monotonic() - t0:.1f}s: nearest gateway is now gw-hospital"
                        " (its advantage past the deadband summed to the switch cost)"
                    )
                    moved_by_rebalancer(pod, "gw-hospital", "roamed")

                    say("4. Offloading: gw-hospital's memory fills up (95% > the class limit 90%).")
                    pod = wait("a running consolidator", lambda: running_pod(api, "health", omh))
                    cluster.set_load("gw-hospital", memory=0.95)
                    mark("4", "gw-hospital memory 95%")
                    moved_by_rebalancer(pod, "edge-1", "offloaded")
                    say("   up, but never to the cloud:")
                    verdicts = why_not(
                        cluster,
                        wait("a running consolidator", lambda: running_pod(api, "health", omh)),
                    )
                    for n in ("cloud-1", "gw-hospital"):
                        say(f"     {n:<12} {verdicts[n]}")

                    say("5. Onloading: gw-hospital frees up again (after the 20 s demo cooldown).")
                    pod = wait("a running consolidator", lambda: running_pod(api, "health", omh))
                    cluster.clear_load("gw-hospital")
                    mark("5", "gw-hospital memory freed")
                    moved_by_rebalancer(pod, "gw-hospital", "onloaded")
                    ingest.down = False
                    say(
                        f"   the cloud ingest is back ({len(ingest.arrivals)} batches"
                        " arrived so far)"
                    )

                    say("6. Engine diagnostic: normal monitoring runs in the cloud ...")
                    mark("6", "engine diagnostic (normal)")
                    kube.create_deployment(
                        api,
                        "fleet",
                        yaml.safe_load((EXAMPLES / "engine-diagnostic.yaml").read_text()),
                    )
                    pod = wait(
                        "the diagnostic to be bound", lambda: running_pod(api, "fleet", diag)
                    )
                    result.steps.append(Step("engine-normal", kube.node_of(pod), 0.0))
                    say(f"   bound to {kube.node_of(pod)}")
                    time.sleep(HOLD)  # normal monitoring runs a moment: the timeline shows it
                    say(
                        "   ... switching to intensive monitoring rolls it out"
                        " to the gateway by the engine."
                    )
                    start = time.monotonic()
                    patch = {
                        "spec": {
                            "template": {
                                "metadata": {"annotations": {"cloud4iot.io/mode": "intensive"}}
                            }
                        }
                    }
                    apps.patch_namespaced_deployment("engine-diagnostic-7", "fleet", patch)
                    mark("6", "mode intensive")

                    def intensive_pod() -> client.V1Pod | None:
                        pod = running_pod(api, "fleet", diag)
                        ann = (meta(pod).annotations or {}) if pod else {}
                        return pod if ann.get("cloud4iot.io/mode") == "intensive" else None

                    pod = wait("the intensive diagnostic to be bound", intensive_pod)
                    result.steps.append(
                        Step("engine-intensive", kube.node_of(pod), time.monotonic() - start)
                    )
                    say(f"   rolled out to {kube.node_of(pod)} in {result.steps[-1].seconds:.1f}s")

                    say(
                        "7. The consolidator's batches: every one queued, against what"
                        " the cloud got."
                    )
                    fleet.stop()  # SIGTERM: each drains its queue to the cloud, now up
                    result.batches = tally = fleet.tally()
                    say(
                        f"   {tally.queued} batches queued by {tally.instances} consolidator"
                        f" processes; {tally.handed} handovers of a batch on the moves while"
                        f" the cloud was down; {tally.arrived} arrived, each once and in order"
                        " per process"
                        f" ({tally.duplicates} duplicates dropped by Idempotency-Key);"
                        f" lost: {tally.missing}"
                    )
                    for problem in tally.problems:
                        say(f"     {problem}")
                    if tally.problems or not tally.queued:
                        raise DemoError(f"the consolidators' batches: {tally.problems or 'none'}")
                    opening_forgotten(api, say, recorder, result)
                    # The end state, recorded while the monitors still run (once they
                    # stop, nobody hears the patient: not part of the story).
                    time.sleep(HOLD)
                    recorder.stop()
        finally:
            ingest.close()
            for ns in ("health", "fleet"):
                with suppress(client.ApiException):
                    core.delete_namespace(ns)
            opening.uninstall(api)
            cluster.clear_load()
            custom = client.CustomObjectsApi(api)
            for device in (PATIENT, ENGINE):
                with suppress(client.ApiException):
                    custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, device)
    result.timeline = recorder.timeline()
    return result


def save_timeline(recorder: Recorder, out: Path) -> str:
    """Write the recorded timeline (PNG, JSON, HTML); one line saying where."""
    files = save(recorder.timeline(), out)
    return f"Timeline: {files['png']} (data {files['json'].name}, page {files['html'].name})"


def main(
    keep: bool = False,
    name: str = "demo",
    state_root: Path | None = None,
    out: Path | None = None,
) -> int:
    out = out or TIMELINE
    cluster = Devcluster(name, state_root=state_root)
    print(
        f"Starting the devcluster {name!r}"
        " (real control plane, kwok nodes, extender, Prometheus)..."
    )
    cluster.up()
    recorder = recorder_for(cluster)
    try:
        result = run(cluster, recorder=recorder)
    except DemoError as exc:
        print(f"demo failed: {exc}\nlogs: {cluster.state_dir}", file=sys.stderr)
        with suppress(RuntimeError):  # the failure may come before the recording began
            print(save_timeline(recorder, out), file=sys.stderr)
        return 1
    finally:
        if not keep:
            cluster.down()
    print("\nSummary")
    for step in result.steps:
        print(f"  {step.name:<17} {step.node:<12} {step.seconds:5.1f}s")
    if result.batches is not None:
        b = result.batches
        print(f"  omh batches       {b.queued} queued, {b.arrived} arrived, {b.missing} lost")
    print(save_timeline(recorder, out))
    if keep:
        print(f"cluster left running: KUBECONFIG={cluster.kubeconfig}")
    return 0


def as_dict(result: Result) -> dict[str, Any]:
    return {s.name: {"node": s.node, "seconds": round(s.seconds, 2)} for s in result.steps}
