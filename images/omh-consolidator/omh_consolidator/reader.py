"""The data reader: a BLE heart-rate strap's Heart Rate Measurement notifications via bleak.

One session = scan for the address, connect, ``start_notify`` on 0x2A37, then wait for
the link to drop. When it drops (the strap went out of range, was switched off or
rebooted) the session is torn down: bleak has already forgotten the notification (BlueZ
stops notifying on a dead link, so there is nothing to stop), and ``disconnect()``
releases the session's D-Bus connection and device watcher. Then the reader retries
with a capped exponential backoff; the backoff starts over once a session gets as far
as a subscription. A strap that is out of range is simply not found by the
scan, which counts as a failed attempt.

A session that stops delivering ends too, so that a stuck one is not held for ever:
``start_notify`` answered within the connect timeout (bleak sets none of its own: a hung
BlueZ call held the reader, and /healthz said nothing), and no notification for
``silence_timeout_s`` while the link looks up (a strap notifies about once a second,
also without skin contact) unsubscribes, disconnects and starts over, counted in
``ble_silent_sessions_total``.

On shutdown (the task is cancelled) the reader unsubscribes (``stop_notify``, BlueZ
``StopNotify``) and disconnects before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from bleak import BleakClient, BleakScanner

from omh_consolidator.forward import Backoff
from omh_consolidator.hrm import HEART_RATE_MEASUREMENT
from omh_consolidator.metrics import Metrics

log = logging.getLogger(__name__)


class StrapNotFoundError(Exception):
    """The scan did not hear the strap: out of range or switched off."""


class HeartRateReader:
    def __init__(
        self,
        address: str,
        on_notification: Callable[[bytes], None],
        metrics: Metrics,
        *,
        adapter: str | None = None,
        scan_timeout_s: float = 15.0,
        connect_timeout_s: float = 20.0,
        silence_timeout_s: float = 60.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.address = address.upper()
        self._on_notification = on_notification
        self._metrics = metrics
        self._bluez: Any = {"adapter": adapter} if adapter else {}
        self._scan_timeout = scan_timeout_s
        self._connect_timeout = connect_timeout_s
        self._silence = silence_timeout_s
        self._heard = 0.0  # the event loop's time of the last notification
        self._backoff = backoff or Backoff(initial_s=1.0, factor=2.0, cap_s=60.0)
        self._rng = rng
        self._sleep = sleep
        self.state = "idle"
        self.failures = 0  # consecutive failed attempts
        self.delays: list[float] = []  # every backoff delay taken, for tests and logs
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Read until cancelled."""
        try:
            while True:
                try:
                    await self._session()
                except StrapNotFoundError:
                    self._failed("not_found", "strap not heard by the scan")
                except Exception as exc:  # BlueZ errors, timeouts, a dead D-Bus: retry them all
                    self._failed(type(exc).__name__, repr(exc))
                delay = self._backoff.delay(max(self.failures, 1), self._rng)
                self.delays.append(delay)
                self.state = "backoff"
                await self._sleep(delay)
        finally:
            self.state = "stopped"

    def _failed(self, reason: str, detail: str) -> None:
        self.failures += 1
        self._metrics.inc("ble_attempt_failures_total", reason=reason)
        log.info("strap %s: attempt failed (%s); retry #%d", self.address, detail, self.failures)

    async def _session(self) -> None:
        self.state = "scanning"
        device = await BleakScanner.find_device_by_address(
            self.address, timeout=self._scan_timeout, bluez=self._bluez
        )
        if device is None:
            raise StrapNotFoundError(self.address)
        self.state = "connecting"
        lost = asyncio.Event()
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: lost.set(),
            timeout=self._connect_timeout,
            bluez=self._bluez,
        )
        await client.connect()
        notifying = False
        try:
            await asyncio.wait_for(
                client.start_notify(HEART_RATE_MEASUREMENT, self._deliver), self._connect_timeout
            )
            notifying = True
            self.failures = 0
            self.state = "subscribed"
            self.subscribed.set()
            self._metrics.inc("ble_connects_total")
            self._metrics.set("ble_subscribed", 1)
            log.info("strap %s: subscribed to Heart Rate Measurement", self.address)
            if await self._until_lost_or_silent(lost):
                self._metrics.inc("ble_disconnects_total")
                log.info("strap %s: link lost", self.address)
            else:
                self._metrics.inc("ble_silent_sessions_total")
                log.warning(
                    "strap %s: no notification for %.0fs on a live link; reconnecting",
                    self.address,
                    self._silence,
                )
        finally:
            self.subscribed.clear()
            self._metrics.set("ble_subscribed", 0)
            if notifying and client.is_connected:  # shutting down: unsubscribe first
                with contextlib.suppress(Exception):
                    await client.stop_notify(HEART_RATE_MEASUREMENT)
            with contextlib.suppress(Exception):
                await client.disconnect()  # also releases the session's D-Bus connection

    async def _until_lost_or_silent(self, lost: asyncio.Event) -> bool:
        """True when the link dropped; False after `silence_timeout_s` without a notification."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        while not lost.is_set():
            left = self._heard + self._silence - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), left)
        return True

    def _deliver(self, _characteristic: Any, data: bytearray) -> None:
        self._heard = asyncio.get_running_loop().time()
        self._on_notification(bytes(data))
