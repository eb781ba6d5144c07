"""The demo's consolidator processes and cloud ingest: what the omh-consolidator pods would
run, run as host processes beside the kwok pods (kwok runs no containers).

`Fleet` follows the consolidator's pods: a pod bound to a node gets a `demo.omh_process`
with the image's settings (its queue on that node's "disk", a directory per gateway); a pod
deleted or leaving gets SIGTERM, so a move is what it is in a cluster: the leaving process
hands its queue to the new one (`HANDOVER_PEERS`: a pool of local ports stands in for the
headless Service, which resolves to every pod of the device). `Ingest` is the cloud: it
can be down (503), and it keeps each batch once by its `Idempotency-Key`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
PORTS = 6  # handover ports in the pool: more than pods of one device alive at once


class Ingest:
    """A cloud ingest on 127.0.0.1: 503 while down; stores each batch id once, in order."""

    def __init__(self) -> None:
        self.down = False
        self.arrivals: list[str] = []
        self.duplicates = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key", "")
                if box.down or not key:
                    self.send_response(503 if box.down else 400)
                else:
                    with box._lock:
                        if key in box._seen:
                            box.duplicates += 1
                        else:
                            box._seen.add(key)
                            box.arrivals.append(key)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/batches"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Process:
    pod: str
    node: str
    port: int
    proc: subprocess.Popen[bytes]
    out: Path
    stopping: bool = False


@dataclass
class Tally:
    """What the consolidators queued and what the cloud got, per boot id."""

    queued: int = 0
    arrived: int = 0
    missing: int = 0  # queued, never arrived
    handed: int = 0  # batches handed over by leaving processes
    duplicates: int = 0
    instances: int = 0
    problems: list[str] = field(default_factory=list)  # per process: what went wrong


class Fleet:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        device: str,
        address: str,
        disks: Path,
        ingest: Ingest,
        say: Callable[[str], None],
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.selector = namespace, selector
        self.device, self.address = device, address
        self.disks, self.ingest, self.say = disks, ingest, say
        self.ports = _free_ports(PORTS)
        self.processes: dict[str, Process] = {}  # by pod uid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="omh-fleet")

    def __enter__(self) -> Fleet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _follow(self) -> None:
        while not self._stop.wait(0.3):
            try:
                pods = self.core.list_namespaced_pod(
                    self.namespace, label_selector=self.selector
                ).items
            except Exception:
                continue
            live: dict[str, tuple[str, str]] = {}  # uid -> pod, node
            for pod in pods:
                meta, spec = pod.metadata, pod.spec
                if meta and spec and spec.node_name and meta.deletion_timestamp is None:
                    live[str(meta.uid)] = (str(meta.name), str(spec.node_name))
            for uid, (name, node) in live.items():
                if uid not in self.processes:
                    self._start(uid, name, node)
            for uid, p in self.processes.items():
                if uid not in live and not p.stopping:
                    p.stopping = True
                    p.proc.send_signal(signal.SIGTERM)

    def _start(self, uid: str, pod: str, node: str) -> None:
        busy = {p.port for p in self.processes.values() if p.proc.poll() is None}
        port = next(p for p in self.ports if p not in busy)
        out = self.disks / f"{pod}.out"
        env = {
            **os.environ,
            "DEVICE_NAME": self.device,
            "DEVICE_ADDRESS": self.address,
            "NODE_NAME": node,
            "INGEST_URL": self.ingest.url,
            "QUEUE_DIR": str(self.disks / node / f"omh-{self.device}"),
            "HANDOVER_PORT": str(port),
            "HANDOVER_PEERS": ",".join(f"127.0.0.1:{p}" for p in self.ports),
            "DRAIN_SECONDS": "20",
            "POST_TIMEOUT_SECONDS": "2",
            "METRICS_PORT": "0",
            "PYTHONPATH": str(ROOT),
        }
        with out.open("wb") as stdout, (self.disks / f"{pod}.log").open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "demo.omh_process"],
                env=env,
                stdout=stdout,
                stderr=stderr,
                cwd=ROOT,
            )
        self.processes[uid] = Process(pod, node, port, proc, out)

    def stop(self) -> None:
        """Stop following; SIGTERM every consolidator still running and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for p in self.processes.values():
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.processes.values():
            try:
                p.proc.wait(30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()

    def tally(self) -> Tally:
        """After `stop`: per boot id, did the cloud get 1..submitted, once, in order?"""
        t = Tally(duplicates=self.ingest.duplicates)
        got: dict[str, list[int]] = {}
        for key in self.ingest.arrivals:
            _, instance, seq = key.rsplit("/", 2)
            got.setdefault(instance, []).append(int(seq))
        t.arrived = len(self.ingest.arrivals)
        for p in self.processes.values():
            left = [line for line in p.out.read_text().splitlines() if line.startswith("left ")]
            if not left:
                t.problems.append(f"{p.pod}: no clean exit (rc {p.proc.returncode})")
                continue
            _, instance, *fields = left[-1].split()
            counts = {k: int(v) for k, v in (f.split("=") for f in fields)}
            expected = list(range(1, counts["submitted"] + 1))
            have = got.get(instance, [])
            t.instances += 1
            t.queued += len(expected)
            t.handed += counts["handed"]
            t.missing += len(set(expected) - set(have))
            if have != expected:
                t.problems.append(
                    f"{p.pod} ({instance}): {len(expected)} queued, {len(have)} arrived"
                    f" {'in order' if have == sorted(have) else 'out of order'}"
                )
        return t


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_arrived(ingest: Ingest, count: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(ingest.arrivals) >= count:
            return True
        time.sleep(0.2)
    return False
