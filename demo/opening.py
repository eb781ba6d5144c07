"""The demo's opening scene (issue 25): a new patient's strap is switched on in a ward.

Nobody registered it. A fake org.bluez on a private dbus-daemon (the tests' fake, which
drives unmodified bleak) plays the strap: Heart Rate (0x180D) adverts from a static
random address every 0.5 s, heard at -58 dBm by gw-hospital, whose
`cloud4iot-gateway-monitor` scans that bus with bleak instead of replaying a trace. The
monitor matches the advert against the DeviceClass `ward-strap`
(manifests/examples/deviceclass-ward-strap.yaml) and reports a candidate; the elected
extender creates the Device and, once the monitor reports its sighting, the class's
reader and consolidator, which the real kube-scheduler places on gw-hospital through our
extender. Switched off, the monitor gives the strap up after its away timeout, the
extender parks both awayAfter later (the class's whenAway: park; their function class
`mhealth-parked` keeps the rebalancer from moving them to the edge meanwhile), and
deletes the Device forgetAfter later (the garbage collector takes its functions). The
scanning monitor then stops: the replaying ones take over for the rest of the demo.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from cloud4iot.deviceclass import CLASS_PLURAL, device_name
from cloud4iot.devices import GROUP, PLURAL, VERSION
from devcluster import kube
from devcluster.cluster import Devcluster
from devcluster.processes import running

ROOT = Path(__file__).resolve().parents[1]
CLASS_FILE = ROOT / "manifests" / "examples" / "deviceclass-ward-strap.yaml"
CLASS = "ward-strap"
NAMESPACE = "ward"
STRAP_ADDRESS = "C0:FF:EE:25:01:17"  # static random: a new patient's strap
STRAP = device_name(CLASS, STRAP_ADDRESS)
STRAP_RSSI = -58
GATEWAY = "gw-hospital"
FUNCTIONS = {  # timeline name -> (pod selector, Deployment the class makes)
    "strap reader": ("app.kubernetes.io/name=strap-reader", f"reader-{STRAP}"),
    "strap consolidator": ("app.kubernetes.io/name=strap-consolidator", f"consolidator-{STRAP}"),
}
HR = "0000180d-0000-1000-8000-00805f9b34fb"
# The functions' class: the consolidator's, held in place (the rebalancer parks only after
# the policy's deviceAwayAfter, 2 min) instead of falling back to the edge.
PARK_CLASS = "mhealth-parked"


class StrapRadio:
    """A fake BlueZ in a thread of its own with one strap advertising while `on`."""

    def __init__(self, address: str = STRAP_ADDRESS, rssi: int = STRAP_RSSI) -> None:
        self.address, self.rssi = address, rssi
        self.on = False
        self.bus_address = ""
        self.sent = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fake-bluez", daemon=True)

    def __enter__(self) -> StrapRadio:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.bus_address:
            raise RuntimeError(f"the fake BlueZ did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__, or lost after it
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from tests.gateway_monitor.fake_bluez import running_fake_bluez

        async with running_fake_bluez() as (bus, bluez):
            self.bus_address = bus.address
            self._ready.set()
            n = 0
            while not self._stop.is_set():
                if self.on:
                    noise = (-1, 0, 1, 0)[n % 4]  # a strap at rest: a few dB of noise
                    if bluez.advertise(self.address, self.rssi + noise, name="HRM", uuids=[HR]):
                        self.sent += 1
                    n += 1
                await asyncio.sleep(0.5)


@contextmanager
def scanning_monitor(cluster: Devcluster, bus: str, logs: Path) -> Iterator[None]:
    """gw-hospital's monitor scanning the fake BlueZ with bleak (the admin kubeconfig,
    as the demo's replaying monitors)."""
    exe = Path(sys.executable).with_name("cloud4iot-gateway-monitor")
    argv = [
        str(exe),
        *("--node", GATEWAY, "--kubeconfig", str(cluster.kubeconfig)),
        *("--host", "127.0.0.1", "--port", "0"),
    ]
    env = {**cluster.process_env(), "DBUS_SYSTEM_BUS_ADDRESS": bus}
    with running(argv, logs / f"monitor-{GATEWAY}-scanning.log", env, stop_timeout_s=15):
        yield


def install(api: client.ApiClient) -> None:
    """The ward's namespace and the shipped DeviceClass (a leftover one replaced)."""
    with suppress(client.ApiException):
        kube.create_namespace(api, NAMESPACE)
    custom = client.CustomObjectsApi(api)
    with suppress(client.ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, CLASS)
    with suppress(client.ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, STRAP)
    doc = yaml.safe_load(CLASS_FILE.read_text())
    deadline = time.monotonic() + 30
    while True:  # a class being deleted still holds its name for a moment
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, doc)
            return
        except client.ApiException as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise


def uninstall(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    with suppress(client.ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, CLASS_PLURAL, CLASS)
    with suppress(client.ApiException):
        client.CoreV1Api(api).delete_namespace(NAMESPACE)


def device_exists(api: client.ApiClient) -> bool:
    try:
        client.CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, PLURAL, STRAP)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def placed(api: client.ApiClient) -> dict[str, str] | None:
    """function -> node of its bound pod, once every function has one."""
    where = {}
    for name, (selector, _) in FUNCTIONS.items():
        pods = [p for p in kube.pods_of(api, NAMESPACE, selector) if kube.is_bound(p)]
        if pods:
            where[name] = kube.node_of(pods[0])
    return where if len(where) == len(FUNCTIONS) else None


def parked(api: client.ApiClient) -> bool:
    apps = client.AppsV1Api(api)
    for _, deployment in FUNCTIONS.values():
        dep: Any = apps.read_namespaced_deployment(deployment, NAMESPACE)
        if dep.spec.replicas != 0:
            return False
    return True


def event_time(api: client.ApiClient, reason: str) -> float | None:
    """When the extender recorded `reason` on the strap's Device (epoch seconds)."""
    events = client.CoreV1Api(api).list_namespaced_event(
        "default", field_selector=f"involvedObject.name={STRAP},reason={reason}"
    )
    stamps = []
    for e in events.items:
        meta = e.metadata.creation_timestamp if e.metadata is not None else None
        when = e.last_timestamp or e.event_time or meta
        if when is not None:
            stamps.append(when.timestamp())
    return max(stamps) if stamps else None
