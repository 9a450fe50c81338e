"""The memory budget: configured, or the smallest of cgroup limits and RAM (fake /proc, /sys)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chatkeep.memory.budget import MemoryBudget, detect_cgroup_limits, resolve_budget

GiB = 1024**3
MiB = 1024**2
V1_UNLIMITED = "9223372036854771712"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_configured_budget_wins(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", str(GiB))
    budget = resolve_budget("512MiB", root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert budget == MemoryBudget(512 * MiB, "configured")


def test_configured_integer_budget(tmp_path: Path) -> None:
    budget = resolve_budget(1_000_000, root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert budget.bytes == 1_000_000


def test_configured_budget_above_a_limit_is_kept_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", str(GiB))
    with caplog.at_level(logging.WARNING, logger="chatkeep.memory.budget"):
        budget = resolve_budget("2GiB", root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert budget.bytes == 2 * GiB
    assert "cgroup2:memory.max" in caplog.text


@pytest.mark.parametrize("bad", ["lots", "-5", "0"])
def test_bad_configured_budget_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        resolve_budget(bad, root=tmp_path, physical_memory=lambda: 16 * GiB)


def test_empty_configured_budget_means_derive(tmp_path: Path) -> None:
    budget = resolve_budget("  ", root=tmp_path, physical_memory=lambda: 8 * GiB)
    assert budget == MemoryBudget(8 * GiB, "physical")


def test_no_cgroup_files_falls_back_to_physical_ram(tmp_path: Path) -> None:
    assert detect_cgroup_limits(tmp_path) == []
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 8 * GiB)
    assert budget.source == "physical"
    assert budget.bytes == 8 * GiB


def test_cgroup_v2_memory_max(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/system.slice/chatkeep.service\n")
    write(tmp_path, "sys/fs/cgroup/system.slice/chatkeep.service/memory.max", str(GiB))
    write(tmp_path, "sys/fs/cgroup/system.slice/chatkeep.service/memory.high", "max\n")
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert budget.bytes == GiB
    assert budget.source == "cgroup2:memory.max"
    assert budget.path is not None
    assert budget.path.endswith("chatkeep.service/memory.max")


def test_cgroup_v2_memory_high_below_max_wins(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", str(GiB))
    write(tmp_path, "sys/fs/cgroup/app/memory.high", str(768 * MiB))
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert (budget.bytes, budget.source) == (768 * MiB, "cgroup2:memory.high")


def test_cgroup_v2_max_means_unlimited(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", "max\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.high", "max\n")
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 4 * GiB)
    assert budget == MemoryBudget(4 * GiB, "physical")


def test_a_parent_cgroup_limit_binds_the_child(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/pod/container\n")
    write(tmp_path, "sys/fs/cgroup/pod/container/memory.max", "max")
    write(tmp_path, "sys/fs/cgroup/pod/memory.max", str(3 * GiB))
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert budget.bytes == 3 * GiB


def test_namespaced_cgroup_root_is_read(tmp_path: Path) -> None:
    # Inside a container with its own cgroup namespace the path is "/" itself.
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    write(tmp_path, "sys/fs/cgroup/memory.max", str(2 * GiB))
    assert resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB).bytes == 2 * GiB


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "proc/self/cgroup",
        "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
    )
    write(tmp_path, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", str(GiB))
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB)
    assert (budget.bytes, budget.source) == (GiB, "cgroup1:memory.limit_in_bytes")


def test_cgroup_v1_unlimited_value_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
    assert detect_cgroup_limits(tmp_path) == []


def test_cgroup_v1_host_path_missing_in_container_uses_mount_root(tmp_path: Path) -> None:
    # The container sees the host's path, but its own limit sits at the mount root.
    write(tmp_path, "proc/self/cgroup", "4:memory:/kubepods/pod1/abc\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", str(GiB))
    assert resolve_budget(root=tmp_path, physical_memory=lambda: 16 * GiB).bytes == GiB


def test_ram_below_every_limit_wins(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", str(64 * GiB))
    budget = resolve_budget(root=tmp_path, physical_memory=lambda: 8 * GiB)
    assert budget.source == "physical"


def test_garbage_in_limit_files_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "garbage line\n0::/app\n")
    write(tmp_path, "sys/fs/cgroup/app/memory.max", "not a number")
    write(tmp_path, "sys/fs/cgroup/app/memory.high", "0")
    assert detect_cgroup_limits(tmp_path) == []


def test_default_physical_memory_reads_the_machine(tmp_path: Path) -> None:
    budget = resolve_budget(root=tmp_path)
    assert budget.source == "physical"
    assert budget.bytes > 0


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0, "configured")


def test_as_dict() -> None:
    assert MemoryBudget(5, "cgroup2:memory.max", "x").as_dict() == {
        "bytes": 5,
        "source": "cgroup2:memory.max",
        "path": "x",
    }
