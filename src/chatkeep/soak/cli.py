"""``chatkeep soak``: the load-and-leak harness on the command line.

Exit codes, so a CI job can be gated on a run: ``0`` passed, ``1`` the memory verdict is
``growing`` or the success rate is below ``--min-success``, ``2`` bad options.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console
from rich.table import Table

from chatkeep.soak.config import DEFAULT_MESSAGE, SoakConfig
from chatkeep.soak.load import run_soak
from chatkeep.soak.progress import make_progress
from chatkeep.soak.report import SoakReport, report_format, write_report

_MIB = 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add the ``soak`` command to ``app``."""
    app.command("soak")(soak)


def soak(
    url: Annotated[
        str | None, typer.Option(help="chatkeep base URL: conversations are created and used.")
    ] = None,
    openai: Annotated[
        str | None,
        typer.Option(
            "--openai", help="OpenAI-compatible base URL (…, …/v1 or …/chat/completions)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (required with --openai).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="CHATKEEP_SOAK_API_KEY", help="Sent as 'Authorization: Bearer'."),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Streamed replies (measures TTFT).")
    ] = False,
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", min=1, help="Stop after N requests.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", "-d", min=0.001, help="Stop after S seconds.")
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", "-c", min=1, help="Workers (closed) / in-flight bound (open)."
        ),
    ] = 8,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Open loop at R requests per second.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per request.")] = 60.0,
    messages_per_conversation: Annotated[
        int, typer.Option(min=0, help="New conversation every K messages (0: one per worker).")
    ] = 0,
    message: Annotated[
        str, typer.Option(help="Message text; {n} becomes the request number.")
    ] = DEFAULT_MESSAGE,
    client_message_ids: Annotated[
        bool, typer.Option(help="Send a unique client_message_id with each message.")
    ] = False,
    pid: Annotated[
        int | None, typer.Option(help="Sample RSS/USS of this process and its children.")
    ] = None,
    metrics_url: Annotated[
        str | None, typer.Option(help="Sample memory from this Prometheus /metrics URL.")
    ] = None,
    sample_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between memory samples.")
    ] = 0.1,
    uss_every: Annotated[
        int, typer.Option(min=1, help="Read USS (slow) on every N-th sample only.")
    ] = 8,
    warmup: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Share of the run the trend test ignores.")
    ] = 0.2,
    leak_threshold: Annotated[
        float, typer.Option(min=0.0, help="Bytes/request from which a significant slope leaks.")
    ] = 256.0,
    min_success: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fail below this success rate.")
    ] = 0.99,
    report: Annotated[
        Path | None, typer.Option(help="Write the report here (.json, .yaml or .yml).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG plot here (memory and latency; needs chatkeep[soak])."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live progress and no summary.")
    ] = False,
) -> None:
    """Drive a chatkeep or OpenAI-compatible endpoint, watch the server's memory, judge leaks.

    Exits 1 when memory is growing or the success rate is below --min-success.
    """
    try:
        config = SoakConfig(
            url=url,
            openai_url=openai,
            model=model,
            api_key=api_key,
            stream=stream,
            requests=requests,
            duration=duration,
            concurrency=concurrency,
            rate=rate,
            timeout=timeout,
            messages_per_conversation=messages_per_conversation,
            message=message,
            client_message_ids=client_message_ids,
            pid=pid,
            metrics_url=metrics_url,
            sample_interval=sample_interval,
            uss_every=uss_every,
            warmup_fraction=warmup,
            leak_threshold=leak_threshold,
            min_success=min_success,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # Refuse bad output paths now rather than after an hour of load.
    if report is not None:
        try:
            report_format(report)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--report") from exc
    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter("the plot is a PNG: use a .png file name", param_hint="--plot")
    if plot is not None and not plotting_available():
        raise typer.BadParameter(
            "the plot needs matplotlib, which comes with the soak extra: "
            "pip install 'chatkeep[soak]' (or run without --plot)",
            param_hint="--plot",
        )
    if pid is not None and not psutil.pid_exists(pid):
        raise typer.BadParameter(f"no process with pid {pid}", param_hint="--pid")

    progress = make_progress(quiet=quiet)
    result = _run(lambda stop: run_soak(config, progress=progress, stop=stop))
    if report is not None:
        write_report(result, report)
    if plot is not None:
        # matplotlib takes a moment to import: only pay for it when a plot is wanted.
        from chatkeep.soak.plot import write_plot

        write_plot(result, plot)
    if not quiet:
        _print_summary(result, Console())
    if not result.passed:
        for reason in result.failures:
            Console(stderr=True).print(f"[red]FAILED[/red]: {reason}", highlight=False)
        raise typer.Exit(1)


def plotting_available() -> bool:
    """True when matplotlib, an optional dependency (``chatkeep[soak]``), can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _run(make: Callable[[asyncio.Event], Coroutine[Any, Any, SoakReport]]) -> SoakReport:
    """Run the soak on a fresh loop (uvloop when available); Ctrl-C ends it gracefully."""

    async def main() -> SoakReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = _stop_on_interrupt(loop, stop)
        try:
            return await make(stop)
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _stop_on_interrupt(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> bool:
    """The first Ctrl-C stops the load and still writes the report; a second one aborts."""

    def interrupted() -> None:
        stop.set()
        # Back to the default handler, which raises KeyboardInterrupt.
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not the main thread, or a platform without loop signal handlers.
        return False
    return True


def _print_summary(report: SoakReport, console: Console) -> None:
    table = Table(title="chatkeep soak", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("target", report.target)
    table.add_row("requests", f"{report.requests} in {report.duration:.2f}s")
    throughput = f"{report.throughput:.1f} req/s"
    if report.config.rate is not None:
        throughput += f" (open loop, asked for {report.config.rate:g})"
    table.add_row("throughput", throughput)
    table.add_row("success rate", f"{100.0 * report.success_rate:.3f} %")
    if report.errors:
        errors = ", ".join(f"{name}={n}" for name, n in sorted(report.errors.items()))
        table.add_row("errors", errors)
    for label, summary in (("latency", report.latency_ms), ("first token", report.ttft_ms)):
        if summary is not None:
            table.add_row(
                label,
                f"p50 {summary['p50']:.2f}  p90 {summary['p90']:.2f}  "
                f"p99 {summary['p99']:.2f}  max {summary['max']:.2f} ms",
            )
    samples = report.memory_samples
    if samples and report.memory_peak is not None:
        start, peak, end = samples[0].rss, report.memory_peak.rss, samples[-1].rss
        table.add_row(
            "server rss",
            f"start {start / _MIB:.1f}  peak {peak / _MIB:.1f}  end {end / _MIB:.1f} MiB",
        )
    elif report.probe is not None:
        table.add_row("server rss", f"not sampled: {report.probe_error or 'no reading'}")
    slope = report.slope_bytes_per_request
    verdict: str = report.verdict
    if report.verdict == "unknown" and report.trend is not None:
        verdict += " (too few samples after warm-up: run longer or lower --sample-interval)"
    elif slope is not None:
        verdict += f" ({slope:+.1f} bytes/request after warm-up)"
    table.add_row("memory verdict", verdict)
    table.add_row("result", "[green]passed[/green]" if report.passed else "[red]failed[/red]")
    console.print(table)
