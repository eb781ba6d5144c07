"""The data reader with the unmodified bleak against a fake BlueZ strap (private D-Bus).

Each test drives the strap the way a real one behaves (advertise while free, accept a
connection, notify, drop the link, leave range) and checks what the reader did over
D-Bus: StartNotify/StopNotify/Disconnect calls, the D-Bus connections it holds, the
readings it delivered and its backoff delays.
"""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from fake_strap import FakeStrap
from omh_consolidator.forward import Backoff
from omh_consolidator.hrm import encode_heart_rate_measurement, parse_heart_rate_measurement
from omh_consolidator.metrics import Metrics
from omh_consolidator.reader import HeartRateReader

from tests.waiting import eventually

pytestmark = pytest.mark.dbus

BACKOFF = Backoff(initial_s=0.05, factor=2.0, cap_s=0.4, jitter=0.0)


def fast_reader(
    strap: FakeStrap, got: list[bytes], metrics: Metrics, **timeouts: float
) -> HeartRateReader:
    return HeartRateReader(
        strap.address.lower(),  # BlueZ spells it upper case; the reader must not care
        got.append,
        metrics,
        scan_timeout_s=0.3,
        backoff=BACKOFF,
        **{"connect_timeout_s": 5.0, **timeouts},
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def bus_connections(strap: FakeStrap) -> int:
    """Unique connections on the private bus (ours excluded)."""
    bus = await MessageBus(bus_address=strap.bluez.bus_address, bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="ListNames",
            )
        )
        assert reply is not None
        return sum(1 for name in reply.body[0] if name.startswith(":")) - 1
    finally:
        bus.disconnect()


