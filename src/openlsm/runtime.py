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
