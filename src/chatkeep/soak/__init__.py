"""``chatkeep soak``: load a chatkeep or OpenAI-compatible server and judge its memory.

The engine is usable from code (the benchmark scripts do)::

    report = await run_soak(SoakConfig(url="http://127.0.0.1:8350", requests=10_000))
    write_report(report, Path("soak.json"))
"""

from chatkeep.soak.config import SoakConfig
from chatkeep.soak.load import run_soak
from chatkeep.soak.probe import MemoryProbe, MemoryReading, MetricsProbe, ProcessProbe
from chatkeep.soak.progress import ProgressSink, ProgressSnapshot, make_progress
from chatkeep.soak.report import SoakReport, write_report

__all__ = [
    "MemoryProbe",
    "MemoryReading",
    "MetricsProbe",
    "ProcessProbe",
    "ProgressSink",
    "ProgressSnapshot",
    "SoakConfig",
    "SoakReport",
    "make_progress",
    "run_soak",
    "write_report",
]
