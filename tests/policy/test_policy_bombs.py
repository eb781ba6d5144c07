"""YAML bombs in a policy file: refused at once, in bounded memory, with a line.

The service loads the policy at start and on every reload, and `check-policy`
reads what an operator hands it, so a small file that aliases expand to billions
of nodes must cost neither time nor memory anywhere. Memory is this process's
(the loader and the in-process app run in it).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from cloud4iot.policy.loader import MAX_NODES, PolicyError, parse_policy
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


@pytest.mark.timeout(20)  # the unbounded loader took 12 s and 2.2 GB on 7 levels
@pytest.mark.parametrize("text", [SEVEN_LEVELS, THREE_KB], ids=["7-levels", "3KB"])
def test_an_alias_bomb_is_refused_at_once_with_its_line(text):
    assert 2800 < len(THREE_KB.encode()) - len(GOOD.encode()) < 3300
    assert len(SEVEN_LEVELS.encode()) - len(GOOD.encode()) < 700
    assert text.splitlines()[FIRST_RUNG - 1] == "  lol: &l0 lol"
    with memory_growth() as growth:
        start = time.perf_counter()
        with pytest.raises(PolicyError) as info:
            parse_policy(text, "bomb.yaml")
        elapsed = time.perf_counter() - start
    [problem] = info.value.problems
    assert problem.file == "bomb.yaml"
    assert f"aliases expand the policy past {MAX_NODES} nodes" in problem.message
    assert "alias bomb" in problem.message
    # The first alias past the budget, where it is.
    assert FIRST_RUNG < problem.line <= FIRST_RUNG + 9
    assert problem.field.startswith("spec.l")
    assert elapsed < 0.2, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 20, f"peak RSS +{growth.peak_over_start:.0f} MiB"


@pytest.mark.timeout(20)
def test_check_policy_on_a_7_level_bomb_answers_in_well_under_a_second(tmp_path, capsys):
    bomb = tmp_path / "lol.yaml"
    bomb.write_text(SEVEN_LEVELS)
    with memory_growth() as growth:
        start = time.perf_counter()
        code = main(["check-policy", str(bomb)])
        elapsed = time.perf_counter() - start
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{bomb}:{FIRST_RUNG + 5}: spec.l5[0]: aliases expand the policy")
    assert elapsed < 0.3, f"{elapsed:.2f}s"
    assert growth.peak_over_start < 20, f"peak RSS +{growth.peak_over_start:.0f} MiB"


@pytest.mark.timeout(20)
def test_the_service_refuses_to_start_on_a_bomb_quickly(tmp_path, capsys):
    from extender.cli import extender_main

    bomb = tmp_path / "lol.yaml"
    bomb.write_text(SEVEN_LEVELS)
    start = time.perf_counter()
    assert extender_main(["--policy", str(bomb), "--port", "0"]) == 2
    assert time.perf_counter() - start < 0.3
    assert "alias bomb" in capsys.readouterr().err


@pytest.mark.timeout(30)
async def test_a_bomb_on_reload_keeps_the_last_good_policy_and_filter_fast(
    tmp_path, aiohttp_client
):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    store = PolicyStore.open(path)
    in_force = store.current
    settings = Settings(policy_path=path, policy_poll_interval=0.02)
    client = await aiohttp_client(
        create_app(settings, policy=store, state=StateStore(), sources=[])
    )
    body = orjson.dumps({"Pod": {"metadata": {"name": "p"}}, "NodeNames": []})
    slowest = 0.0
    with memory_growth() as growth:
        path.write_text(SEVEN_LEVELS)
        deadline = time.perf_counter() + 5
        while store.last_error is None and time.perf_counter() < deadline:
            start = time.perf_counter()
            assert (await client.post("/filter", data=body)).status == 200
            slowest = max(slowest, time.perf_counter() - start)
            await asyncio.sleep(0.005)
    assert store.last_error is not None, "the bomb was not refused within 5 s"
    assert "alias bomb" in str(store.last_error)
    assert store.current is in_force
    assert slowest < 0.1, f"/filter took {slowest:.3f}s during the reload"
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


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (MINIMAL + "x: &a [1, *a]\n", 9, "x[1]", "alias *a is inside the node it names"),
        (MINIMAL + "x: &a {y: *a}\n", 9, "x.y", "alias *a is inside the node it names"),
        (MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n", 9, "x[0]", "nested more than"),
        (MINIMAL + "x:\n" + "  - 1\n" * 30000, None, "x[", f"more than {MAX_NODES} nodes"),
        (MINIMAL + "? " + "[" * 5000 + "]" * 5000 + "\n: 1\n", 9, "", "nested more than"),
        (MINIMAL + "#" * (1 << 20) + "\n", 1, "", "more than the 1048576 a policy may have"),
    ],
    ids=["cycle-list", "cycle-map", "deep", "many-nodes", "deep-key", "huge-file"],
)
def test_shapes_that_would_crash_or_exhaust_the_loader_are_problems(text, line, field, message):
    start = time.perf_counter()
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    # Plain YAML parses at roughly 50,000 nodes a second here, so reaching the node
    # budget takes ~0.4 s; a deep flow line ~0.15 s (the scanner looks 1024 characters
    # ahead for a key, however long the line).
    assert time.perf_counter() - start < (2.0 if "nodes" in message else 0.5)
    [problem] = info.value.problems
    assert line is None or problem.line == line
    assert problem.field.startswith(field)
    assert message in problem.message
