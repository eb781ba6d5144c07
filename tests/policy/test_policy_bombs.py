"""YAML bombs in a policy file: refused by a budget, in bounded memory, with a line.

The service loads the policy at start and on every reload, and `check-policy`
reads what an operator hands it, so a small file that aliases expand to billions
of nodes must cost neither time nor memory anywhere. What protects that is the
budget (MAX_NODES, MAX_DEPTH, MAX_BYTES) that refuses the file while it is being
composed: each test names the budget that refused it and bounds the memory (this
process's: the loader and the in-process app run in it). Speed is measured in
BENCHMARKS.md; here only a functional cap, `CAP`, far above normal (the slowest
refusal takes ~0.4 s here, the unbounded loader took 12 s and 2.2 GB on 7 levels).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from cloud4iot.policy import store as policy_store
from cloud4iot.policy.loader import MAX_BYTES, MAX_DEPTH, MAX_NODES, PolicyError, parse_policy
from cloud4iot.policy.store import PolicyStore
from extender.app import create_app
from extender.cli import main
from extender.settings import Settings
from extender.state.store import StateStore
from tests.memory import memory_growth
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "policies" / "default.yaml").read_text()

MINIMAL = """\
apiVersion: cloud4iot.io/v1alpha1
kind: PlacementPolicy
metadata:
  name: t
spec:
  classes:
    c:
      tiers: [gateway, edge]
