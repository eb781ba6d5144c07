"""Typed keys of the aiohttp application's shared objects."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from cloud4iot.policy.store import PolicyStore
from cloud4iot.tasks import Supervisor
from extender.metrics import Metrics
from extender.settings import Settings
from extender.state.store import StateStore
from extender.tls import CertReloader
from extender.verdict_cache import VerdictCache

SETTINGS = web.AppKey("settings", Settings)
POLICY = web.AppKey("policy", PolicyStore)
STATE = web.AppKey("state", StateStore)
METRICS = web.AppKey("metrics", Metrics)
TASKS = web.AppKey("tasks", Supervisor)  # background tasks; a dead one fails /healthz
# The evaluation time: wall time, or a state file's own time advancing from its `now`.
CLOCK = web.AppKey[Callable[[], float]]("clock")
VERDICTS = web.AppKey("verdicts", VerdictCache)  # filter -> prioritize reuse
TLS = web.AppKey("tls", CertReloader)  # only when serving HTTPS
