"""`openlsm info`: versions, device and which render backends are usable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Info:
    """Print versions, the compute device and the available render backends."""

    def run(self) -> int:
        import platform

        import numpy
        import torch
        from rich.console import Console
        from rich.table import Table

        import openlsm
        from openlsm.render import gsplat_available, numba_backend

        table = Table(title="openlsm", show_header=False)
        table.add_row("openlsm", openlsm.__version__)
        table.add_row("python", platform.python_version())
        table.add_row("torch", torch.__version__)
        table.add_row("numpy", numpy.__version__)
        cuda = torch.cuda.is_available()
        table.add_row("device", torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)")
        ok, why = gsplat_available()
        table.add_row("render backends", "torch" + (", gsplat" if ok else f" (gsplat unavailable: {why})"))
        table.add_row("CPU kernels", "numba (compositing without gradients, kNN, stem conv, feature fit)"
                      if numba_backend.available() else "PyTorch (install openlsm[cpu] for numba: several times faster)")
        Console().print(table)
        return 0
