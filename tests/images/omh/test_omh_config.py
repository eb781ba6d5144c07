"""Settings from the environment; the strap's address from its Device object."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from omh_consolidator.config import ENV_VARS, ConfigError, device_address, from_env


def test_defaults_with_just_the_manifest_env() -> None:
    cfg = from_env(
        {
            "DEVICE_NAME": "patient-42-hr",
            "DEVICE_ADDRESS": "c0-ff-ee-00-00-42",
            "NODE_NAME": "gw-home",
            "INGEST_URL": "http://ingest.health.svc:8080/v1/batches",
        }
    )
    assert cfg.device_address == "C0:FF:EE:00:00:42"
    assert cfg.user_id == "patient-42-hr"
    assert cfg.source_name == "cloud4iot-omh-consolidator/patient-42-hr@gw-home"
    assert cfg.mode == "consolidate"
    assert cfg.window_s == 60
    assert (cfg.thresholds.low_bpm, cfg.thresholds.high_bpm, cfg.thresholds.repeat_s) == (
        40,
        150,
        60,
    )
    assert cfg.max_queue == 1440
    assert cfg.metrics_port == 9103


def test_no_ingest_url_means_stdout_and_no_address_means_the_device_object() -> None:
    cfg = from_env({"DEVICE_NAME": "patient-42-hr", "USER_ID": "p42", "MODE": "raw"})
    assert cfg.ingest_url is None
    assert cfg.device_address is None
    assert cfg.user_id == "p42"
    assert cfg.mode == "raw"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DEVICE_NAME"),
        ({"DEVICE_ADDRESS": "C0:FF:EE"}, "not a BLE address"),
        ({"DEVICE_NAME": "d", "MODE": "fast"}, "MODE"),
        ({"DEVICE_NAME": "d", "WINDOW_SECONDS": "0"}, "WINDOW_SECONDS"),
        ({"DEVICE_NAME": "d", "WINDOW_SECONDS": "a minute"}, "not a number"),
        ({"DEVICE_NAME": "d", "HR_LOW_BPM": "120", "HR_HIGH_BPM": "100"}, "thresholds"),
        ({"DEVICE_NAME": "d", "QUEUE_MAX_BATCHES": "0"}, "QUEUE_MAX_BATCHES"),
        ({"DEVICE_NAME": "d", "QUEUE_MAX_BATCHES": "1.5"}, "whole number"),
        # was served on 70000 % 65536 = 4464, where no probe or scrape looks
        ({"DEVICE_NAME": "d", "METRICS_PORT": "70000"}, "METRICS_PORT=70000 is not a port"),
        # was a bind error's traceback at start
        ({"DEVICE_NAME": "d", "METRICS_PORT": "9104"}, "METRICS_PORT and HANDOVER_PORT"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


# Every setting but these is a number, so a new one is tested here unless listed. Listed by
# hand on purpose: the product does not say which of its settings are numbers.
TEXTUAL = {
    "DEVICE_NAME",
    "DEVICE_ADDRESS",
    "USER_ID",
    "NODE_NAME",
    "INGEST_URL",
    "MODE",
    "QUEUE_DIR",
    "QUEUE_FSYNC",
    "HANDOVER_PEERS",
    "BLE_ADAPTER",
    "DBUS_SYSTEM_BUS_ADDRESS",
}
NUMERIC = sorted(ENV_VARS - TEXTUAL)


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_numeric_settings_must_be_finite(key: str, value: str) -> None:
    # nan passed `value < minimum`: WINDOW_SECONDS=nan made every reading raise,
    # DRAIN_SECONDS=nan skipped the drain, RETRY_MAX_SECONDS=nan made every delay nan
    with pytest.raises(ConfigError, match=f"{key}="):
        from_env({"DEVICE_NAME": "d", key: value})


async def device_api(doc: Any, status: int = 200) -> tuple[TestServer, list[str]]:
    seen: list[str] = []

    async def get(request: web.Request) -> web.Response:
        seen.append(f"{request.path} {request.headers.get('Authorization')}")
        return web.json_response(doc, status=status)

    app = web.Application()
    app.router.add_get("/apis/cloud4iot.io/v1alpha1/devices/{name}", get)
    server = TestServer(app)
    await server.start_server()
    return server, seen


async def test_the_address_is_read_from_the_device_object() -> None:
    server, seen = await device_api({"kind": "Device", "spec": {"address": "c0:ff:ee:00:00:42"}})
    try:
        async with aiohttp.ClientSession() as session:
            address = await device_address(
                session, "patient-42-hr", api=str(server.make_url("/")), token="t0k"
            )
    finally:
        await server.close()
    assert address == "C0:FF:EE:00:00:42"
    assert seen == ["/apis/cloud4iot.io/v1alpha1/devices/patient-42-hr Bearer t0k"]


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"kind": "Status"}, 404, "HTTP 404"),
        ({"spec": {}}, 200, "no spec.address"),
        ({"spec": {"address": "nope"}}, 200, "not a BLE address"),
    ],
)
async def test_a_missing_or_bad_device_is_a_clear_error(
    doc: Any, status: int, message: str
) -> None:
    server, _ = await device_api(doc, status)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ConfigError, match=message):
                await device_address(session, "x", api=str(server.make_url("/")), token="t")
    finally:
        await server.close()


async def test_outside_a_cluster_without_an_address_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="not running in a cluster"):
            await device_address(session, "x")
