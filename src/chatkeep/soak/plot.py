"""The soak plot: server memory against requests on top, latency against requests below.

Drawn on a bare `Figure` with the Agg canvas rather than through ``pyplot``: no global
backend switch, no figure registry to leak, safe to call from a process that plots
elsewhere too.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from chatkeep.soak.report import SoakReport, judged_from

_MIB = 1024 * 1024


def write_plot(report: SoakReport, path: Path) -> None:
    """Save the run's plot as a PNG at ``path``."""
    figure = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    memory_axes, latency_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _draw_memory(memory_axes, report)
    _draw_latency(latency_axes, report)
    latency_axes.set_xlabel("requests completed")
    figure.suptitle(_title(report), fontsize=10)
    figure.savefig(path, format="png")


def _title(report: SoakReport) -> str:
    verdict = f"memory {report.verdict}"
    slope = report.slope_bytes_per_request
    if slope is not None:
        verdict += f" ({slope:+.0f} B/request after warm-up)"
    return (
        f"chatkeep soak: {report.target}\n"
        f"{report.requests} requests, {report.throughput:.0f} req/s, "
        f"{100.0 * report.success_rate:.2f}% ok, {verdict}"
    )


def _draw_memory(ax: Axes, report: SoakReport) -> None:
    ax.set_ylabel("server memory (MiB)")
    samples = report.memory_samples
    if not samples:
        ax.text(
            0.5, 0.5, "server memory not sampled", ha="center", va="center", transform=ax.transAxes
        )
        return
    xs = [s.requests for s in samples]
    ax.plot(xs, [s.rss / _MIB for s in samples], color="tab:blue", label="RSS")
    uss = [(s.requests, s.uss / _MIB) for s in samples if s.uss is not None]
    if uss:
        ax.plot(
            [x for x, _ in uss],
            [y for _, y in uss],
            "o",
            markersize=3,
            color="tab:green",
            label="USS",
        )
    if xs[-1] > xs[0]:
        # The trend test ignores everything left of this line.
        warm_end = xs[0] + report.config.warmup_fraction * (xs[-1] - xs[0])
        ax.axvline(warm_end, color="grey", linestyle=":", label="end of warm-up")
    _draw_trend(ax, report)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _draw_trend(ax: Axes, report: SoakReport) -> None:
    """The Theil-Sen line over the part of the run the verdict was judged on."""
    slope = report.slope_bytes_per_request
    start = judged_from(report.memory_samples, report.config)
    if slope is None or start is None:
        return
    judged = [s for s in report.memory_samples if s.requests >= start]
    if len(judged) < 2:
        return
    # The Theil-Sen intercept: the median of what the slope leaves unexplained.
    intercept = statistics.median(s.rss - slope * s.requests for s in judged)
    x0, x1 = judged[0].requests, judged[-1].requests
    ax.plot(
        [x0, x1],
        [(intercept + slope * x0) / _MIB, (intercept + slope * x1) / _MIB],
        color="tab:red",
        linestyle="--",
        label=f"trend, judged part: {slope:+.0f} B/request ({report.verdict})",
    )


def _draw_latency(ax: Axes, report: SoakReport) -> None:
    ax.set_ylabel("latency (ms)")
    points = report.latency_points
    ok = [p for p in points if p.ok]
    failed = [p for p in points if not p.ok]
    if ok:
        ax.plot(
            [p.request for p in ok],
            [p.latency * 1000.0 for p in ok],
            ".",
            markersize=2,
            alpha=0.5,
            color="tab:purple",
            label="latency",
        )
        with_ttft = [p for p in ok if p.ttft is not None]
        if with_ttft:
            ax.plot(
                [p.request for p in with_ttft],
                [(p.ttft or 0.0) * 1000.0 for p in with_ttft],
                ".",
                markersize=2,
                alpha=0.5,
                color="tab:orange",
                label="time to first token",
            )
    if failed:
        ax.plot(
            [p.request for p in failed],
            [p.latency * 1000.0 for p in failed],
            "x",
            markersize=4,
            color="tab:red",
            label="failed",
        )
    summary = report.latency_ms
    if summary is not None:
        for name, style in (("p50", "--"), ("p99", ":")):
            ax.axhline(
                float(summary[name]),
                color="black",
                linestyle=style,
                linewidth=0.8,
                label=f"{name} {float(summary[name]):.1f} ms",
            )
    if not points:
        ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
        return
    positive = [p.latency for p in points if p.latency > 0]
    if positive and max(positive) / min(positive) > 50:
        # A few slow outliers would flatten everything else on a linear scale.
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
