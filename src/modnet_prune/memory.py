"""Memory a job will need, checked before anything is allocated; and how freed memory is kept.

A size typed with one zero too many (`--size 100000`) should be one clear line naming the
number, not a traceback from the allocator, the OOM killer, or a half-written folder. The
estimates here are lower bounds (what the job needs at the very least), so a job that
could fit is never refused.
"""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

from .errors import UserError

# At least this much lives at once per input pixel in a MODNet forward: the float32 image
# and matte, and the full-resolution concatenation of the image with the upsampled fusion
# features (>= 1 channel) plus its inputs. Official widths need far more (~280 B).
FORWARD_BYTES_PER_PIXEL = 4 * (3 + 1 + 2 * (3 + 1))
# The synthetic portrait generator's peak per pixel: 224-243 B measured with tracemalloc
# at 128-256 px (float layers for the image, alpha, hair and background).
SYNTHETIC_BYTES_PER_PIXEL = 200


def _cgroup_free() -> int | None:
    """Bytes this container may still use under a cgroup v2 limit, None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_bytes() -> int | None:
    """Memory a new allocation can get now (MemAvailable, capped by a cgroup limit);
    None where the platform does not say."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_free()
    return free if cgroup is None else min(free, cgroup)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def require(needed: int, what: str) -> None:
    """Raise a UserError naming `what` when `needed` bytes exceed the memory available."""
    free = available_bytes()
    if free is not None and needed > free:
        raise UserError(f"{what} needs at least {_gib(needed)} of memory; {_gib(free)} is "
                        "available")


def require_forward(height: int, width: int, batch: int = 1, what: str | None = None) -> None:
    """Refuse a MODNet forward pass at batch x height x width that cannot fit."""
    require(batch * height * width * FORWARD_BYTES_PER_PIXEL,
            what or f"a forward pass at {batch}x3x{height}x{width}")


def require_synthetic(size: int, what: str | None = None) -> None:
    """Refuse generating a synthetic portrait at size x size that cannot fit."""
    require(size * size * SYNTHETIC_BYTES_PER_PIXEL,
            what or f"a synthetic portrait at {size}x{size}")


# glibc's mallopt parameters (malloc.h) and the defaults of the two set here
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP_FREE_BYTES = 2**31 - 1   # freed memory held at the top of the heap before trimming


def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Serve large allocations from glibc's heap and keep freed memory there for reuse.

    glibc gives every allocation above 32 MB its own mmap and unmaps it on free, so each
    training step at 512² (a 16x32x512x512 float activation alone is 512 MB) faults in all
    its pages again: the kernel's time exceeded torch's, and a distillation step of a 50 %
    student took 18.6 s instead of 7.6 on 2 cores (`benchmarks/malloc.md`). With mmap off
    and up to 2 GB kept free the pages stay mapped between steps; the price is a higher
    resident peak (~20 % at 512²). A process forked after this call inherits the kept pages:
    it must call `release_inherited_memory` first (the training loader's workers do).
    Process-wide; returns False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_off = libc.mallopt(_M_MMAP_MAX, 0)
    kept = libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_BYTES)
    return mmap_off == 1 and kept == 1


def release_inherited_memory() -> None:
    """In a forked child: give back the parent's free heap pages and use glibc's defaults.

    The child shares every heap page with its parent, freed ones included, until one side
    writes it; the parent reuses its kept free memory at every step, so each page it writes
    gets copied while the child holds the original: a 512² compress run with two such
    workers reached ~22 GB (`benchmarks/malloc.md`). Trimming drops those pages from the
    child's mapping only. A no-op where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
