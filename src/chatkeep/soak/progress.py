"""Live progress of a soak: a rich bar on a terminal, plain lines elsewhere, or nothing.

The engine hands a `ProgressSnapshot` to a `ProgressSink` a few times a second; the sink
decides how (and how often) to show it, so `run_soak` stays silent when used as a library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a run stands."""

    elapsed: float
    completed: int
    errors: int
    rate: float
    """Requests per second over the last interval."""
    rss: int | None
    """Latest server RSS in bytes, when memory is sampled."""
    requests_limit: int | None
    duration_limit: float | None

    @property
    def fraction(self) -> float:
        """How far the run is towards whichever bound ends it first (0..1)."""
        parts = []
        if self.requests_limit:
            parts.append(self.completed / self.requests_limit)
        if self.duration_limit:
            parts.append(self.elapsed / self.duration_limit)
        return min(1.0, max(parts, default=0.0))

    def line(self) -> str:
        """A one-line summary, for logs and non-terminal output."""
        rss = f"{self.rss / _MIB:.1f} MiB" if self.rss is not None else "n/a"
        done = f"{self.completed}" + (f"/{self.requests_limit}" if self.requests_limit else "")
        return (
            f"[{self.elapsed:7.1f}s] requests {done}  rate {self.rate:.0f}/s  "
            f"errors {self.errors}  server rss {rss}"
        )


class ProgressSink(Protocol):
    """Receives snapshots while a run goes on."""

    def start(self) -> None:
        """The load begins."""
        ...

    def update(self, snapshot: ProgressSnapshot) -> None:
        """A new snapshot; called a few times a second."""
        ...

    def stop(self) -> None:
        """The load is over (also called after a failure)."""
        ...


class SilentProgress:
    """Shows nothing: the library default and ``--quiet``."""

    def start(self) -> None:
        """Nothing to start."""

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Ignore the snapshot."""

    def stop(self) -> None:
        """Nothing to stop."""


class PlainProgress:
    """One line every ``every`` seconds, for CI logs and pipes."""

    def __init__(self, console: Console, every: float = 5.0) -> None:
        self._console = console
        self._every = every
        self._last_printed = -float("inf")
        self._latest: ProgressSnapshot | None = None

    def start(self) -> None:
        """Nothing to draw yet."""

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Print when the last line is old enough."""
        self._latest = snapshot
        now = time.monotonic()
        if now - self._last_printed >= self._every:
            self._last_printed = now
            self._console.print(snapshot.line(), highlight=False, markup=False)

    def stop(self) -> None:
        """Print the final state once."""
        if self._latest is not None:
            self._console.print(self._latest.line(), highlight=False, markup=False)


class RichProgress:
    """A live bar with requests, rate, errors and server RSS."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]soak"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TextColumn("{task.fields[rate]:>8}"),
            TextColumn("errors [red]{task.fields[errors]}"),
            TextColumn("rss {task.fields[rss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self) -> None:
        """Show the bar."""
        self._progress.start()
        self._task = self._progress.add_task(
            "soak", total=1.0, done="0", rate="", errors="0", rss="n/a"
        )

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Move the bar and refresh the fields."""
        if self._task is None:
            return
        done = str(snapshot.completed)
        if snapshot.requests_limit:
            done += f"/{snapshot.requests_limit}"
        rss = f"{snapshot.rss / _MIB:.1f} MiB" if snapshot.rss is not None else "n/a"
        self._progress.update(
            self._task,
            completed=snapshot.fraction,
            done=done,
            rate=f"{snapshot.rate:.0f}/s",
            errors=str(snapshot.errors),
            rss=rss,
        )

    def stop(self) -> None:
        """Leave the final bar on screen."""
        self._progress.stop()


def make_progress(*, quiet: bool, console: Console | None = None) -> ProgressSink:
    """Silent with ``quiet``, a live bar on a terminal, plain lines otherwise."""
    if quiet:
        return SilentProgress()
    console = console or Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console)
    return PlainProgress(console)
