"""`cloud4iot devices approve|deny NAME`: the admin's word on a discovered Device (issue 25).

A DeviceClass in `approve` mode makes a Device pending (label cloud4iot.io/approval,
like a CertificateSigningRequest); the elected extender creates its functions only once
the label says approved. Denied Devices keep their name (so the address is not
rediscovered at once) and get no functions; they are forgotten like any discovered
Device after the class's forgetAfter without a sighting. Registered Devices (without the
class label) are refused: they have no approval to give. Runs with the admin's own
credentials; `--irk HEX` stores the device's Identity Resolving Key in
`spec.identityKey`, which the gateway monitors read to resolve its rotating resolvable
private addresses to this Device. Each verb leaves an Event on the Device (Approved,
Denied), as the extender does for the automatic admission.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud4iot.devices import API_VERSION, GROUP, KIND, PLURAL, VERSION
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
        patch["spec"] = {"identityKey": normalize_irk(irk)}
    return patch


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
                "then follow its rotating private addresses",
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
    print(f"device/{args.name} {VERBS[args.verb]}")
    return 0
