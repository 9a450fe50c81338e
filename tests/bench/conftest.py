"""The benchmark scripts import each other by bare name, as they run from ``bench/``."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    # Last, so that no name of a benchmark module hides an installed one.
    sys.path.append(str(BENCH))
