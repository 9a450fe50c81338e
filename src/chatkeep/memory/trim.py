"""``malloc_trim(0)``: hand freed heap pages back to the kernel, on glibc only.

glibc keeps memory that Python freed inside its arenas, so RSS stays high after a cache is
emptied; ``malloc_trim`` releases the free pages at the top of each arena and in whole free
chunks. Other C libraries (musl, macOS, Windows) have no such call, and there the governor
simply goes without it.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MallocTrim = Callable[[int], object]
"""``malloc_trim(pad)``; the governor always passes 0."""


def load_malloc_trim(
    *,
    platform_name: str = sys.platform,
    libc_name: str | None = None,
    load: Callable[[str], Any] = ctypes.CDLL,
) -> MallocTrim | None:
    """glibc's ``malloc_trim``, or None where it does not exist or cannot be loaded."""
    if not platform_name.startswith("linux"):
        return None
    if libc_name is None:
        libc_name = platform.libc_ver()[0]
    if libc_name != "glibc":
        return None
    try:
        # The glibc soname is fixed; find_library would spawn ldconfig to learn the same.
        trim = load("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        logger.debug("malloc_trim is not available", exc_info=True)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trimmer: MallocTrim = trim
    return trimmer
