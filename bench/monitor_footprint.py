"""The gateway monitor's footprint at a steady advert rate: RSS and CPU of the process.

The real path: `python -m gateway_monitor` (not --dry-run) scanning with unmodified
bleak over the fake BlueZ of tests/gateway_monitor (a private dbus-daemon), tracking
Devices it lists and watches from a stand-in apiserver (this file: lists, watches that
stay open, applies and Lease writes answered as the apiserver would, nothing stored),
publishing its GatewayReport and renewing its Lease there. The fake emits `--rate`
adverts a second over `--devices` wearables (RSSI -60 +- 4 dB). After `--warmup`
seconds, CPU (utime + stime from /proc) is measured over `--seconds`, and VmRSS /
VmHWM at the end. `--tree` runs the monitor of other source trees too (before/after,
alternated, `--repeat` times each), side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devcluster.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
# What the console script cloud4iot-gateway-monitor runs (the image's entry point).
ENTRY = 'import sys; from gateway_monitor.cli import main; sys.argv[0] = "monitor"; main()'
# The floor of any monitor on bleak: the monitor's own scanner (BleakSource: the same
# BleakScanner, mode and patterns) feeding a counter; no tracker, publisher, apiserver
# client, HTTP server or metrics. What is left above it is ours.
FLOOR = """
import asyncio
from gateway_monitor.scanner import BleakSource
count = 0
def sink(advert):
    global count
    count += 1
