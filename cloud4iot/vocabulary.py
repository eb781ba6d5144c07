"""Every name the product writes on or reads from Kubernetes objects, in one place.

Annotations and labels under `cloud4iot.io`, the scheduler profile our pods name,
and the well-known labels we read. The Device API's group/version/plural live
beside this in `cloud4iot.devices`. Standard library only.

No finalizer: nothing the product owns needs cleanup before deletion (the
rebalancer records its moves on the workloads themselves).
"""

from __future__ import annotations

# --- the scheduler profile (kube-scheduler's KubeSchedulerConfiguration) -------------
SCHEDULER_NAME = "cloud4iot-scheduler"  # pods placed by us name it in spec.schedulerName

# --- on pods (set by the workload's author) ------------------------------------------
FUNCTION_ANNOTATION = "cloud4iot.io/function"  # the policy's function class
DEVICE_ANNOTATION = "cloud4iot.io/device"  # the Device the function serves
MODE_ANNOTATION = "cloud4iot.io/mode"  # the function's operating mode
ARCHS_ANNOTATION = "cloud4iot.io/archs"  # CPU architectures the image runs on
OPT_OUT_ANNOTATION = "cloud4iot.io/narrowing"  # "off": admission leaves the pod unchanged

# --- on pods (set by the admission narrowing webhook) ---------------------------------
NARROWED_ANNOTATION = "cloud4iot.io/narrowed"  # the pod was pinned to its best nodes
# ... and what the pin was chosen from, at creation (`cloud4iot explain --history`): JSON
# {"candidates": [[node, score], ...] (the pin, best first), "device", "nearest"}
NARROWED_FROM_ANNOTATION = "cloud4iot.io/narrowed-from"

# --- on workloads (set by the rebalancer) ---------------------------------------------
PARKED_ANNOTATION = "cloud4iot.io/parked-replicas"  # replicas to restore when unparked
LAST_MOVE_ANNOTATION = "cloud4iot.io/last-move"  # JSON of the last move (survives failover)
MOVES_ANNOTATION = "cloud4iot.io/moves"  # JSON list of the last moves (explain --history)
# Set by the discovery controller when a DeviceClass parks a Device's functions: its own
# key, since the rebalancer restores a park of its annotation whose function class does
# not park (a DeviceClass decides this one, not the policy's function class).
DISCOVERY_PARKED_ANNOTATION = "cloud4iot.io/discovery-parked-replicas"
MOVED_ANNOTATION = "cloud4iot.io/rebalanced"  # on the pod template: triggers the rollout

# --- on Devices (set by the nearest writer) -------------------------------------------
NUDGE_ANNOTATION = "cloud4iot.io/proximity-changed"  # wakes watchers of the Device

# --- on Devices made from a DeviceClass's candidates (set by the discovery controller) -
CLASS_LABEL = "cloud4iot.io/device-class"  # the class it was discovered by (only those)
APPROVAL_LABEL = "cloud4iot.io/approval"  # pending | approved | denied (approve mode)
APPROVAL_PENDING, APPROVAL_APPROVED, APPROVAL_DENIED = "pending", "approved", "denied"

# --- node labels ----------------------------------------------------------------------
TIER_LABEL = "cloud4iot.io/tier"  # gateway | edge | cloud
# The admin's word that a node is a gateway whose sightings count. Under the
# node-restriction.kubernetes.io/ prefix, which the NodeRestriction admission plugin
# forbids kubelets to set on their own Node: a compromised node cannot make itself a
# gateway (TIER_LABEL stays for scheduling, but a kubelet may set it). Presence counts.
GATEWAY_LABEL = "node-restriction.kubernetes.io/cloud4iot-gateway"
ARCH_LABEL = "kubernetes.io/arch"  # well-known, set by the kubelet
