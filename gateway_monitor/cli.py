"""``cloud4iot-gateway-monitor``: command line, environment defaults, signal handling."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cloud4iot.buildinfo import require_extra, version_line
from cloud4iot.logs import configure, log_flags
from gateway_monitor import httpserver
from gateway_monitor.app import MonitorApp, create_app
from gateway_monitor.kubeapi import KubeApi
from gateway_monitor.lease import LeaseConfig
from gateway_monitor.publisher import PublishConfig
from gateway_monitor.scanner import DutyCycle, ScanMode
from gateway_monitor.settings import Settings
from gateway_monitor.tracker import ConfigError, Thresholds, TrackerConfig

log = logging.getLogger("gateway_monitor")


def _device(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError("use NAME=AA:BB:CC:DD:EE:FF")
    return name, address


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloud4iot-gateway-monitor",
        description="Publish how well this gateway hears registered BLE Devices.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version_line(p.prog))
    _identity_flags(p)
    _radio_flags(p)
    _presence_flags(p)
    _publishing_flags(p)
    _service_flags(p)
    return p


def _identity_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("identity and cluster")
    g.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME"),
        help="this gateway's node name (env NODE_NAME)",
    )
    g.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig; default in-cluster service account (env KUBECONFIG)",
    )
    g.add_argument("--dry-run", action="store_true", help="no apiserver: log the reports instead")
    g.add_argument(
        "--device",
        type=_device,
        action="append",
        default=[],
        metavar="NAME=ADDRESS",
        help="dry run: a Device to track (repeatable)",
    )


def _radio_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("radio")
    g.add_argument("--replay", type=Path, help="replay a JSONL advert trace instead of scanning")
    g.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    g.add_argument("--adapter", default="hci0", help="BlueZ adapter")
    g.add_argument(
        "--scan-mode",
        type=ScanMode,
        choices=list(ScanMode),
        default=ScanMode.AUTO,
        help="passive needs BlueZ >= 5.56 --experimental; auto falls back to active",
    )
    g.add_argument(
        "--duty-cycle",
        type=DutyCycle.parse,
        default="always",
        metavar="ON/PERIOD",
        help="scan ON of every PERIOD seconds, e.g. 2/10; 'always' = continuous",
    )

    g.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="also write the adverts of registered Devices to FILE (JSONL trace, wall-clock "
        "t) for `cloud4iot replay --trace NODE=FILE`; rotated to FILE.1",
    )
    g.add_argument(
        "--record-max-bytes",
        type=int,
        default=50_000_000,
        help="rotate the recording when it would pass this size",
    )


def _presence_flags(p: argparse.ArgumentParser) -> None:
    d_t = TrackerConfig()
    g = p.add_argument_group("presence judgement")
    g.add_argument(
        "--enter",
        type=float,
        default=d_t.thresholds.enter,
        help="dBm (calibrated) to claim presence",
    )
    g.add_argument(
        "--leave",
        type=float,
        default=d_t.thresholds.leave,
        help="dBm (calibrated) below which presence is given up",
    )
    g.add_argument(
        "--away-timeout",
        type=float,
        default=d_t.away_timeout,
        help="seconds without adverts before away",
    )
    g.add_argument(
        "--window",
        type=float,
        default=d_t.window,
        help="seconds of readings behind the smoothed RSSI",
    )
    g.add_argument(
        "--rssi-window",
        type=float,
        default=d_t.rssi_window,
        help="seconds of readings behind the published RSSI (the newest within --window)",
    )
    g.add_argument(
        "--leave-hold",
        type=float,
        default=d_t.leave_hold,
        help="seconds the smoothed RSSI must stay below --leave",
    )
    g.add_argument(
        "--arrive-samples",
        type=int,
        default=d_t.arrive_samples,
        help="median of this many latest readings must reach --enter",
    )
    g.add_argument(
        "--rssi-offset",
        type=float,
        default=None,
        help="calibration dB added to readings; overrides the policy's",
    )
    g.add_argument(
        "--policy",
        type=Path,
        help="PlacementPolicy file; reads spec.gateways.<node>.rssiOffset (must exist when given)",
    )


def _publishing_flags(p: argparse.ArgumentParser) -> None:
    d_p = PublishConfig()
    g = p.add_argument_group("publishing")
    g.add_argument(
        "--min-interval",
        type=float,
        default=d_p.min_interval,
        help="per-device minimum seconds between applies",
    )
    g.add_argument(
        "--rssi-step",
        type=int,
        default=d_p.step,
        help="dB change of the smoothed RSSI worth an apply",
    )
    g.add_argument(
        "--max-rate",
        type=float,
        default=d_p.max_rate,
        help="applies per second for the whole gateway",
    )
    g.add_argument(
        "--heartbeat",
        type=float,
        default=d_p.heartbeat,
        help="seconds between refreshes of an unchanged sighting",
    )
    d_l = LeaseConfig()
    g.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="the monitors' namespace: this gateway's liveness Lease and the Secret"
        " cloud4iot-identity-keys it reads (env POD_NAMESPACE; default the pod's own,"
        " else cloud4iot-gateway)",
    )
    g.add_argument(
        "--lease-renew",
        type=float,
        default=d_l.renew,
        help="seconds between renewals of the Lease (leaseDurationSeconds is 4x)",
    )


def _service_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service")
    g.add_argument("--host", default="0.0.0.0", help="address for /metrics and /healthz")
    g.add_argument("--port", type=int, default=9102)
    log_flags(g, os.environ.get("LOG_LEVEL", "info"))


def settings_from_args(args: argparse.Namespace) -> Settings:
    tracker = TrackerConfig(
        thresholds=Thresholds(enter=args.enter, leave=args.leave),
        away_timeout=args.away_timeout,
        window=args.window,
        rssi_window=args.rssi_window,
        leave_hold=args.leave_hold,
        arrive_samples=args.arrive_samples,
    )
    return Settings(
        node=args.node or "",
        tracker=tracker,
        publish=PublishConfig(
            min_interval=args.min_interval,
            step=args.rssi_step,
            heartbeat=args.heartbeat,
            max_rate=args.max_rate,
        ),
        lease=LeaseConfig(renew=args.lease_renew, duration=max(1, round(4 * args.lease_renew))),
        lease_namespace=args.lease_namespace,
        replay=args.replay,
        record=args.record,
        record_max_bytes=args.record_max_bytes,
        speed=args.speed,
        adapter=args.adapter,
        scan_mode=args.scan_mode,
        duty=args.duty_cycle,
        kubeconfig=args.kubeconfig,
        dry_run=args.dry_run,
        static_devices=dict(args.device),
        rssi_offset=args.rssi_offset,
        policy=args.policy,
        host=args.host,
        port=args.port,
    )


async def serve(settings: Settings, app: MonitorApp) -> None:
    """Run until SIGTERM/SIGINT; stopping the app removes our sightings."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        server = await httpserver.serve(app.routes(), settings.host, settings.port)
        try:
            log.info(
                "gateway monitor for node %s on %s:%d", settings.node, settings.host, settings.port
            )
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
    finally:
        await app.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_extra(parser.prog, "gateway")
    configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
        app = create_app(settings)  # reads a replay trace: a bad one stops here, in one line
        if not settings.dry_run:
            # Where the apiserver is (the kubeconfig, or the pod's environment): a bad
            # one is one line here, not a traceback out of the running loop.
            KubeApi.connect(settings.kubeconfig)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"cloud4iot-gateway-monitor: {exc}", file=sys.stderr)
        sys.exit(2)
    asyncio.run(serve(settings, app))


if __name__ == "__main__":
    main()
