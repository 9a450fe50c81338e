"""What the numbers were measured on: CPU, cores, memory, Python, the data directory's disk."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (``ext4``, ``tmpfs`` ...)."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, part.fstype
    return kind


def _virtualised() -> str | None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "virtual machine" if " hypervisor" in flags else None


def describe(data_dir: Path) -> dict[str, object]:
    """A JSON-able description of this machine."""
    memory = psutil.virtual_memory()
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": memory.total,
        "virtualisation": _virtualised(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "data_dir_filesystem": _filesystem(data_dir),
        # Other work on the machine when the run began: a busy machine skews every number.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