asyncio.run(BleakSource().run(sink))
"""


def _fake_bluez_module() -> Any:
    path = ROOT / "tests" / "gateway_monitor" / "fake_bluez.py"
    spec = importlib.util.spec_from_file_location("fake_bluez", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def addresses(n: int) -> list[str]:
    return [f"C0:FF:EE:00:{i // 256:02X}:{i % 256:02X}" for i in range(n)]


def device(i: int, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "cloud4iot.io/v1alpha1",
        "kind": "Device",
        "metadata": {"name": f"wearable-{i}", "resourceVersion": "1"},
        "spec": {"address": address},
    }


def standin(devices: list[dict[str, Any]]) -> web.Application:
    """An apiserver that answers what the monitor calls and keeps nothing."""
    counter = iter(range(2, 10**9))

    async def handle(request: web.Request) -> web.StreamResponse:
        q, path = request.query, request.path
        if request.method == "GET" and q.get("watch") in ("true", "1", "True"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(float(q.get("timeoutSeconds", "300")))
            return resp
        if request.method == "GET" and path.endswith("/devices"):
            items = devices
        elif request.method == "GET" and path.rsplit("/", 1)[-1] in (
            "deviceclasses",
            "gatewayreports",
            "leases",
            "secrets",  # the identity keys' Secret (none here: a list of nothing)
        ):
            items = []
        elif request.method == "GET":
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
            return web.json_response({**status, "reason": "NotFound", "code": 404}, status=404)
        else:
            body = await request.read()
            try:
                obj = json.loads(body) if body else {}
            except ValueError:
                obj = {}
            if not isinstance(obj, dict):
                obj = {}
            meta = obj.setdefault("metadata", {})
            meta.setdefault("name", path.rsplit("/", 1)[-1])
            meta["resourceVersion"] = str(next(counter))
            return web.json_response(obj, status=201 if request.method == "POST" else 200)
        return web.json_response(
            {"kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def kubeconfig(path: Path, url: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "bench"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(doc))
    return path


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (the dev extra) on the monitor for the measured window: every sample, idle
    ones included (--idle off: only on-CPU stacks), folded stacks in `out`."""
    pyspy = str(Path(sys.executable).with_name("py-spy"))
    argv = [pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100"]
    argv += ["--duration", str(int(seconds)), "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def vm_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def pss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return None


async def scrape(url: str) -> dict[tuple[str, str], float]:
    """The monitor's advert counts by result and its publishes by outcome."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cloud4iot_gateway_monitor_adverts_total":
                key = ("adverts", sample.labels["result"])
            elif sample.name == "cloud4iot_gateway_monitor_publishes_total":
                key = ("publishes", sample.labels["outcome"])
            else:
                continue
            out[key] = out.get(key, 0.0) + sample.value
    return out


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def one_run(
    tree: Path, args: argparse.Namespace, tmp: Path, floor: bool = False
) -> dict[str, Any]:
    fb = _fake_bluez_module()
    bus = fb.PrivateBus()
    bus.start()
    fake = fb.FakeBlueZ(bus.address)
    await fake.start()
    addrs = addresses(args.devices)
    rng = random.Random(7)
    proc: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        async with serving(standin([device(i, a) for i, a in enumerate(addrs)])) as url:
            config = kubeconfig(tmp / "kubeconfig", url)
            argv = [sys.executable, "-c", ENTRY, "--node", "gw-bench"]
            argv += ["--kubeconfig", str(config), "--lease-namespace", "bench"]
            port = free_port()
            argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
            if floor:
                argv = [sys.executable, "-c", FLOOR]
            env = {**os.environ, "PYTHONPATH": str(tree), "DBUS_SYSTEM_BUS_ADDRESS": bus.address}
            proc = subprocess.Popen(argv, cwd=tree, env=env)  # noqa: ASYNC220 - a bench
            deadline = time.monotonic() + 60
            while not fake.listening:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the monitor from {tree} never started scanning")
                await asyncio.sleep(0.1)
            started = time.monotonic()
            sent = 0
            cpu0 = t0 = None
            end = started + args.warmup + args.seconds
            while (now := time.monotonic()) < end:
                due = int((now - started) * args.rate)
                while sent < due:
                    fake.advertise(addrs[sent % len(addrs)], -60 + rng.randint(-4, 4))
                    sent += 1
                if cpu0 is None and now - started >= args.warmup:
                    cpu0, t0, sent0 = cpu_s(proc.pid), now, sent
                    if args.profile is not None:
                        spy = profile(proc.pid, args.profile, args.seconds)
                await asyncio.sleep(0.01)
            assert cpu0 is not None
            assert t0 is not None
            wall = time.monotonic() - t0
            used = cpu_s(proc.pid) - cpu0
            mem = vm_mb(proc.pid)
            counts = {} if floor else await scrape(f"http://127.0.0.1:{port}/metrics")
            pss = pss_mb(proc.pid)
            # Stopped while the stand-in still answers: it removes its sightings and
            # closes its watches, so the stand-in's cleanup does not wait on them.
            await asyncio.to_thread(_stop, proc)
            return {
                "tracked": counts.get(("adverts", "tracked"), 0.0),
                "sent": sent,
                "applies": counts.get(("publishes", "ok"), 0.0),
                "tree": f"{tree} (floor: bleak alone)" if floor else str(tree),
                "adverts_per_s": (sent - sent0) / wall,
                "cpu_pct": 100 * used / wall,
                "rss_mb": mem["VmRSS"],
                "hwm_mb": mem["VmHWM"],
                "anon_mb": mem.get("RssAnon"),
                "file_mb": mem.get("RssFile"),
                "pss_mb": pss,
                "dropped": fake.dropped,
            }
    finally:
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
        if proc is not None and proc.poll() is None:
            await asyncio.to_thread(_stop, proc)  # stand-in already gone: not a clean stop
        fake.stop()
        bus.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    trees = [ROOT, *args.tree]
    results = []
    with tempfile.TemporaryDirectory(prefix="monitor-footprint-") as tmp:
        for _ in range(args.repeat):
            for tree in trees:
                results.append(await one_run(tree, args, Path(tmp)))
                print(json.dumps(results[-1]), file=sys.stderr)
            if args.floor:
                results.append(await one_run(ROOT, args, Path(tmp), floor=True))
                print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="adverts a second")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--profile", type=Path, help="py-spy folded stacks of the monitor here")
    p.add_argument("--tree", type=Path, action="append", default=[], help="another source tree")
    p.add_argument(
        "--floor",
        action="store_true",
        help="also run the monitor's scanner alone (bleak feeding a counter): the floor",
    )
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    print(
        "| tree | adverts/s | tracked / sent | applies | CPU % of a core | VmRSS MB | VmHWM MB"
        " | anon / file MB | PSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['tree']} | {r['adverts_per_s']:.0f} | {r['tracked']:.0f} / {r['sent']}"
            f" | {r['applies']:.0f} | {r['cpu_pct']:.2f} | {r['rss_mb']:.1f}"
            f" | {r['hwm_mb']:.1f} | {r['anon_mb']:.1f} / {r['file_mb']:.1f} | {r['pss_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
