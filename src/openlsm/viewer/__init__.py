"""Web viewer (viser) of an `openlsm reconstruct` output folder.

    from openlsm.viewer import start_viewer
    viewer = start_viewer("out/", port=8080)   # non-blocking; open viewer.url in a browser
    viewer.stop()

viser is imported only by `start_viewer`, so the pure parts (colours, poses, folder reading) need no viser.
"""

from .app import MODES, Viewer, start_viewer
from .data import DEFAULT_LABELS, ViewScene, load_view_scene

__all__ = ["DEFAULT_LABELS", "MODES", "ViewScene", "Viewer", "load_view_scene", "start_viewer"]
