"""The extender-pair benchmark's Go client really refuses wrong answers, so what it
times is never an error path. Needs Go (tests marked `go`; `make go` checks it, and
without it they fail, never skip) and loopback only."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.extender_pair import (
    bench_policy,
    build_go,
    ours_argv,
    plan,
    run_loadgen,
    serving,
    summarise_profile,
    world,
)
from devcluster.processes import free_port


@pytest.fixture(scope="module")
def go_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    if shutil.which("go") is None:
        pytest.fail("Go is missing: run `make go` (it says what to install), or set GO_BIN")
    tmp = tmp_path_factory.mktemp("pair")
    binaries = build_go(tmp / "bin")
    w = world(40, devices_per_node=2)
    state, plan_file = tmp / "state.json", tmp / "plan.json"
    state.write_text(json.dumps(w))
    plan_file.write_text(json.dumps(plan(w)))
    policy = bench_policy(tmp / "policy.yaml")
    ours_port, noop_port = free_port(), free_port()
    ours, noop = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{noop_port}"
    with (
        serving([str(binaries["noop"]), "-addr", f"127.0.0.1:{noop_port}"], noop, 30),
        serving(ours_argv(ours_port, policy, state), ours, 30),
    ):
        yield {"loadgen": binaries["loadgen"], "plan": plan_file, "ours": ours, "noop": noop}


def _run(
    go_pair: dict[str, Path | str], target: str, workers: int = 2, **kw: bool
) -> dict[str, object]:
    loadgen, plan_file = Path(go_pair["loadgen"]), Path(go_pair["plan"])
    return run_loadgen(loadgen, str(go_pair[target]), plan_file, 32, workers, warmup=0, **kw)


@pytest.mark.go
def test_our_extender_passes_every_expectation(go_pair: dict[str, Path | str]) -> None:
    result = _run(go_pair, "ours")
    kinds = result["Kinds"]
    assert isinstance(kinds, dict)
    assert set(kinds) == {"confidential", "engine-intensive", "anonymiser", "unmanaged"}
    assert result["All"]["Pairs"] == 32  # type: ignore[index]


@pytest.mark.go
def test_noop_fails_the_confidential_expectation(go_pair: dict[str, Path | str]) -> None:
    # The no-op keeps every node, cloud ones included: a confidential pod's answer is wrong.
    # One worker: the mix starts with the confidential pod, so it is the first to fail.
    with pytest.raises(SystemExit, match=r"incorrect answer .*pod kind confidential"):
        _run(go_pair, "noop", workers=1)


@pytest.mark.go
def test_noop_passes_the_protocol_checks_alone(go_pair: dict[str, Path | str]) -> None:
    # So the failure above is the expectation, not the no-op's protocol.
    result = _run(go_pair, "noop", protocol_only=True)
    assert result["All"]["FilterBytesMean"] > 0  # type: ignore[index]


@pytest.mark.go
def test_wrong_expectation_fails_on_our_extender(
    go_pair: dict[str, Path | str], tmp_path: Path
) -> None:
    # An unmanaged pod expected to keep a node that is not in the request: refused.
    doc = json.loads(Path(go_pair["plan"]).read_text())
    unmanaged = next(c for c in doc["Cases"] if c["Kind"] == "unmanaged")
    unmanaged["Exact"] = [*doc["NodeNames"][:-1], "no-such-node"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match=r"pod kind unmanaged\): filter dropped"):
        run_loadgen(Path(go_pair["loadgen"]), str(go_pair["ours"]), bad, 8, 1, warmup=0)


def test_profile_summary_counts_self_and_total(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "run (aiohttp/web.py:1);handle (extender/webhook.py:2);judge (extender/scoring/x.py:3) 3\n"
        "run (aiohttp/web.py:1);loads (orjson) 1\n"
    )
    table, samples = summarise_profile(raw)
    assert samples == 4
    assert "| 75.0 | 75.0 | `judge (extender/scoring/x.py:3)` |" in table
    assert "| 75.0 | `handle (extender/webhook.py:2)` |" in table
