"""The viser web viewer of an output folder: Gaussian splats coloured by RGB, semantic class, feature PCA or a
text-query relevancy, plus the input camera frustums.

    viewer = start_viewer("out/", port=8080)   # returns at once; the server runs in background threads
    print(viewer.url)                          # http://localhost:8080
    viewer.set_mode("Text query"); viewer.set_query("sofa")
    viewer.stop()
"""

from __future__ import annotations

import contextlib
import html
import io
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import OpenLSMError
from .colors import class_colors, covariances, label_palette, parse_labels, pca_colors, relevancy_colors
from .data import ViewScene, ensure_text_dim, load_view_scene
from .poses import c2w_to_wxyz_position, frustum_fov_aspect, initial_view, scene_extent

MODES = ("RGB", "Semantic class", "Feature PCA", "Text query")
SPLATS = "/gaussians"
DISPLAY_EXTENT = 10.0  # scene size in display units (see _add_splats)


def _import_viser():
    try:
        import viser
    except ImportError:
        raise OpenLSMError("the viewer needs viser: pip install 'openlsm[viewer]'") from None
    return viser


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


class Viewer:
    """A running viewer. GUI callbacks and the `set_*` methods share one lock, so colours never interleave."""

    def __init__(self, scene: ViewScene, server, encoder=None, query: str = "chair",
                 text_weights: str | Path | None = None):
        self.scene, self.server = scene, server
        self._encoder, self._text_weights = encoder, text_weights
        self._lock = threading.RLock()
        self.startup_s = 0.0  # set by start_viewer: folder read to scene served
        self.mode = "RGB"
        self.error: str | None = None
        self.label_ids: torch.Tensor | None = None  # [N] after the semantic mode
        self.heat: torch.Tensor | None = None  # [N] after the text-query mode
        g = scene.gaussians.detach().to("cpu", torch.float32)
        self._rgb = g.colors_dc  # [N, 3]
        self.colors = _np(self._rgb)  # [N, 3] what is shown now
        sample = g.means[:: max(1, len(g) // 20_000)]  # robust statistics need no more than ~20k centres
        self.world_scale = DISPLAY_EXTENT / scene_extent(sample)
        self._add_splats(g)
        self._add_cameras(sample)
        self._add_gui(query)

    # --- scene ---
    # viser stores covariances as float16 (smallest normal ~6e-5), so in a small scene the variances of
    # millimetre Gaussians (~1e-6) lose precision or vanish. The whole display world (splats, cameras, view) is
    # scaled by `world_scale` so the scene spans DISPLAY_EXTENT units; relative geometry is unchanged.
    def _add_splats(self, g) -> None:
        s = self.world_scale
        centers = _np(g.means * s)
        if hasattr(self.server.scene, "add_gaussian_splats"):
            self.splats = self.server.scene.add_gaussian_splats(
                SPLATS, centers=centers, covariances=_np(covariances(g.quats, g.log_scales) * s**2),
                rgbs=self.colors, opacities=_np(g.opacities)[:, None])
        else:  # older viser: points sized like the Gaussians
            size = float(g.scales.max(-1).values.median()) * 2 * s
            self.splats = self.server.scene.add_point_cloud(SPLATS, centers, self.colors, point_size=size)

    def _add_cameras(self, sample: torch.Tensor) -> None:
        s, cams = self.world_scale, self.scene.cameras
        self.camera_nodes = []
        if cams is not None:
            c2ws, Ks = cams.c2w.reshape(-1, 4, 4), cams.Ks.reshape(-1, 3, 3)
            wxyzs, positions = c2w_to_wxyz_position(c2ws)
            for i in range(len(c2ws)):
                fov, aspect = frustum_fov_aspect(Ks[i], cams.width, cams.height)
                name = self.scene.camera_names[i] if i < len(self.scene.camera_names) else str(i)
                self.camera_nodes.append(self.server.scene.add_camera_frustum(
                    f"/cameras/{i}", fov=fov, aspect=aspect, scale=0.04 * DISPLAY_EXTENT,
                    thickness=0.002 * DISPLAY_EXTENT, color=(255, 140, 0), wxyz=_np(wxyzs[i]),
                    position=_np(positions[i] * s)))
                self.camera_nodes.append(self.server.scene.add_label(f"/cameras/{i}/label", name))
            view = initial_view(c2ws[0], sample, Ks[0], cams.width, cams.height)
        else:  # outputs live in view 1's frame: look from its origin along +z
            view = initial_view(torch.eye(4), sample)
        position, target, up = (tuple(_np(v * k)) for v, k in zip(view, (s, s, 1.0)))
        self.server.scene.set_up_direction(up)
        init = self.server.initial_camera
        init.position, init.look_at, init.up = position, target, up
        if cams is not None:
            init.fov = frustum_fov_aspect(cams.Ks.reshape(-1, 3, 3)[0], cams.width, cams.height)[0]

    # --- GUI ---
    def _add_gui(self, query: str) -> None:
        gui = self.server.gui
        n, f = len(self.scene.gaussians), self.scene.gaussians.feature_dim
        gui.add_markdown(f"**{self.scene.folder.name}**: {n:,} Gaussians, {f}-d features")
        options = MODES if self.scene.has_features else MODES[:1]
        self.mode_input = gui.add_dropdown("Colour", options, initial_value="RGB")
        self.labels_input = gui.add_text("Labels", ", ".join(self.scene.labels), multiline=True,
                                         hint="comma-separated class names for the semantic mode")
        self.query_input = gui.add_text("Query", query, hint="text for the relevancy mode")
        self.cameras_input = gui.add_checkbox("Cameras", self.scene.cameras is not None)
        self.status = gui.add_markdown("")
        self.legend = gui.add_html("")
        self.mode_input.on_update(lambda _: self._recolor())
        self.labels_input.on_update(lambda _: self.mode_input.value == "Semantic class" and self._recolor())
        self.query_input.on_update(lambda _: self.mode_input.value == "Text query" and self._recolor())
        self.cameras_input.on_update(lambda _: self._show_cameras(self.cameras_input.value))

    def _show_cameras(self, visible: bool) -> None:
        for handle in self.camera_nodes:
            handle.visible = visible

    def encoder(self):
        """The text encoder of the scene's feature space, loaded on first use (MiniLM: offline, a few seconds)."""
        if self._encoder is None:
            from ..models.semantics.text import get_text_encoder

            name = self.scene.text_encoder
            if name == "clip" and self._text_weights is None:
                raise OpenLSMError("this scene lives in CLIP space: start the viewer with --text-weights "
                                   "(an LSeg checkpoint or a CLIP state dict) to query it")
            self.status.content = f"loading the {name} text encoder..."
            kwargs = {"weights": self._text_weights} if name == "clip" else {}
            self._encoder = get_text_encoder(name, **kwargs)
        return self._encoder

    def _compute(self, mode: str) -> torch.Tensor:
        if mode == "RGB":
            return self._rgb
        feats = self.scene.gaussians.features
        if feats is None:
            raise OpenLSMError("this scene has no semantic features")
        if mode == "Feature PCA":
            return pca_colors(feats, self.scene.pca)
        enc = self.encoder()
        ensure_text_dim(self.scene, enc.encode(["x"]).shape[-1])
        if mode == "Semantic class":
            labels = parse_labels(self.labels_input.value)
            rgb, self.label_ids = class_colors(self.scene.text_features(), labels, enc, self.scene.threshold)
            self._legend(labels)
            return rgb
        rgb, self.heat = relevancy_colors(self.scene.text_features(), self.query_input.value, enc)
        return rgb

    def _legend(self, labels: list[str]) -> None:
        ids = self.label_ids
        pal = (label_palette(len(labels)) * 255).round().int().tolist()
        rows = [f'<span style="color:rgb({r},{g},{b})">&#9632;</span> {html.escape(n)} '
                f'({int((ids == k).sum()):,})' for k, (n, (r, g, b)) in enumerate(zip(labels, pal))]
        if (ids == -1).any():
            rows.append(f'<span style="color:#303030">&#9632;</span> other ({int((ids == -1).sum()):,})')
        self.legend.content = '<div style="font-size:0.8em">' + "<br>".join(rows) + "</div>"

    def _recolor(self) -> None:
        with self._lock:
            mode = self.mode_input.value
            t0 = time.perf_counter()
            try:
                rgb = self._compute(mode)
            except OpenLSMError as e:  # shown in the panel; the previous colours stay
                self.error = str(e)
                self.status.content = f"**{html.escape(str(e))}**"
                return
            self.error, self.mode = None, mode
            if mode != "Semantic class":
                self.legend.content = ""
            self.colors = _np(rgb)
            if hasattr(self.splats, "rgbs"):
                self.splats.rgbs = self.colors
            else:
                self.splats.colors = (self.colors * 255).astype(np.uint8)
            self.status.content = f"{mode}: {1e3 * (time.perf_counter() - t0):.0f} ms"

    # --- API for scripts and tests ---
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1', '::', '') else host}:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise OpenLSMError(f"unknown colour mode {mode!r} (choose from {', '.join(MODES)})")
        with self._lock:
            if self.mode_input.value == mode:
                self._recolor()
            else:
                self.mode_input.value = mode  # runs the update callback

    def set_labels(self, labels: list[str] | str) -> None:
        self.labels_input.value = labels if isinstance(labels, str) else ", ".join(labels)

    def set_query(self, query: str) -> None:
        self.query_input.value = query

    def stop(self) -> None:
        self.server.stop()


def start_viewer(folder: str | Path, port: int = 8080, host: str = "127.0.0.1", *, encoder=None,
                 query: str = "chair", text_weights: str | Path | None = None) -> Viewer:
    """Load `folder` and serve it; returns at once (port 0: a free port). Bad folders raise OpenLSMError
    before any server starts. `encoder`: a TextEncoder (default: the scene's, MiniLM unless summary.json says
    CLIP, which needs `text_weights`), loaded on the first semantic query."""
    t0 = time.perf_counter()
    scene = load_view_scene(folder)
    viser = _import_viser()
    with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner; callers print `viewer.url`
        server = viser.ViserServer(host=host, port=port, verbose=False)
    try:
        viewer = Viewer(scene, server, encoder=encoder, query=query, text_weights=text_weights)
    except BaseException:
        server.stop()
        raise
    viewer.startup_s = time.perf_counter() - t0
    return viewer
