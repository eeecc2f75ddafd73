"""`openlsm view OUT_DIR`: open an output folder in the web viewer (viser; CPU is enough)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class View:
    """Serve a reconstruction in the browser: Gaussians coloured by RGB, semantic class, feature PCA or a text
    query, and the input cameras. Needs the viewer extra: pip install 'openlsm[viewer]'."""

    folder: tyro.conf.Positional[Path]
    """Output folder of `openlsm reconstruct` (gaussians.ply; cameras.json and feature_map.safetensors if present)."""
    port: int = 8080
    """Port to serve on (the next free one if taken)."""
    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 shares the viewer with other machines on the network."""
    query: str = "chair"
    """Initial text of the relevancy query box."""
    text_weights: Path | None = None
    """CLIP text weights (LSeg checkpoint or CLIP state dict), for scenes whose features live in CLIP space."""

    def run(self) -> int:
        import time

        from openlsm.errors import OpenLSMError
        from openlsm.viewer import start_viewer

        if not 0 <= self.port <= 65535:  # viser would fail inside its server thread and leave the process hanging
            raise OpenLSMError(f"--port must be in 0..65535, got {self.port}")
        viewer = start_viewer(self.folder, port=self.port, host=self.host, query=self.query,
                              text_weights=self.text_weights)
        print(f"openlsm viewer: {viewer.url}  ({len(viewer.scene.gaussians):,} Gaussians, "
              f"ready in {viewer.startup_s:.2f} s; Ctrl+C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            viewer.stop()
        return 0
