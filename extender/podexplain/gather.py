"""`cloud4iot explain`: the reads (I/O), with the admin's own kube credentials.

Why the CLI builds the Snapshot itself rather than asking the running extender: the
extender's /explain is on the mutual-TLS port that only kube-scheduler's client key
opens, and putting it behind the apiserver (service proxy, or TokenReview plus
SubjectAccessReview on a new port) adds a listener to secure and still fails exactly
when an admin needs it most (the extender down or not ready). The extender's picture
is rebuilt from the same sources: Nodes, Devices and GatewayReports from the
apiserver (what the reflectors list, merged the same way), node load from the same
Prometheus queries (directly, or through the apiserver's service proxy with the
admin's credentials), the policy from the cloud4iot-policy ConfigMap the extender
mounts. The scorer is the one the webhook
calls. What can differ: the time of evaluation (now, here) and load sampled a few
seconds apart; both are printed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cloud4iot.devices import GROUP, PLURAL, REPORT_PLURAL, VERSION
from cloud4iot.policy.loader import LoadedPolicy, load_policy, parse_policy
from cloud4iot.policy.schema import PrometheusSpec
from extender.podexplain.report import Inputs
from extender.state.devices import device_facts
from extender.state.prometheus import merge_samples, parse_vector, with_preset
from extender.state.reports import SightingIndex, report_facts
from extender.state.snapshot import DeviceFacts, LoadSample, NodeFacts, Snapshot

POLICY_CONFIGMAP = "cloud4iot-policy"
POLICY_KEY = "policy.yaml"


class ExplainError(Exception):
    """Reported as `Error: ...` with kubectl's exit code 1."""


@dataclass
class Target:
    kubeconfig: Path | None
    context: str | None
    namespace: str | None
    system_namespace: str
    policy: Path | None
    prometheus_url: str | None
    prometheus_service: str | None  # NS/NAME:PORT, reached through the apiserver
    prometheus_preset: str | None


def api_client(target: Target) -> tuple[Any, str]:
    """A sync ApiClient from the admin's kubeconfig and the context's namespace."""
    from kubernetes import client, config
    from kubernetes.config import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(target.kubeconfig) if target.kubeconfig else None
        )
        chosen = next((c for c in contexts if c["name"] == target.context), None) or active
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(target.kubeconfig) if target.kubeconfig else None,
            context=target.context,
        )
    except (ConfigException, OSError) as exc:
        raise ExplainError(f"no usable kubeconfig: {exc}") from exc
    namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    assert isinstance(api, client.ApiClient)
    return api, str(namespace)


def _json(response: Any) -> Any:
    return orjson.loads(response.data)


def _api_error(exc: Any, what: str) -> ExplainError:
    status = getattr(exc, "status", None)
    if status == 404:
        return ExplainError(f"{what} not found (NotFound)")
    if status == 403:
        return ExplainError(f"{what}: forbidden: {getattr(exc, 'reason', exc)}")
    return ExplainError(f"{what}: {getattr(exc, 'reason', None) or exc}")


def read_policy(api: Any, target: Target) -> LoadedPolicy:
    if target.policy is not None:
        return load_policy(target.policy)
    from kubernetes import client
    from kubernetes.client import ApiException

    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(
            POLICY_CONFIGMAP, target.system_namespace
        )
    except ApiException as exc:
        raise _api_error(
            exc,
            f'configmap "{POLICY_CONFIGMAP}" in {target.system_namespace} (the policy in '
            "force; give --policy FILE or --system-namespace)",
        ) from exc
    text = (cm.data or {}).get(POLICY_KEY)
    if text is None:
        raise ExplainError(f"configmap {POLICY_CONFIGMAP} has no {POLICY_KEY}")
    return parse_policy(text, f"configmap {target.system_namespace}/{POLICY_CONFIGMAP}")


def read_pod(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client import ApiException

    try:
        resp = client.CoreV1Api(api).read_namespaced_pod(name, namespace, _preload_content=False)
    except ApiException as exc:
        raise _api_error(exc, f'pods "{name}" in namespace {namespace}') from exc
    pod: dict[str, Any] = _json(resp)
    return pod


def read_world(api: Any) -> tuple[dict[str, NodeFacts], dict[str, DeviceFacts]]:
    """Nodes, and Devices with the gateways' GatewayReports merged in, as the
    extender's reflectors list and merge them (extender/state/reports.py)."""
    from kubernetes import client
    from kubernetes.client import ApiException

    custom = client.CustomObjectsApi(api)
    try:
        nodes = _json(client.CoreV1Api(api).list_node(_preload_content=False))["items"]
        devices = _json(
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False)
        )["items"]
        reports = _json(
            custom.list_cluster_custom_object(GROUP, VERSION, REPORT_PLURAL, _preload_content=False)
        )["items"]
    except ApiException as exc:
        raise _api_error(exc, "listing nodes, devices and gatewayreports") from exc
    at = time.time()
    facts = {}
    for obj in nodes:
        f = NodeFacts.from_node(obj)
        facts[f.name] = f
    index = SightingIndex()
    index.set_nodes(facts)
    for obj in devices:
        try:
            d = device_facts(obj, observed_at=at)
        except ValueError:
            continue
        index.observe_device(d.name, None, d)
    for obj in reports:
        try:
            r = report_facts(obj, observed_at=at)
        except ValueError:
            continue
        index.observe_report(r.node, None, r)
    return facts, dict(index.merged)


