"""The extender's Runtime: every shared object its handlers read, under one AppKey.

`create_app` builds it once; the plain health listener and the admission listener
serve sub-apps that hold the same Runtime (`app[RUNTIME] = parent[RUNTIME]`), so a
handler finds the same store, policy and metrics whichever port it was reached on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from cloud4iot.policy.store import PolicyStore
from cloud4iot.tasks import Supervisor
from extender.metrics import Metrics
from extender.scoring import TableCache
from extender.settings import Settings
from extender.state.store import StateStore
from extender.tls import CertReloader
from extender.verdict_cache import VerdictCache


@dataclass(slots=True)
class Runtime:
    settings: Settings
    policy: PolicyStore
    state: StateStore
    # The evaluation time: wall time, or a state file's own time advancing from its `now`.
    clock: Callable[[], float]
    metrics: Metrics = field(default_factory=Metrics)
    tasks: Supervisor = field(default_factory=Supervisor)  # a dead task fails /healthz
    verdicts: VerdictCache = field(default_factory=VerdictCache)  # filter -> prioritize
    # The scorer's per-kind verdict tables, shared by the webhook and admission.
    tables: TableCache = field(default_factory=TableCache)
    tls: CertReloader | None = None  # only when serving HTTPS
    admission_tls: CertReloader | None = None  # only with an admission port
    # Admission's own (it runs in its own thread: extender/admission/server.py).
    admission_rng: random.Random = field(default_factory=random.Random)
    admission_tables: TableCache = field(default_factory=TableCache)


RUNTIME = web.AppKey("runtime", Runtime)
