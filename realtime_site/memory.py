"""Memory that a burst borrowed goes back to the operating system when it is freed.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after one big
image or frame, later big buffers come from the heap, which rarely shrinks: a process that decoded
one 4096x4096 image keeps ~70 MB it no longer uses. Fixing the threshold keeps every buffer of
``MMAP_THRESHOLD`` bytes or more in its own mapping, returned the moment it is freed. No Django:
the runner and the gateway both call it at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "return_large_buffers_to_the_os"]

log = logging.getLogger("realtime_site")
MMAP_THRESHOLD = 4 * 1024 * 1024  # above the buffers of a 1024x1024 frame: the happy path stays on the heap
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def return_large_buffers_to_the_os() -> bool:
    """Fix glibc's mmap threshold (and trim the heap above 1 MiB); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators return memory anyway
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, 1024 * 1024) == 1
    if not ok:
        log.debug("mallopt refused the thresholds")
    return ok
