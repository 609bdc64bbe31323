"""Refuse allocations that cannot fit before they are tried (an absurd layer size is a clear
error naming it, not an out-of-memory error from deep inside an array library)."""

from __future__ import annotations

import os


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(n_bytes: int, what: str, free: int | None = None):
    """A ValueError naming ``what`` if ``n_bytes`` exceed ``free`` device bytes (None: this
    machine's physical memory)."""
    limit, where = (free, "free on the device") if free is not None else (
        physical_memory(), "of memory on this machine")
    if limit is not None and n_bytes > limit:
        raise ValueError(f"{what} need {format_bytes(n_bytes)}, more than the "
                         f"{format_bytes(limit)} {where}")


def format_bytes(n: float) -> str:
    """``1.23e9`` -> ``'1.23 GB'`` (decimal units)."""
    units = ("B", "KB", "MB", "GB", "TB", "PB", "EB")
    power = 0
    while n >= 1000 and power < len(units) - 1:
        n, power = n / 1000, power + 1
    return f"{n:.3g} {units[power]}"