def send(strap: FakeStrap, bpms: list[int]) -> list[bytes]:
    values = [
        encode_heart_rate_measurement(b, contact=True, rr_intervals_1024=[61440 // b]) for b in bpms
    ]
    for value in values:
        assert strap.notify(value), "nobody subscribed"
    return values


async def test_readings_arrive_and_parse(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.connected and strap.characteristic.notifying)
        sent = [
            encode_heart_rate_measurement(72, contact=True, rr_intervals_1024=[853]),
            encode_heart_rate_measurement(300, energy_kj=12),
            encode_heart_rate_measurement(65, contact=False),
        ]
        for value in sent:
            assert strap.notify(value)
        await eventually(lambda: len(got) == len(sent))
        assert got == sent  # every notification, in order, byte for byte
        parsed = [parse_heart_rate_measurement(v) for v in got]
        assert [(m.bpm, m.contact, m.energy_kj) for m in parsed] == [
            (72, True, None),
            (300, None, 12),
            (65, False, None),
        ]
        assert parsed[0].rr_intervals_s == (853 / 1024,)
        assert metrics.get("ble_connects_total") == 1
        assert metrics.get("ble_subscribed") == 1
        assert reader.state == "subscribed"
        assert strap.characteristic.start_notify_calls == 1
    finally:
        await stop(task)


async def test_a_dropped_link_is_cleaned_up_and_readings_resume(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.connected and strap.characteristic.notifying)
        connections_while_subscribed = await bus_connections(strap)
        before = send(strap, [70, 71])
        await eventually(lambda: len(got) == 2)

        first = strap.characteristic
        strap.drop()  # the strap ends the link (rebooted, say)
        await eventually(lambda: metrics.get("ble_disconnects_total") == 1)

        await eventually(lambda: strap.links == 2 and strap.characteristic.notifying)
        assert strap.characteristic is not first
        assert strap.characteristic.start_notify_calls == 1  # subscribed again on the new link
        assert first.stop_notify_calls == 0  # nothing to stop on a dead link
        after = send(strap, [90, 91, 92])
        await eventually(lambda: len(got) == 5)
        assert got == before + after
        assert metrics.get("ble_connects_total") == 2
        # the dead session's own D-Bus connection was released, not leaked
        assert await bus_connections(strap) == connections_while_subscribed
    finally:
        await stop(task)


async def test_out_of_range_backs_off_to_the_cap_then_reconnects(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.characteristic.notifying)
        strap.leave()  # the patient walked away: the link times out, no more adverts
        await eventually(lambda: reader.failures >= 5, within=15.0, what="5 failed scans")
        assert metrics.get("ble_attempt_failures_total", reason="not_found") >= 5
        # after the drop: initial delay, then one per failed scan, doubling up to the cap
        assert reader.delays[:6] == [0.05, 0.05, 0.1, 0.2, 0.4, 0.4]
        assert not strap.notify(encode_heart_rate_measurement(80))

        strap.come_back()
        await eventually(lambda: strap.characteristic.notifying, within=10.0)
        assert strap.links == 2
        assert reader.failures == 0  # the backoff starts over
        sent = send(strap, [80])
        await eventually(lambda: got == sent)
    finally:
        await stop(task)


async def test_refused_connections_are_retried(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    strap.refuse_connections = 2
    reader = fast_reader(strap, got, metrics)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.characteristic.notifying)
        assert strap.device.connect_calls == 3
        refused = metrics.total("ble_attempt_failures_total")
        assert refused == 2
        assert reader.delays == [0.05, 0.1]
    finally:
        await stop(task)


async def test_shutdown_stops_notifications_and_disconnects(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics)
    task = asyncio.create_task(reader.run())
    await eventually(lambda: strap.characteristic.notifying)
    connections = await bus_connections(strap)
    await stop(task)
    assert strap.characteristic.stop_notify_calls == 1
    assert not strap.characteristic.notifying
    assert strap.device.disconnect_calls == 1
    assert not strap.connected
    assert reader.state == "stopped"
    assert metrics.get("ble_subscribed") == 0
    assert metrics.get("ble_disconnects_total") == 0  # we left; the link did not drop
    assert await bus_connections(strap) == connections - 1  # the session's bus is closed


async def test_a_silent_subscription_on_a_live_link_is_ended_and_made_again(
    strap: FakeStrap,
) -> None:
    """The link stays up but nothing comes (a stuck notify session): the reader
    unsubscribes, disconnects and subscribes again, instead of waiting for ever."""
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics, silence_timeout_s=0.6)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.connected and strap.characteristic.notifying)
        first = strap.characteristic
        await eventually(lambda: strap.links == 2 and strap.characteristic.notifying, within=10)
        assert metrics.get("ble_silent_sessions_total") >= 1
        assert metrics.get("ble_disconnects_total") == 0  # the link never dropped
        assert first.stop_notify_calls == 1  # unsubscribed on the live link, then left
        sent = send(strap, [80])
        await eventually(lambda: got == sent)
    finally:
        await stop(task)


async def test_a_strap_that_keeps_notifying_keeps_its_session(strap: FakeStrap) -> None:
    got: list[bytes] = []
    metrics = Metrics()
    reader = fast_reader(strap, got, metrics, silence_timeout_s=0.6)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.connected and strap.characteristic.notifying)
        for bpm in range(60, 70):  # 2 s of readings, 0.2 s apart
            send(strap, [bpm])
            await asyncio.sleep(0.2)
        await eventually(lambda: len(got) == 10)
        assert strap.links == 1
        assert metrics.get("ble_silent_sessions_total") == 0
    finally:
        await stop(task)


async def test_a_start_notify_that_never_answers_is_given_up_and_tried_again(
    strap: FakeStrap,
) -> None:
    """bleak sets no timeout of its own on StartNotify: a stuck BlueZ call held the
    reader for ever, subscribed to nothing."""
    got: list[bytes] = []
    metrics = Metrics()
    strap.hang_start_notify = 1  # the first link's StartNotify never answers
    reader = fast_reader(strap, got, metrics, connect_timeout_s=0.8)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: strap.links == 2 and strap.characteristic.notifying, within=10)
        assert metrics.get("ble_attempt_failures_total", reason="TimeoutError") == 1
        sent = send(strap, [75])
        await eventually(lambda: got == sent)
    finally:
        await stop(task)
