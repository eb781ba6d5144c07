"""The demo timeline as a PNG: stacked panels sharing one time axis.

From the top: what happened (the demo's steps and the rebalancer's moves, each
move also a vertical line through every panel, coloured by its reason), the
RSSI each gateway reports for every device with the nearest decision shaded,
each node's load (memory solid, CPU dotted) with the consolidator's limits, and
where each function's Ready pods ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text

from demo.timeline import Timeline

NODE_COLOURS = ["#1f77b4", "#ff7f0e", "#7f7f00", "#7f7f7f", "#8c564b", "#bcbd22", "#17becf"]
FUNCTION_COLOURS = ["#c2185b", "#00897b", "#5e35b1", "#6d4c41"]
REASON_COLOURS = {
    "Roaming": "#6a3d9a",
    "Offloading": "#d62728",
    "Onloading": "#2ca02c",
    "DeviceAway": "#555555",
    "DeviceBack": "#555555",
}
# The class whose load limits the load panel shows (the consolidator's).
LIMITS_CLASS = "mhealth-consolidator"


def runs(
    times: Sequence[float], values: Sequence[object], end: float
) -> list[tuple[float, float, object]]:
    """(start, stop, value) for each run of equal consecutive values; a sample's value
    holds until the next sample (the last one until `end`)."""
    out: list[tuple[float, float, object]] = []
    for i, value in enumerate(values):
        stop = times[i + 1] if i + 1 < len(times) else end
        if out and out[-1][2] == value and out[-1][1] == times[i]:
            out[-1] = (out[-1][0], stop, value)
        else:
            out.append((times[i], stop, value))
    return out


def _label_rows(ax: Axes, texts: Iterable[Text], levels: Sequence[float]) -> None:
    """Move each label (left to right) to the first level where it overlaps no other;
    a label that would stick out on the right is right-aligned at its time instead."""
    right_edge = ax.get_window_extent().x1
    placed: dict[float, list[tuple[float, float]]] = {level: [] for level in levels}
    for text in sorted(texts, key=lambda t: t.get_position()[0]):
        if text.get_window_extent().x1 > right_edge:
            text.set_horizontalalignment("right")
        for level in levels:
            text.set_y(level)
            box = text.get_window_extent()
            if all(box.x0 > right + 6 or box.x1 < left - 6 for left, right in placed[level]):
                break
        placed[text.get_position()[1]].append((box.x0, box.x1))


def render(timeline: Timeline, png: Path, title: str = "make demo", dpi: int = 90) -> None:
    samples = timeline.samples
    times = [s.t for s in samples]
    end = max([*times, *(m.t for m in timeline.moves), 1.0])
    node_colour = {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(timeline.nodes)}

    rows = 1 + len(timeline.devices) + 2
    ratios = [1.3] + [1.6 if i == 0 else 1.0 for i in range(len(timeline.devices))] + [1.6, 1.6]
    # No pyplot: a Figure on the Agg canvas, no global state, no display needed.
    fig = Figure(figsize=(12, 2.0 + 1.25 * sum(ratios)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, gridspec_kw={"height_ratios": ratios, "hspace": 0.12})
    fig.subplots_adjust(left=0.1, right=0.79, top=0.95, bottom=0.06)
    fig.suptitle(f"{title}: timeline (started {_utc(timeline.started_at)})", fontsize=12)
    strip, *device_axes = axes[: 1 + len(timeline.devices)]
    load_ax, place_ax = axes[-2], axes[-1]
    place_ax.set_xlim(0, end)  # first: the labels below are placed in pixels

    # --- what happened: the demo's steps, the rebalancer's moves ----------
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    for side in ("left", "right", "top"):
        strip.spines[side].set_visible(False)
    for y, what in ((0.95, "demo steps"), (0.04, "moves")):
        strip.text(
            -0.01,
            y,
            what,
            transform=strip.transAxes,
            ha="right",
            va="top" if y > 0.5 else "bottom",
            fontsize=9,
        )
    step_texts = []
    for mark in timeline.marks:
        strip.plot([mark.t], [1.0], "|", color="#666666", ms=8, clip_on=False)
        step_texts.append(
            strip.text(
                mark.t,
                0.95,
                f"{mark.step} {mark.label}",
                fontsize=8,
                color="#444444",
                ha="left",
                va="top",
            )
        )
    move_texts = []
    for move in timeline.moves:
        colour = REASON_COLOURS.get(move.reason, "#000000")
        route = f"{move.from_node or '-'} \u2192 {move.to_node or '-'}"
        strip.plot([move.t], [0.0], "v", color=colour, ms=7, clip_on=False)
        move_texts.append(
            strip.text(
                move.t,
                0.04,
                f"{move.reason}\n{route}",
                fontsize=8.5,
                color=colour,
                ha="center",
                va="bottom",
                fontweight="bold",
            )
        )
    _label_rows(strip, step_texts, [0.95, 0.8, 0.65])
    _label_rows(strip, move_texts, [0.04, 0.3])

    # --- RSSI per gateway, nearest decision shaded -------------------------
    for ax, device in zip(device_axes, timeline.devices, strict=True):
        states = [s.devices.get(device) for s in samples]
        gateways = sorted({g for st in states if st is not None for g in st.rssi})
        for start, stop, nearest in runs(times, [st.nearest if st else None for st in states], end):
            if isinstance(nearest, str):
                ax.axvspan(start, stop, color=node_colour.get(nearest, "#999999"), alpha=0.14, lw=0)
        for gw in gateways:
            values = [float(st.rssi[gw]) if st and gw in st.rssi else math.nan for st in states]
            ax.plot(
                times, values, color=node_colour.get(gw, "#000000"), lw=1.6, label=f"RSSI at {gw}"
            )
        ax.set_ylabel(f"{device}\nRSSI (dBm)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        nearest_nodes = sorted({st.nearest for st in states if st and st.nearest})
        handles += [Patch(color=node_colour.get(n, "#999999"), alpha=0.25) for n in nearest_nodes]
        labels += [f"nearest: {n}" for n in nearest_nodes]
        ax.legend(
            handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
        )

    # --- node load ---------------------------------------------------------
    for node in timeline.nodes:
        for resource, style in (("memory", "-"), ("cpu", ":")):
            values = [
                100 * s.load[node][resource] if resource in s.load.get(node, {}) else math.nan
                for s in samples
            ]
            ax_line = load_ax.plot(times, values, style, color=node_colour[node], lw=1.5)
            ax_line[0].set_label(node if resource == "memory" else "_")
    limits = timeline.limits.get(LIMITS_CLASS, {})
    for resource, style in (("memory", "-"), ("cpu", ":")):
        if resource in limits:
            load_ax.axhline(100 * limits[resource], ls=style, color="#d62728", lw=0.9, alpha=0.7)
    load_ax.set_ylim(0, 100)
    load_ax.set_ylabel("node load (%)", fontsize=9)
    load_ax.grid(axis="y", alpha=0.3)
    handles, labels = load_ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="#333333", ls="-", lw=1.5),
        Line2D([], [], color="#333333", ls=":", lw=1.5),
    ]
    labels += ["memory", "cpu"]
    if limits:
        handles.append(Line2D([], [], color="#d62728", lw=0.9))
        labels.append(
            "consolidator limits\n("
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in limits.items())
            + ")"
        )
    load_ax.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )

    # --- placement lane ----------------------------------------------------
    n_fn = max(1, len(timeline.functions))
    height = 0.7 / n_fn
    for i, function in enumerate(timeline.functions):
        offset = (i - (n_fn - 1) / 2) * height
        colour = FUNCTION_COLOURS[i % len(FUNCTION_COLOURS)]
        for y, node in enumerate(timeline.nodes):
            there = [node in s.functions.get(function, []) for s in samples]
            bars = [(a, b - a) for a, b, on in runs(times, there, end) if on]
            place_ax.broken_barh(bars, (y + offset - height / 2, height * 0.9), color=colour)
        place_ax.plot([], [], lw=6, color=colour, label=function)
    place_ax.set_yticks(range(len(timeline.nodes)), timeline.nodes, fontsize=9)
    place_ax.set_ylim(-0.6, len(timeline.nodes) - 0.4)
    place_ax.set_ylabel("Ready pods on", fontsize=9)
    place_ax.grid(axis="y", alpha=0.3)
    place_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    place_ax.set_xlabel("seconds since the demo started")

    # --- the moves through every panel --------------------------------------
    for move in timeline.moves:
        colour = REASON_COLOURS.get(move.reason, "#000000")
        for ax in axes[1:]:
            ax.axvline(move.t, color=colour, lw=1.3, alpha=0.85)
    reasons = sorted({m.reason for m in timeline.moves})
    if reasons:
        strip.legend(
            [Line2D([], [], color=REASON_COLOURS.get(r, "#000000"), lw=1.5) for r in reasons],
            [f"move: {r}" for r in reasons],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )
    fig.savefig(png, dpi=dpi)


def _utc(epoch: float) -> str:
    from cloud4iot.devices import rfc3339

    return rfc3339(epoch).replace("T", " ").replace("Z", " UTC")
