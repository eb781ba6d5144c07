"""What one Device watch event costs the extender's reflector at 10,000 Devices.

    .venv/bin/python -m bench.reflector_cost

(from the repository root; options: --devices 10000 --events 2000 --gap 0 --repeat 200)

Drives the real `extender.state.kube.Reflector` (with the real `device_facts`
parser and `publish_devices`) through a small in-file fake of a kubernetes.aio
`*_without_preload_content` call: the first call answers the list of
--devices Device objects, the second a watch carrying --events MODIFIED events
(gateway heartbeats, one per chunk, --gap seconds apart, 0 = one loop turn), the
third a quiet watch that marks the end of the stream. Prints:

- the initial list's cost per object;
- per event: wall and CPU microseconds from the watch call to the end of its
  stream (stream splitting, orjson, device_facts, the dict update and any
  snapshot publish that fell inside), and the same for the fake stream alone;
- how many snapshots were published for the events (coalesced, at most one per
  PUBLISH_INTERVAL) and what one publish costs (the dict copy of every entry,
  and the copy plus the Snapshot replace);
- the reflector's own CPU per event: the above minus the fake stream, plus the
  publishes after the stream amortised over the events. With --gap 0 the events
  arrive as fast as the loop turns (a burst); with --gap 0.001 the loop's own
  sleeping costs CPU too, in both runs, so compare the difference.

It checks that every event was applied and the last snapshot holds the last
values, and exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cloud4iot.devices import API_VERSION, KIND, rfc3339
from extender.state import kube
from extender.state.devices import device_facts
from extender.state.kube import Reflector, publish_devices
from extender.state.snapshot import DeviceFacts
from extender.state.store import StateStore

START = 1_700_000_000.0  # sightings' lastSeen: in the past, so never capped at observation
GATEWAYS = 3  # sightings per Device


def device(i: int, rssi: float, rv: int) -> dict[str, Any]:
    name = f"dev-{i:05d}"
    seen = rfc3339(START + rv)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "resourceVersion": str(rv), "uid": f"uid-{i}"},
        "spec": {"address": f"C0:FF:EE:{i >> 16 & 255:02X}:{i >> 8 & 255:02X}:{i & 255:02X}"},
        "status": {
            "sightings": [
                {"node": f"gw-{(i + g) % 50}", "rssi": rssi - 4 * g, "lastSeen": seen}
                for g in range(GATEWAYS)
            ],
            "nearest": {"node": f"gw-{i % 50}", "since": rfc3339(START), "rssi": rssi},
        },
    }


# --- the fake kubernetes.aio call ----------------------------------------------


class FakeContent:
    def __init__(self, chunks: Sequence[bytes], gap: float) -> None:
        self.chunks, self.gap = chunks, gap

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(self.gap)  # hand the loop a turn, as a socket read does
            yield chunk


class FakeResponse:
    def __init__(self, body: bytes = b"", chunks: Sequence[bytes] = (), gap: float = 0.0) -> None:
        self.status = 200
        self.body = body
        self.content = FakeContent(chunks, gap)
        self.released = 0

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        self.released += 1


@dataclass
class Window:
    wall: float = 0.0
    cpu: float = 0.0
    publishes: int = 0


@dataclass
class FakeApi:
    """Call 1: the list; call 2: the watch with the events; call 3: quiet (the end)."""

    list_body: bytes
    chunks: Sequence[bytes]
    gap: float
    reflector: Reflector[DeviceFacts] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)
    start: Window = field(default_factory=Window)
    end: Window = field(default_factory=Window)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def _mark(self, at: Window) -> None:
        at.wall, at.cpu = time.perf_counter(), time.process_time()
        at.publishes = self.reflector.publishes if self.reflector else 0

    async def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        watch = kwargs.get("watch") is True
        if len(self.calls) == 1 and not watch:
            response = FakeResponse(body=self.list_body)
        elif len(self.calls) == 2 and watch and kwargs.get("resource_version") == "1":
            self._mark(self.start)
            response = FakeResponse(chunks=self.chunks, gap=self.gap)
        else:
            # The end of the stream, or a call out of script (then `calls` shows it).
            self._mark(self.end)
            self.drained.set()
            await asyncio.Event().wait()  # a watch with nothing to say, until cancelled
            raise RuntimeError("a quiet watch ended")
        self.responses.append(response)
        return response


async def stream_alone(chunks: Sequence[bytes], gap: float) -> tuple[float, float]:
    """(wall, CPU) seconds the fake stream takes with nobody parsing it."""
    wall, cpu = time.perf_counter(), time.process_time()
    async for _ in FakeContent(chunks, gap).iter_any():
        pass
    return time.perf_counter() - wall, time.process_time() - cpu


def per_call(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


@dataclass
class Result:
    list_seconds: float
    event_wall: float
    event_cpu: float
    stream_wall: float
    stream_cpu: float
    publishes_in: int
    publishes_after: int
    copy: float
    publish: float


async def measure(n_devices: int, n_events: int, gap: float, repeat: int) -> Result:
    objects = {i: device(i, -60.0, 1) for i in range(n_devices)}
    list_body = orjson.dumps(
        {
            "kind": "DeviceList",
            "metadata": {"resourceVersion": "1"},
            "items": list(objects.values()),
        }
    )
    chunks = []
    for k in range(n_events):
        i = (k * 7919) % n_devices  # spread over the devices
        objects[i] = device(i, -40.0 - k % 30, 2 + k)
        chunks.append(orjson.dumps({"type": "MODIFIED", "object": objects[i]}) + b"\n")
    alone_wall, alone_cpu = await stream_alone(chunks, gap)

    store = StateStore()
    api = FakeApi(list_body, chunks, gap)
    reflector: Reflector[DeviceFacts] = Reflector(
        "devices", api, device_facts, lambda facts: publish_devices(store, facts)
    )
    api.reflector = reflector
    t0 = time.perf_counter()
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(api.drained.wait(), 600)
        list_seconds = api.start.wall - t0
        await asyncio.sleep(reflector.publish_interval + 0.05)  # the last coalesced publish
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    problems = []
    kinds = ["watch" if c.get("watch") else "list" for c in api.calls]
    if kinds != ["list", "watch", "watch"]:
        problems.append(f"calls {kinds}, expected a list then two watches")
    if reflector.events != n_events:
        problems.append(f"{reflector.events} events applied, expected {n_events}")
    if any(r.released != 1 for r in api.responses):
        problems.append("a response was not released exactly once")
    published = store.snapshot.devices
    expected = {o["metadata"]["name"]: device_facts(o) for o in objects.values()}
    if len(published) != n_devices or any(
        published[n].sightings != f.sightings for n, f in expected.items()
    ):
        problems.append("the last snapshot does not hold the last values")
    if problems:
        raise SystemExit("reflector_cost: " + "; ".join(problems))

    facts = reflector.facts
    copy = per_call(lambda: dict(facts), repeat)
    publish = per_call(lambda: publish_devices(store, dict(facts)), repeat)
    return Result(
        list_seconds=list_seconds,
        event_wall=(api.end.wall - api.start.wall) / n_events,
        event_cpu=(api.end.cpu - api.start.cpu) / n_events,
        stream_wall=alone_wall / n_events,
        stream_cpu=alone_cpu / n_events,
        publishes_in=api.end.publishes - api.start.publishes,
        publishes_after=reflector.publishes - api.end.publishes,
        copy=copy,
        publish=publish,
    )


def report(r: Result, n_devices: int, n_events: int, gap: float) -> str:
    publishes = r.publishes_in + r.publishes_after
    own = r.event_cpu - r.stream_cpu  # the reflector's share of the CPU time
    amortised = r.publishes_after * r.publish / n_events  # those inside are in event_cpu
    return "\n".join(
        [
            f"Device reflector, {n_devices:,} devices, {n_events:,} MODIFIED events "
            f"(one per chunk, gap {gap:g} s, publish interval {kube.PUBLISH_INTERVAL * 1000:.0f} ms)",
            f"  initial list:      {r.list_seconds * 1000:.1f} ms "
            f"({r.list_seconds / n_devices * 1e6:.1f} us/object, 1 publish)",
            f"  per event:         {r.event_wall * 1e6:.1f} us wall, {r.event_cpu * 1e6:.1f} us CPU; "
            f"the fake stream alone {r.stream_wall * 1e6:.1f} us wall, {r.stream_cpu * 1e6:.1f} us CPU",
            f"  snapshot publishes for the events: {publishes} "
            f"({r.publishes_in} during the stream, {r.publishes_after} after it)",
            f"  one publish:       dict copy {r.copy * 1e6:.0f} us; "
            f"copy + Snapshot replace {r.publish * 1e6:.0f} us",
            f"  reflector CPU per event, with every publish it caused: {(own + amortised) * 1e6:.1f} us",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between event chunks")
    parser.add_argument("--repeat", type=int, default=200, help="publish timing repetitions")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.events < 1:
        parser.error("--devices and --events must be positive")
    result = asyncio.run(measure(args.devices, args.events, args.gap, args.repeat))
    print(report(result, args.devices, args.events, args.gap))


if __name__ == "__main__":
    main()
