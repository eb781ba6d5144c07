"""One replay: the chain under each policy, the baselines, and their scores per device."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud4iot.policy.loader import LoadedPolicy
from replay import baselines
from replay.chain import ChainConfig, ChainResult, run_chain
from replay.functions import FunctionStats
from replay.inputs import Advert, Recording
from replay.metrics import Reference, Score, Timeline, reference, score

BASELINES = ("ema-3s-6db", "strongest-5s", "hindsight")


@dataclass(slots=True)
class Evaluation:
    methods: list[str]
    per_device: dict[str, dict[str, Score]] = field(default_factory=dict)  # device -> method
    timelines: dict[str, dict[str, Timeline]] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)
    chains: dict[str, ChainResult] = field(default_factory=dict)  # method -> chain run

    def total(self, method: str) -> Score:
        out = Score()
        for scores in self.per_device.values():
            out.add(scores[method])
        return out

    def function_total(self, method: str) -> FunctionStats | None:
        chain = self.chains.get(method)
        if chain is None or not chain.functions:
            return None
        out = FunctionStats()
        for stats in chain.functions.values():
            out.add(stats)
        return out

    def _with_functions(
        self, method: str, summary: dict[str, Any], device: str | None = None
    ) -> dict[str, Any]:
        """A method's summary with its functions' moves and unplaced time (chains only)."""
        chain = self.chains.get(method)
        stats = (
            self.function_total(method)
            if device is None
            else (chain.functions.get(device) if chain else None)
        )
        return summary | (stats.summary() if stats is not None else {})

    def as_json(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "total": {m: self._with_functions(m, self.total(m).summary()) for m in self.methods},
            "devices": {
                d: {m: self._with_functions(m, s.summary(), d) for m, s in scores.items()}
                for d, scores in self.per_device.items()
            },
            "chain": {
                m: {
                    "adverts": c.adverts,
                    "applies": c.applies,
                    "seconds": round(c.seconds, 3),
                    "adverts_per_s": round(c.adverts / c.seconds) if c.seconds else None,
                }
                for m, c in self.chains.items()
            },
        }


def evaluate(
    recording: Recording,
    policies: Mapping[str, LoadedPolicy],
    truth: Mapping[str, Sequence[tuple[float, str]]] | None = None,
    config: ChainConfig | None = None,
    with_baselines: bool = True,
) -> Evaluation:
    """Replay ``recording`` under each named policy; score them and the baselines."""
    methods = list(policies) + (list(BASELINES) if with_baselines else [])
    ev = Evaluation(methods=methods)
    for name, policy in policies.items():
        ev.chains[name] = asyncio.run(run_chain(recording, policy, config))
    per_device: dict[str, list[Advert]] = {}
    for a in recording.adverts:
        per_device.setdefault(a.device, []).append(a)
    for device, adverts in sorted(per_device.items()):
        ref = reference(adverts, recording.gateways)
        ev.references[device] = ref
        lines: dict[str, Timeline] = {
            name: chain.decisions.get(device, []) for name, chain in ev.chains.items()
        }
        if with_baselines:
            lines["ema-3s-6db"] = baselines.ema_margin(adverts)
            lines["strongest-5s"] = baselines.strongest_mean(adverts, ref)
            lines["hindsight"] = baselines.hindsight(ref)
        ev.timelines[device] = lines
        dev_truth = (truth or {}).get(device)
        ev.per_device[device] = {m: score(lines[m], ref, dev_truth) for m in methods}
    return ev
