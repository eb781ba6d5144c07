"""How long the policy loader takes to refuse each bomb shape the tests feed it, and the
peak memory it grows by (this process's RSS high-water mark).

    .venv/bin/python -m bench.policy_refusal [--repeat 5]

(from the repository root). Each shape is parsed --repeat times; the minimum and the
median wall time are printed. The tests only assert a functional cap (5 s), the budget
that refused the shape and a memory bound; the speed lives here.
"""

from __future__ import annotations

import argparse
import statistics
import time

from cloud4iot.policy.loader import PolicyError, parse_policy
from tests.memory import memory_growth
from tests.policy.test_policy_bombs import MINIMAL, SEVEN_LEVELS, THREE_KB

SHAPES = {
    "7-level alias bomb": SEVEN_LEVELS,
    "3 KB alias bomb (64**9)": THREE_KB,
    "5,000-deep flow list": MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n",
    "30,000-item list": MINIMAL + "x:\n" + "  - 1\n" * 30000,
    "5,000-deep key": MINIMAL + "? " + "[" * 5000 + "]" * 5000 + "\n: 1\n",
    "1 MiB file": MINIMAL + "#" * (1 << 20) + "\n",
}


def refuse(text: str) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        parse_policy(text, "bench.yaml")
    except PolicyError as exc:
        return time.perf_counter() - start, exc.problems[0].message
    raise SystemExit("a bomb shape was accepted")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    print("| shape | refused in (min / median) | peak RSS growth | refused because |")
    print("|---|---|---|---|")
    for name, text in SHAPES.items():
        with memory_growth() as growth:
            runs = [refuse(text) for _ in range(args.repeat)]
        times = [t for t, _ in runs]
        why = runs[0][1].split(":")[0]
        print(
            f"| {name} | {min(times) * 1000:.0f} / {statistics.median(times) * 1000:.0f} ms"
            f" | {growth.peak_over_start:.1f} MiB | {why} |"
        )


if __name__ == "__main__":
    main()