def read_events(api: Any, pod: Mapping[str, Any], owner: Mapping[str, Any] | None) -> list[Any]:
    """The pod's Events and its workload's (the rebalancer records moves on both)."""
    from kubernetes import client
    from kubernetes.client import ApiException

    core = client.CoreV1Api(api)
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    selectors = [f"involvedObject.kind=Pod,involvedObject.name={meta.get('name')}"]
    if owner is not None:
        o = owner.get("metadata") or {}
        selectors.append(
            f"involvedObject.kind={owner.get('kind')},involvedObject.name={o.get('name')}"
        )
    uid = meta.get("uid")
    out: list[Any] = []
    for selector in selectors:
        try:
            resp = core.list_namespaced_event(
                namespace, field_selector=selector, _preload_content=False
            )
        except ApiException:
            continue  # Events help; their absence is not an error
        for e in _json(resp).get("items") or []:
            involved = e.get("involvedObject") or {}
            # An earlier pod of the same name (a StatefulSet's, a re-created one) is not this one.
            if involved.get("kind") == "Pod" and uid and involved.get("uid") not in (None, uid):
                continue
            out.append(e)
    return out


def read_owner(api: Any, pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Deployment (through its ReplicaSet) or StatefulSet that owns the pod."""
    from kubernetes import client
    from kubernetes.client import ApiException

    apps = client.AppsV1Api(api)
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    if not refs:
        return None
    kind, name = refs[0].get("kind"), refs[0].get("name")
    try:
        if kind == "ReplicaSet":
            rs = _json(apps.read_namespaced_replica_set(name, namespace, _preload_content=False))
            up = [r for r in rs["metadata"].get("ownerReferences") or [] if r.get("controller")]
            if not up or up[0].get("kind") != "Deployment":
                return None
            doc = _json(
                apps.read_namespaced_deployment(up[0]["name"], namespace, _preload_content=False)
            )
            doc["kind"] = "Deployment"
            return dict(doc)
        if kind == "StatefulSet":
            doc = _json(apps.read_namespaced_stateful_set(name, namespace, _preload_content=False))
            doc["kind"] = "StatefulSet"
            return dict(doc)
    except ApiException:
        return None
    return None


def _query(api: Any, target: Target, query: str, timeout: float) -> list[Any]:
    params = {"query": query, "timeout": f"{max(1, int(timeout * 1000))}ms"}
    if target.prometheus_url:
        import urllib.parse
        import urllib.request

        url = target.prometheus_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout + 2) as resp:
            doc = orjson.loads(resp.read())
    else:
        assert target.prometheus_service is not None
        namespace, _, service = target.prometheus_service.partition("/")
        path = f"/api/v1/namespaces/{namespace}/services/{service}/proxy/api/v1/query"
        resp = api.call_api(
            path,
            "GET",
            query_params=list(params.items()),
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout + 2,
        )
        doc = orjson.loads(resp[0].data)
    if doc.get("status") != "success":
        raise ExplainError(f"prometheus: {doc.get('error') or doc}")
    result = doc["data"]["result"]
    return result if isinstance(result, list) else []


def read_load(
    api: Any, target: Target, spec: PrometheusSpec
) -> tuple[dict[str, LoadSample], str | None, str | None]:
    """(samples, source, error): the extender's queries, asked once."""
    source = target.prometheus_url or (
        f"service {target.prometheus_service} (apiserver proxy)"
        if target.prometheus_service
        else None
    )
    if source is None:
        return {}, None, None
    spec = with_preset(spec, target.prometheus_preset)
    at = time.time()
    try:
        cpu, memory = (
            parse_vector(_query(api, target, q, spec.timeout), spec.node_label)
            for q in (spec.queries.cpu, spec.queries.memory)
        )
    except Exception as exc:  # an unreachable Prometheus: explain without load, say so
        return {}, source, f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
    return merge_samples(cpu, memory, at), source, None


def gather(target: Target, name: str) -> tuple[Inputs, Snapshot, LoadedPolicy, float]:
    api, default_ns = api_client(target)
    with api:
        namespace = target.namespace or default_ns
        pod = read_pod(api, namespace, name)
        policy = read_policy(api, target)
        nodes, devices = read_world(api)
        load, source, error = read_load(api, target, policy.policy.spec.prometheus)
        owner = read_owner(api, pod)
        events = read_events(api, pod, owner)
    now = time.time()
    snapshot = Snapshot(
        nodes=nodes,
        devices=devices,
        nodes_synced=True,
        devices_synced=True,
    )
    if source is not None and error is None:
        snapshot = snapshot.with_load(load, refreshed_at=now)
    inputs = Inputs(pod, events, owner, source, error)
    return inputs, snapshot, policy, now
