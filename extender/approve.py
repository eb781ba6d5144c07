"""`cloud4iot devices approve|deny NAME`: the admin's word on a discovered Device (issue 25).

A DeviceClass in `approve` mode makes a Device pending (label cloud4iot.io/approval,
like a CertificateSigningRequest); the elected extender creates its functions only once
the label says approved. Denied Devices keep their name (so the address is not
rediscovered at once) and get no functions; they are forgotten like any discovered
Device after the class's forgetAfter without a sighting. Registered Devices (without the
class label) are refused: they have no approval to give. Runs with the admin's own
credentials; `--irk HEX` stores the device's Identity Resolving Key under the Device's
name in the Secret cloud4iot-identity-keys of the gateway monitors' namespace
(`--gateway-namespace`, created if absent), which only the monitors (and admins) may
read: they resolve its rotating resolvable private addresses to this Device with it.
Not in the Device (its deprecated `spec.identityKey`, readable by anyone who may list
Devices); a key found there is removed as it is moved. Each verb leaves an Event on the
Device (Approved, Denied), as the extender does for the automatic admission.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud4iot.devices import (
    API_VERSION,
    GATEWAY_NAMESPACE,
    GROUP,
    IDENTITY_KEYS_SECRET,
    KIND,
    MERGE_PATCH,
    PLURAL,
    VERSION,
)
from cloud4iot.events import event_body
from cloud4iot.vocabulary import (
    APPROVAL_APPROVED,
    APPROVAL_DENIED,
    APPROVAL_LABEL,
    CLASS_LABEL,
)

VERBS = {"approve": APPROVAL_APPROVED, "deny": APPROVAL_DENIED}
REASONS = {"approve": "Approved", "deny": "Denied"}
EVENT_NAMESPACE = "default"  # as the extender's Events on Devices
COMPONENT = "cloud4iot-cli"


def normalize_irk(text: str) -> str:
    """32 hex digits (colons or spaces allowed) -> lower case without separators, as
    written (the monitors try both byte orders); ValueError otherwise."""
    digits = re.sub(r"[:\s]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", digits):
        raise ValueError(f"--irk needs 16 bytes as 32 hex digits, not {text!r}")
    return digits


def approval_patch(obj: Mapping[str, Any], verb: str, irk: str | None = None) -> dict[str, Any]:
    """The merge patch that records `verb` on a discovered Device; ValueError otherwise."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = meta.get("name", "?")
    if CLASS_LABEL not in labels:
        raise ValueError(f"Device {name} was registered, not discovered: nothing to {verb}")
    patch: dict[str, Any] = {
        "metadata": {
            "labels": {APPROVAL_LABEL: VERBS[verb]},
            # fails with 409 if someone changed the Device since we read it
            "resourceVersion": meta.get("resourceVersion"),
        }
    }
    if irk is not None:
        normalize_irk(irk)  # refused before anything is written
        if "identityKey" in (obj.get("spec") or {}):
            # the deprecated copy readable by all who list Devices: the Secret has it now
            patch["spec"] = {"identityKey": None}
    return patch


def key_patch(name: str, irk: str) -> dict[str, Any]:
    """The merge patch that sets Device `name`'s key in the identity-keys Secret (and
    leaves the other Devices' keys as they are)."""
    return {"data": {name: base64.b64encode(normalize_irk(irk).encode()).decode()}}


def key_secret(name: str, irk: str, namespace: str) -> dict[str, Any]:
    """The identity-keys Secret holding only Device `name`'s key (when it is absent)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": IDENTITY_KEYS_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "cloud4iot"},
        },
        "type": "Opaque",
        **key_patch(name, irk),
    }


def store_key(core: Any, namespace: str, name: str, irk: str) -> None:
    """Device `name`'s IRK into the identity-keys Secret: patched if it exists, else
    created (patched after all if another approve created it meanwhile). Raises the
    client's ApiException."""
    from kubernetes import client

    for _ in range(3):
        try:
            core.patch_namespaced_secret(
                IDENTITY_KEYS_SECRET, namespace, key_patch(name, irk), _content_type=MERGE_PATCH
            )
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        try:
            core.create_namespaced_secret(namespace, key_secret(name, irk, namespace))
            return
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    raise client.ApiException(status=409, reason="Conflict (neither patched nor created)")


def approval_event(obj: Mapping[str, Any], verb: str, irk: bool, now: float) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    involved = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": str(meta.get("name", "?")),
        "uid": str(meta.get("uid", "")),
    }
    message = f"cloud4iot devices {verb}" + (" with an IRK" if irk else "")
    return event_body(involved, EVENT_NAMESPACE, REASONS[verb], message, now, COMPONENT)


def add_parser(sub: Any) -> None:
    dev = sub.add_parser("devices", help="approve or deny a discovered Device (approve mode)")
    verbs = dev.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        v = verbs.add_parser(verb, help=f"{verb} a pending discovered Device")
        v.add_argument("name")
        v.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG or ~/.kube/config")
        if verb == "approve":
            v.add_argument(
                "--irk",
                "--identity-key",
                dest="irk",
                help="the device's Identity Resolving Key (32 hex digits): the gateways "
                f"then follow its rotating private addresses; stored in the Secret "
                f"{IDENTITY_KEYS_SECRET} of the gateway monitors' namespace",
            )
            v.add_argument(
                "--gateway-namespace",
                default=os.environ.get("GATEWAY_NAMESPACE") or GATEWAY_NAMESPACE,
                help="the gateway monitors' namespace, where --irk is stored (env "
                f"GATEWAY_NAMESPACE; default {GATEWAY_NAMESPACE})",
            )
        v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(args.kubeconfig) if args.kubeconfig else None
    )
    with api:
        custom = client.CustomObjectsApi(api)
        try:
            obj: Any = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, args.name)
            irk = getattr(args, "irk", None)
            patch = approval_patch(obj, args.verb, irk)
            if irk is not None:  # the key first: an approved Device is followed at once
                where = f"Secret {args.gateway_namespace}/{IDENTITY_KEYS_SECRET}"
                try:
                    store_key(client.CoreV1Api(api), args.gateway_namespace, args.name, irk)
                except client.ApiException as exc:
                    print(
                        f"cloud4iot devices {args.verb} {args.name}: {where}: "
                        f"HTTP {exc.status} {exc.reason}; not approved",
                        file=sys.stderr,
                    )
                    return 1
            custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, args.name, patch)
        except ValueError as exc:
            print(f"cloud4iot devices {args.verb}: {exc}", file=sys.stderr)
            return 1
        except client.ApiException as exc:
            print(
                f"cloud4iot devices {args.verb} {args.name}: HTTP {exc.status} {exc.reason}",
                file=sys.stderr,
            )
            return 1
        try:
            event: Any = approval_event(obj, args.verb, irk is not None, time.time())
            client.CoreV1Api(api).create_namespaced_event(EVENT_NAMESPACE, event)
        except client.ApiException as exc:  # the verb stands; the Event is a courtesy
            print(f"warning: no {REASONS[args.verb]} Event: HTTP {exc.status}", file=sys.stderr)
    stored = f" (IRK in Secret {args.gateway_namespace}/{IDENTITY_KEYS_SECRET})" if irk else ""
    print(f"device/{args.name} {VERBS[args.verb]}{stored}")
    return 0
