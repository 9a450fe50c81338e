"""The memory governor: budget, sampling, tiers of pressure, and the leak profiler.

`resolve_budget` finds how many bytes the process may use; a `MemorySampler` keeps a bounded
window of RSS samples; the `MemoryGovernor` turns each sample into a tier and its actions and
asks registered `Reclaimable` structures for memory back; `MemoryProfiler` names the lines
that grow. The trend statistics live in `chatkeep.domain.trend` (no I/O).
"""

from chatkeep.memory.budget import MemoryBudget, detect_cgroup_limits, resolve_budget
from chatkeep.memory.governor import (
    ACTIONS,
    TIERS,
    MemoryGovernor,
    Reclaimable,
    Tier,
    TierThresholds,
)
from chatkeep.memory.profiler import MemoryProfiler
from chatkeep.memory.sampler import (
    MemoryReading,
    MemorySample,
    MemorySampler,
    ProcessMemoryReader,
    ReadMemory,
)
from chatkeep.memory.trim import load_malloc_trim

__all__ = [
    "ACTIONS",
    "TIERS",
    "MemoryBudget",
    "MemoryGovernor",
    "MemoryProfiler",
    "MemoryReading",
    "MemorySample",
    "MemorySampler",
    "ProcessMemoryReader",
    "ReadMemory",
    "Reclaimable",
    "Tier",
    "TierThresholds",
    "detect_cgroup_limits",
    "load_malloc_trim",
    "resolve_budget",
]
