"""Device selection shared by the CLI and the Python API."""

from __future__ import annotations

import torch

from .errors import OpenLSMError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OpenLSMError("--device cuda was requested but CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise OpenLSMError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory for blocks up to 32 MB instead of mapping and unmapping each one.

    A CPU forward allocates and frees hundreds of multi-MB temporaries. By default glibc maps the large ones
    afresh and unmaps them when freed (and trims the heap top), so every new tensor page-faults on first touch.
    Served from a heap that is kept, the shipped `small` forward took about 10 % less on 2 CPU cores (ten paired
    runs, docs/benchmarks.md, session 12) at the same peak memory. This changes malloc for the whole process, so
    the CLI calls it and library users may. Returns whether it applied (False off glibc).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)))