"""


def laughs(levels: int, width: int = 10, then: str = "") -> str:
    """The default policy with a billion-laughs ladder under `spec`: level i repeats
    level i-1 `width` times, so the last one stands for width**levels strings."""
    rungs = ["  lol: &l0 lol"]
    for i in range(1, levels + 1):
        rungs.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return GOOD.replace("spec:\n", "spec:\n" + "\n".join(rungs) + "\n" + then, 1)


SEVEN_LEVELS = laughs(7)  # 10**7 strings from 0.6 KB of aliases
THREE_KB = laughs(9, width=64)  # 64**9 strings
FIRST_RUNG = GOOD.splitlines().index("spec:") + 2  # 1-based line of `lol: &l0 lol`
CAP = 5.0  # CPU seconds (not wall: a loaded CI stretches that): slower is broken, not slow


@pytest.mark.timeout(20)  # the unbounded loader took 12 s and 2.2 GB on 7 levels
@pytest.mark.parametrize("text", [SEVEN_LEVELS, THREE_KB], ids=["7-levels", "3KB"])
def test_an_alias_bomb_is_refused_at_once_with_its_line(text):
    assert 2800 < len(THREE_KB.encode()) - len(GOOD.encode()) < 3300
    assert len(SEVEN_LEVELS.encode()) - len(GOOD.encode()) < 700
    assert text.splitlines()[FIRST_RUNG - 1] == "  lol: &l0 lol"
    with memory_growth() as growth:
        start = time.process_time()
        with pytest.raises(PolicyError) as info:
            parse_policy(text, "bomb.yaml")
        elapsed = time.process_time() - start
    [problem] = info.value.problems
    assert problem.file == "bomb.yaml"
    assert f"aliases expand the policy past {MAX_NODES} nodes" in problem.message
    assert "alias bomb" in problem.message
    # The first alias past the budget, where it is.
    assert FIRST_RUNG < problem.line <= FIRST_RUNG + 9
    assert problem.field.startswith("spec.l")
    assert elapsed < CAP, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 20, f"peak RSS +{growth.peak_over_start:.0f} MiB"


@pytest.mark.timeout(20)
def test_check_policy_on_a_7_level_bomb_names_the_first_alias_past_the_budget(tmp_path, capsys):
    bomb = tmp_path / "lol.yaml"
    bomb.write_text(SEVEN_LEVELS)
    with memory_growth() as growth:
        start = time.process_time()
        code = main(["check-policy", str(bomb)])
        elapsed = time.process_time() - start
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        f"{bomb}:{FIRST_RUNG + 5}: spec.l5[0]: aliases expand the policy past {MAX_NODES} nodes"
    )
    assert elapsed < CAP, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 20, f"peak RSS +{growth.peak_over_start:.0f} MiB"


@pytest.mark.timeout(20)
def test_the_service_refuses_to_start_on_a_bomb(tmp_path, capsys):
    from extender.cli import extender_main

    bomb = tmp_path / "lol.yaml"
    bomb.write_text(SEVEN_LEVELS)
    with memory_growth() as growth:
        start = time.process_time()
        assert extender_main(["--policy", str(bomb), "--port", "0"]) == 2
        elapsed = time.process_time() - start
    err = capsys.readouterr().err
    assert f"aliases expand the policy past {MAX_NODES} nodes" in err
    assert "alias bomb" in err
    assert elapsed < CAP, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 20, f"peak RSS +{growth.peak_over_start:.0f} MiB"


HELD = 1.0  # seconds the reload's parse is held open so that /filter calls overlap it


@pytest.mark.timeout(30)
async def test_a_bomb_on_reload_keeps_the_last_good_policy_and_filter_answering(
    tmp_path, aiohttp_client, monkeypatch
):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    in_force = store.current
    # The reload's parse is held for HELD s (as a slow disk or a big file would): /filter
    # must keep answering meanwhile, that is, the reload must not run on the event loop.
    window: list[float] = []

    def held_parse(raw: bytes | str, source: str = "<policy>") -> object:
        window.append(time.monotonic())
        try:
            time.sleep(HELD)
            return parse_policy(raw, source)
        finally:
            window.append(time.monotonic())

    monkeypatch.setattr(policy_store, "parse_policy", held_parse)
    settings = Settings(policy_path=path, policy_poll_interval=0.02)
    client = await aiohttp_client(
        create_app(settings, policy=store, state=StateStore(), sources=[])
    )
    body = orjson.dumps({"Pod": {"metadata": {"name": "p"}}, "NodeNames": []})
    answered: list[float] = []
    with memory_growth() as growth:
        path.write_text(SEVEN_LEVELS)
        deadline = time.process_time() + HELD + CAP
        while store.last_error is None and time.process_time() < deadline:
            assert (await client.post("/filter", data=body)).status == 200
            answered.append(time.monotonic())
            await asyncio.sleep(0.005)
    assert store.last_error is not None, f"the bomb was not refused within {HELD + CAP} s"
    assert "alias bomb" in str(store.last_error)
    assert f"aliases expand the policy past {MAX_NODES} nodes" in str(store.last_error)
    assert store.current is in_force
    [began, ended] = window
    during = [t for t in answered if began < t < ended]
    # Every 5 ms for a second: dozens; a reload on the loop lets none through.
    assert len(during) >= 5, f"/filter answered {len(during)} times during a {HELD} s reload"
    assert growth.peak_over_start < 30, f"peak RSS +{growth.peak_over_start:.0f} MiB"
    ready = await (await client.get("/readyz")).json()
    assert any(d.startswith("policy: last reload refused") for d in ready["degraded"])
    path.write_text(GOOD.replace("loadMaxAge: 30s", "loadMaxAge: 40s"))
    await eventually(lambda: store.last_error is None, 5, "the good policy to apply")
    assert store.current.policy.spec.stale_data.load_max_age == 40.0


def test_anchors_within_the_budget_still_work_but_a_bomb_in_them_does_not():
    # An operator sharing one class's settings with another is fine.
    shared = MINIMAL.replace(
        "    c:\n      tiers: [gateway, edge]\n",
        "    c: &common\n      tiers: [gateway, edge]\n      proximity: preferred\n"
        "    d:\n      <<: *common\n      tiers: [gateway]\n",
    )
    classes = parse_policy(shared, "p.yaml").policy.spec.classes
    assert [t.value for t in classes["d"].tiers] == ["gateway"]
    assert classes["d"].proximity.value == "preferred"
    # A merge is no way around the budget: its alias is counted where it is.
    bomb = laughs(4, then="  y:\n    <<: {a: *l4}\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(bomb, "p.yaml")
    [problem] = info.value.problems
    assert problem.field == "spec.y.<<.a"
    assert "alias bomb" in problem.message


DEEP = f"nested more than {MAX_DEPTH} levels deep"


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (MINIMAL + "x: &a [1, *a]\n", 9, "x[1]", "alias *a is inside the node it names"),
        (MINIMAL + "x: &a {y: *a}\n", 9, "x.y", "alias *a is inside the node it names"),
        (MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n", 9, "x[0]", DEEP),
        (MINIMAL + "x:\n" + "  - 1\n" * 30000, None, "x[", f"more than {MAX_NODES} nodes"),
        (MINIMAL + "? " + "[" * 5000 + "]" * 5000 + "\n: 1\n", 9, "", DEEP),
        (MINIMAL + "#" * (1 << 20) + "\n", 1, "", f"more than the {MAX_BYTES} a policy may have"),
    ],
    ids=["cycle-list", "cycle-map", "deep", "many-nodes", "deep-key", "huge-file"],
)
def test_shapes_that_would_crash_or_exhaust_the_loader_are_problems(text, line, field, message):
    with memory_growth() as growth:
        start = time.process_time()
        with pytest.raises(PolicyError) as info:
            parse_policy(text, "p.yaml")
        elapsed = time.process_time() - start
    # Reaching the node budget takes ~0.4 s here, a deep flow line ~0.15 s (BENCHMARKS.md).
    assert elapsed < CAP, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 30, f"peak RSS +{growth.peak_over_start:.0f} MiB"
    [problem] = info.value.problems
    assert line is None or problem.line == line
    assert problem.field.startswith(field)
    assert message in problem.message
