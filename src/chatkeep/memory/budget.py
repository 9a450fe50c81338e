"""How many bytes this process may use: configured, or derived from its limits.

When ``CHATKEEP_MEMORY_BUDGET`` is unset, the budget is the smallest of

* the cgroup v2 ``memory.max`` and ``memory.high`` of this process's cgroup and of its
  ancestors (a parent's limit binds its children too), found through ``/proc/self/cgroup``;
* the cgroup v1 ``memory.limit_in_bytes`` of the memory controller, likewise;
* the physical RAM of the machine.

Containers often show a cgroup path from the host's namespace that does not exist inside the
container's ``/sys/fs/cgroup``; walking up to the mount root finds the container's own limit
in that case. Missing or unreadable files are skipped: a budget is always found, because RAM
is always there.

The file system root is a parameter so that tests build a fake ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

from chatkeep.settings import parse_size

logger = logging.getLogger(__name__)

#: cgroup v1 reports "no limit" as a page-rounded huge number (about 2**63); anything this
#: large is no limit a machine could have.
_V1_UNLIMITED = 1 << 62

_CGROUP_ROOT = PurePosixPath("sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """The memory budget in bytes and where it came from."""

    bytes: int
    source: str
    """``configured``, ``cgroup2:memory.max``, ``cgroup2:memory.high``,
    ``cgroup1:memory.limit_in_bytes`` or ``physical``."""
    path: str | None = None
    """The file the limit was read from, for cgroup sources."""

    def __post_init__(self) -> None:
        if self.bytes <= 0:
            raise ValueError("a memory budget must be a positive number of bytes")

    def as_dict(self) -> dict[str, object]:
        """A JSON-able view, for the startup log and ``/admin``."""
        return {"bytes": self.bytes, "source": self.source, "path": self.path}


def resolve_budget(
    configured: int | str | None = None,
    *,
    root: Path = Path("/"),
    physical_memory: Callable[[], int] | None = None,
) -> MemoryBudget:
    """The configured budget when given, else the smallest detected limit.

    ``configured`` accepts what ``CHATKEEP_MEMORY_BUDGET`` accepts (``536870912``,
    ``512MiB``); ``None`` or an empty string means "derive it". A configured budget above a
    detected limit is kept (the operator may know better) but logged, because the kernel
    will act before the governor does.
    """
    read_ram = physical_memory if physical_memory is not None else _physical_memory
    limits = [*detect_cgroup_limits(root), MemoryBudget(read_ram(), "physical")]
    if configured is not None and not (isinstance(configured, str) and not configured.strip()):
        size = parse_size(configured)
        if size <= 0:
            raise ValueError(f"memory budget must be positive, got {configured!r}")
        budget = MemoryBudget(size, "configured")
        tightest = min(limits, key=lambda limit: limit.bytes)
        if size > tightest.bytes:
            logger.warning(
                "memory budget %d bytes is above the %s limit of %d bytes",
                size,
                tightest.source,
                tightest.bytes,
            )
        return budget
    return min(limits, key=lambda limit: limit.bytes)


def detect_cgroup_limits(root: Path = Path("/")) -> list[MemoryBudget]:
    """Every memory limit found for this process in cgroup v2 and v1 (may be empty)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    limits: list[MemoryBudget] = []
    for line in lines:
        # Each line is "hierarchy-id:controllers:path"; the path may itself hold colons.
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            mount = root / _CGROUP_ROOT
            for name in ("memory.max", "memory.high"):
                limits.extend(_limits_up_the_tree(mount, path, name, f"cgroup2:{name}"))
        elif "memory" in controllers.split(","):
            mount = root / _CGROUP_ROOT / "memory"
            name = "memory.limit_in_bytes"
            limits.extend(_limits_up_the_tree(mount, path, name, f"cgroup1:{name}"))
    return limits


def _limits_up_the_tree(mount: Path, path: str, name: str, source: str) -> Iterator[MemoryBudget]:
    for directory in _ancestors(mount, path):
        limit_file = directory / name
        value = _read_limit(limit_file)
        if value is not None:
            yield MemoryBudget(value, source, str(limit_file))


def _ancestors(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup's directory under ``mount`` and each parent up to the mount itself."""
    parts = [part for part in path.strip().split("/") if part not in ("", ".", "..")]
    for depth in range(len(parts), -1, -1):
        yield mount.joinpath(*parts[:depth])


def _read_limit(limit_file: Path) -> int | None:
    """A limit in bytes, or None for "max", the v1 unlimited value, or no readable file."""
    try:
        text = limit_file.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        logger.debug("ignoring unreadable memory limit %r in %s", text, limit_file)
        return None
    if value <= 0 or value >= _V1_UNLIMITED:
        return None
    return value


def _physical_memory() -> int:
    return int(psutil.virtual_memory().total)
