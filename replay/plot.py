"""The replay as a PNG, like the demo's timeline: per device, the 5 s mean RSSI each
gateway heard (top), and below it one band per method (and the truth) coloured by the
gateway decided, and where each policy's bound function ran, sharing the time axis.
Needs matplotlib (the ``replay`` extra)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from replay.evaluate import Evaluation

COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
MAX_DEVICES = 4  # one figure stays readable; the JSON has every device


def plot(
    ev: Evaluation, out: Path, truth: dict[str, list[tuple[float, str]]] | None = None
) -> None:
    devices = sorted(ev.references)[:MAX_DEVICES]
    fig = Figure(figsize=(12, 4.5 * max(1, len(devices))))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * max(1, len(devices)), 1, sharex=True, squeeze=False)[:, 0]
    for k, device in enumerate(devices):
        ref = ev.references[device]
        colour = {g: COLOURS[i % len(COLOURS)] for i, g in enumerate(ref.gateways)}
        top, bands = axes[2 * k], axes[2 * k + 1]
        for i, gw in enumerate(ref.gateways):
            top.plot(ref.times, ref.means[i], lw=0.8, color=colour[gw], label=gw)
        top.set_ylabel("5 s mean dBm")
        top.set_title(f"device {device}")
        top.legend(loc="upper right", fontsize=7, ncol=min(6, len(ref.gateways)))
        rows = dict(ev.timelines[device])
        for method, chain in ev.chains.items():  # where the bound function ran (black: off-gateway)
            stats = chain.functions.get(device)
            if stats is not None:
                rows[f"{method}: function"] = stats.placements
        if truth and device in truth:
            rows = {"truth": list(truth[device]), **rows}
        end = float(ref.times[-1]) if len(ref.times) else 0.0
        for row, (_method, line) in enumerate(rows.items()):
            for i, (t, node) in enumerate(line):
                stop = line[i + 1][0] if i + 1 < len(line) else end
                if node is not None and stop > t:
                    bands.broken_barh(
                        [(t, stop - t)], (row - 0.4, 0.8), color=colour.get(node, "k")
                    )
        bands.set_yticks(range(len(rows)), list(rows))
        bands.invert_yaxis()
        bands.legend(
            handles=[Patch(color=c, label=g) for g, c in colour.items()],
            loc="upper right",
            fontsize=7,
            ncol=min(6, len(colour)),
        )
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    # The file named, also without a suffix (matplotlib would write OUT.png instead).
    fig.savefig(out, dpi=110, format=out.suffix.lower().lstrip(".") or "png")
