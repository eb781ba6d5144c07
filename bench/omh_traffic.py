"""What Open mHealth consolidation on the gateway saves in traffic to the cloud.

    .venv/bin/python -m bench.omh_traffic

(from the repository root; options: --minutes 60 --seed 42 --windows 60,300)

Replays one deterministic hour of a 1 Hz chest strap (``strap_hour``: an HR random walk
pulled towards a day's activities - rest, a walk, an exercise bout that briefly crosses
the 150 bpm alert threshold, recovery - with one or two RR intervals per notification as
the beats fall, and a few seconds of lost skin contact) through the omh-consolidator's
real pipeline and HTTP forwarder, on a virtual clock, into a local aiohttp ingest server
that counts what arrives:

- raw forwarding: one batch (one POST, one Open mHealth data point) per notification, as
  a function that ships everything to the cloud would;
- consolidation: one batch of three data points (average, minimum, maximum) per window,
  for each window length given.

Alerts go out at once in both modes. Printed: a Markdown table of POSTs, data points,
body bytes and HTTP request-header bytes as the server received them (TLS and TCP/IP
overhead not included), the raw/consolidated ratios, and what came in from the strap.
It checks that every batch arrived once and in order, and exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

IMAGE = Path(__file__).resolve().parents[1] / "images" / "omh-consolidator"
if str(IMAGE) not in sys.path:
    sys.path.insert(0, str(IMAGE))

from omh_consolidator.consolidate import Consolidator, Thresholds  # noqa: E402
from omh_consolidator.datapoints import PointFactory, Provenance  # noqa: E402
from omh_consolidator.forward import Backoff, HttpForwarder  # noqa: E402
from omh_consolidator.hrm import encode_heart_rate_measurement  # noqa: E402
from omh_consolidator.metrics import Metrics  # noqa: E402
from omh_consolidator.pipeline import Mode, Pipeline  # noqa: E402

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()
# (from minute, target bpm): rest, a walk, an exercise bout, recovery
ACTIVITY = [(0, 66), (20, 95), (35, 138), (41, 158), (43, 130), (45, 78), (52, 68)]
CONTACT_LOST = range(50 * 60, 50 * 60 + 6)  # strap adjusted: six seconds without contact


def strap_hour(minutes: int = 60, seed: int = 42) -> list[tuple[float, bytes]]:
    """(time, 0x2A37 value) once a second; deterministic for a seed."""
    rng = random.Random(seed)
    hr = 66.0
    next_beat = 0.0
    out: list[tuple[float, bytes]] = []
    for s in range(minutes * 60):
        target = next(bpm for start, bpm in reversed(ACTIVITY) if s >= start * 60)
        hr += 0.08 * (target - hr) + rng.gauss(0, 1.0)
        hr = min(max(hr, 40.0), 200.0)
        rr: list[int] = []
        while next_beat <= s + 1:  # beats that end within this second
            interval = 60.0 / hr * (1 + rng.gauss(0, 0.03))
            next_beat += interval
            rr.append(round(interval * 1024))
        contact = s not in CONTACT_LOST
        value = encode_heart_rate_measurement(
            round(hr), contact=contact, rr_intervals_1024=rr[-2:] if contact else ()
        )
        out.append((T0 + s, value))
    return out


@dataclass
class Received:
    posts: int = 0
    body_bytes: int = 0
    header_bytes: int = 0
    data_points: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    sequences: list[int] = field(default_factory=list)


async def replay(
    hour: Sequence[tuple[float, bytes]], mode: Mode, window_s: float
) -> tuple[Received, Metrics]:
    got = Received()

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        doc = json.loads(body)
        got.posts += 1
        got.body_bytes += len(body)
        request_line = f"{request.method} {request.path_qs} HTTP/1.1\r\n"
        got.header_bytes += (
            len(request_line) + 2 + sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
        )
        got.data_points += len(doc["data_points"])
        got.kinds[doc["kind"]] = got.kinds.get(doc["kind"], 0) + 1
        got.sequences.append(doc["sequence"])
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/batches", ingest)
    server = TestServer(app)
    await server.start_server()
    metrics = Metrics()
    now = T0
    try:
        async with aiohttp.ClientSession() as session:
            forwarder = HttpForwarder(
                str(server.make_url("/v1/batches")),
                session,
                metrics,
                source="cloud4iot-omh-consolidator/patient-42-hr@gw-home",
                max_queue=len(hour) + 10,
                backoff=Backoff(initial_s=0.01, cap_s=0.1),
            )
            points = PointFactory(
                Provenance("patient-42", "cloud4iot-omh-consolidator/patient-42-hr@gw-home"),
                clock=lambda: now,
            )
            pipeline = Pipeline(
                forwarder,
                points,
                metrics,
                mode=mode,
                consolidator=Consolidator(window_s, Thresholds(low_bpm=40, high_bpm=150)),
                clock=lambda: now,
            )
            sending = asyncio.create_task(forwarder.run())
            for i, (at, value) in enumerate(hour):
                now = at
                pipeline.on_notification(value)
                pipeline.tick()
                if i % 60 == 59:
                    await forwarder.drain(60)
            pipeline.close()
            if not await forwarder.drain(60):
                raise SystemExit("the forwarder did not drain")
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    finally:
        await server.close()
    if got.sequences != list(range(1, got.posts + 1)):
        raise SystemExit(f"{mode}: batches lost, repeated or out of order")
    return got, metrics


def row(name: str, got: Received, base: Received | None) -> str:
    total = got.body_bytes + got.header_bytes
    if base is None:
        ratios = "1x | 1x"
    else:
        base_total = base.body_bytes + base.header_bytes
        ratios = f"{base.posts / got.posts:.0f}x | {base_total / total:.0f}x"
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(got.kinds.items()))
    return (
        f"| {name} | {got.posts} ({kinds}) | {got.data_points} | {got.body_bytes:,} | "
        f"{got.header_bytes:,} | {total:,} | {ratios} |"
    )


async def main_async(minutes: int, seed: int, windows: Sequence[float]) -> None:
    hour = strap_hour(minutes, seed)
    raw, raw_metrics = await replay(hour, "raw", 60)
    rows = [row("raw forwarding (1 POST per notification)", raw, None)]
    for window in windows:
        got, _ = await replay(hour, "consolidate", window)
        rows.append(row(f"consolidated, {window:g} s windows", got, raw))
    inn = raw_metrics
    print(
        f"In from the strap: {inn.get('notifications_total'):.0f} notifications, "
        f"{inn.get('notification_bytes_total'):.0f} bytes of 0x2A37 values "
        f"({inn.get('readings_total', result='no_contact'):.0f} without skin contact, dropped); "
        f"alerts (> 150 bpm, repeat 60 s): {inn.total('alerts_total'):.0f}"
    )
    print()
    print(
        "| mode | POSTs to the cloud | data points | body bytes | header bytes | total bytes "
        "| POSTs saved | bytes saved |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for line in rows:
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--windows", default="60,300", help="window lengths in seconds")
    args = parser.parse_args(argv)
    logging.getLogger("omh_consolidator").setLevel(logging.ERROR)  # no alert log lines
    windows = [float(w) for w in args.windows.split(",") if w]
    asyncio.run(main_async(args.minutes, args.seed, windows))


if __name__ == "__main__":
    main()
