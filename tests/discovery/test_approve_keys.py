"""`cloud4iot devices approve NAME --irk HEX` stores the key in the identity-keys Secret
of the gateway monitors' namespace (patched, or created when absent), never in the
Device, which anyone who may list Devices reads; the apiserver is a recording fake."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client, config

from cloud4iot.devices import GROUP, IDENTITY_KEYS_SECRET, MERGE_PATCH, PLURAL, VERSION
from cloud4iot.vocabulary import APPROVAL_LABEL, APPROVAL_PENDING, CLASS_LABEL
from extender.cli import main as cloud4iot

NAME = "hr-strap-c0ffee000001"
IRK = "EC0234A357C8AD05341010A60A397D9B"


class FakeApiServer:
    """The calls `approve` makes, recorded; Secrets kept per (namespace, name)."""

    def __init__(self, device: dict[str, Any]) -> None:
        self.device = device
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.secret_status: int | None = None  # answer Secret calls with this error

    # kubernetes.client.ApiClient
    def __enter__(self) -> FakeApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    # CustomObjectsApi
    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> Any:
        assert (group, version, plural, name) == (GROUP, VERSION, PLURAL, NAME)
        return self.device

    def patch_cluster_custom_object(self, *args: Any) -> Any:
        self.calls.append(("patch device", args[-1]))
        return self.device

    # CoreV1Api
    def patch_namespaced_secret(
        self, name: str, namespace: str, body: Any, _content_type: str | None = None
    ) -> Any:
        self.calls.append(("patch secret", (namespace, name, body, _content_type)))
        if self.secret_status is not None:
            raise client.ApiException(status=self.secret_status, reason="Forbidden")
        if (namespace, name) not in self.secrets:
            raise client.ApiException(status=404, reason="Not Found")
        self.secrets[namespace, name]["data"].update(body["data"])
        return self.secrets[namespace, name]

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        self.calls.append(("create secret", (namespace, body)))
        assert body["metadata"]["namespace"] == namespace
        self.secrets[namespace, body["metadata"]["name"]] = body
        return body

    def create_namespaced_event(self, namespace: str, body: Any) -> Any:
        self.calls.append(("event", body["reason"]))
        return body


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    device = {
        "metadata": {
            "name": NAME,
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": {CLASS_LABEL: "hr-strap", APPROVAL_LABEL: APPROVAL_PENDING},
        },
        "spec": {"address": "C0:FF:EE:00:00:01"},
    }
    fake = FakeApiServer(device)
    monkeypatch.setattr(config, "new_client_from_config", lambda **kw: fake)
    monkeypatch.setattr(client, "CustomObjectsApi", lambda api: api)
    monkeypatch.setattr(client, "CoreV1Api", lambda api: api)
    monkeypatch.delenv("GATEWAY_NAMESPACE", raising=False)
    return fake


def stored(server: FakeApiServer, namespace: str) -> dict[str, str]:
    data = server.secrets[namespace, IDENTITY_KEYS_SECRET]["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_approve_with_an_irk_writes_the_secret_and_not_the_device(server: FakeApiServer) -> None:
    assert cloud4iot(["devices", "approve", NAME, "--irk", IRK]) == 0
    # created in the shipped monitors' namespace, holding this Device's key only
    assert stored(server, "cloud4iot-gateway") == {NAME: IRK.lower()}
    created = server.secrets["cloud4iot-gateway", IDENTITY_KEYS_SECRET]
    assert created["type"] == "Opaque"
    (device_patch,) = [body for what, body in server.calls if what == "patch device"]
    assert "spec" not in device_patch  # no identityKey in the Device
    assert device_patch["metadata"]["labels"] == {APPROVAL_LABEL: "approved"}
    assert [what for what, _ in server.calls] == [
        "patch secret",  # absent: 404
        "create secret",
        "patch device",  # approved only once the key is stored
        "event",
    ]
    # a second Device's key is merged in (a merge patch of that one key)
    server.calls.clear()
    other = "00112233445566778899aabbccddeeff"
    server.device["spec"]["identityKey"] = other  # and a legacy copy is removed
    assert cloud4iot(["devices", "approve", NAME, "--irk", other]) == 0
    (secret_call,) = [body for what, body in server.calls if what == "patch secret"]
    assert secret_call[3] == MERGE_PATCH
    assert secret_call[2] == {"data": {NAME: base64.b64encode(other.encode()).decode()}}
    assert stored(server, "cloud4iot-gateway") == {NAME: other}
    (device_patch,) = [body for what, body in server.calls if what == "patch device"]
    assert device_patch["spec"] == {"identityKey": None}


def test_approve_stores_the_key_in_the_gateway_namespace_given(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["devices", "approve", NAME, "--irk", IRK]
    assert cloud4iot([*args, "--gateway-namespace", "iot-gateways"]) == 0
    assert stored(server, "iot-gateways") == {NAME: IRK.lower()}
    monkeypatch.setenv("GATEWAY_NAMESPACE", "from-env")
    assert cloud4iot(args) == 0
    assert stored(server, "from-env") == {NAME: IRK.lower()}


def test_approve_without_the_secret_approves_nothing(
    server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.secret_status = 403
    assert cloud4iot(["devices", "approve", NAME, "--irk", IRK]) == 1
    assert "HTTP 403" in capsys.readouterr().err
    assert [what for what, _ in server.calls] == ["patch secret"]
    # a bad key: nothing written anywhere
    server.calls.clear()
    assert cloud4iot(["devices", "approve", NAME, "--irk", "0badc0de"]) == 1
    assert server.calls == []
    # no key: the Device is approved and no Secret touched
    assert cloud4iot(["devices", "approve", NAME]) == 0
    assert [what for what, _ in server.calls] == ["patch device", "event"]
