"""What each QUEUE_FSYNC policy costs: a burst of batches into the on-disk queue, then out.

    python -m devcluster bench omh-queue [--batches 2000] [--body 1200] [--dir DIR]

A burst of ``--batches`` summaries of ``--body`` bytes (a minute summary is ~1.2 KB) is
appended to a fresh ``BatchQueue`` under ``--dir`` (default: a temporary directory on the
disk of the current directory), on a running event loop as in the consolidator, until the
last one is on disk; then each is taken and marked sent, as an instant cloud would
acknowledge them, until that too is on disk. Printed: a Markdown row per policy,
batches/s in and out, fsync calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[1] / "images" / "omh-consolidator"
if str(IMAGE) not in sys.path:
    sys.path.insert(0, str(IMAGE))

from omh_consolidator.metrics import Metrics  # noqa: E402
from omh_consolidator.queue import FSYNC_POLICIES, Batch, BatchQueue, FsyncPolicy  # noqa: E402


async def one(root: Path, policy: FsyncPolicy, n: int, body: int) -> tuple[float, float, float]:
    metrics = Metrics()
    q = BatchQueue.open(root, f"bench-{policy}", metrics, max_batches=n, fsync=policy)
    batches = [Batch(i, f"bench/{policy}/{i}", "summary", b"x" * body, 3) for i in range(n)]
    t0 = time.perf_counter()
    for b in batches:
        q.append(b)
        await asyncio.sleep(0)  # the event loop turns between batches, as in a burst
    await q.sync()
    t1 = time.perf_counter()
    while (head := q.take()) is not None:
        q.done([head], "sent")
        await asyncio.sleep(0)
    await q.sync()
    t2 = time.perf_counter()
    q.close()
    return n / (t1 - t0), n / (t2 - t1), metrics.get("queue_fsyncs_total")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--body", type=int, default=1200)
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    print("| QUEUE_FSYNC | in (batches/s) | out (batches/s) | fsync calls |")
    print("| --- | --- | --- | --- |")
    for policy in FSYNC_POLICIES:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix=".omh-queue-bench-") as tmp:
            rate_in, rate_out, fsyncs = asyncio.run(one(Path(tmp), policy, args.batches, args.body))
        print(f"| {policy} | {rate_in:,.0f} | {rate_out:,.0f} | {fsyncs:,.0f} |")


if __name__ == "__main__":
    main()
