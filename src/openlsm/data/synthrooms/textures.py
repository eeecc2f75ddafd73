"""Procedural solid textures and per-class palettes for SynthRooms.

Materials are rows of small arrays (a `MaterialBank`, built with numpy while a scene is generated); `albedo`
evaluates them in PyTorch at 3D hit points, so a texture is a function of position on the surface and looks
the same from every view (what two-view matching needs).

    bank = MaterialBank()
    m = bank.sample(rng, "wood")                          # index of a new, randomised wood material
    rgb, spec, emissive = albedo(mats, points, locals_, normals, mat_ids)   # torch, [N,3], [N], [N]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

PAINT, WOOD, FABRIC, TILES, STRIPES, MARBLE, PLAIN, EMISSIVE = range(8)
KIND_NAMES = ["paint", "wood", "fabric", "tiles", "stripes", "marble", "plain", "emissive"]
N_WAVES = 8

# Fixed wave bank shared by all materials (materials differ by phase): band-limited "noise" from a few sines is
# cheap, smooth (so it does not alias at 256 px) and non-periodic enough for matching.
_bank_rng = np.random.default_rng(12345)
_WAVE_DIRS = _bank_rng.normal(size=(N_WAVES, 3))
_WAVE_DIRS /= np.linalg.norm(_WAVE_DIRS, axis=1, keepdims=True)
_WAVE_FREQS = np.geomspace(1.0, 3.7, N_WAVES)

# Base colours (sRGB in [0,1]) that presets jitter around.
_PALETTES = {
    "wood": [(0.55, 0.36, 0.2), (0.72, 0.52, 0.32), (0.36, 0.22, 0.12), (0.8, 0.66, 0.46), (0.45, 0.3, 0.22)],
    "fabric": [(0.35, 0.42, 0.55), (0.6, 0.3, 0.28), (0.45, 0.5, 0.38), (0.7, 0.65, 0.55), (0.3, 0.3, 0.33),
               (0.75, 0.55, 0.3), (0.5, 0.35, 0.5)],
    "paint": [(0.9, 0.88, 0.82), (0.82, 0.85, 0.88), (0.88, 0.8, 0.7), (0.7, 0.78, 0.72), (0.85, 0.75, 0.75),
              (0.6, 0.66, 0.75), (0.93, 0.91, 0.86)],
    "metal": [(0.6, 0.6, 0.62), (0.25, 0.25, 0.27), (0.75, 0.68, 0.45), (0.15, 0.15, 0.15)],
    "plastic": [(0.9, 0.9, 0.88), (0.15, 0.15, 0.17), (0.8, 0.25, 0.2), (0.2, 0.4, 0.7), (0.95, 0.8, 0.3)],
    "leaf": [(0.2, 0.45, 0.18), (0.3, 0.55, 0.25), (0.15, 0.35, 0.2), (0.4, 0.55, 0.2)],
    "ceramic": [(0.75, 0.4, 0.28), (0.9, 0.9, 0.88), (0.3, 0.45, 0.55), (0.55, 0.5, 0.45)],
    "cardboard": [(0.68, 0.52, 0.34), (0.6, 0.45, 0.3), (0.75, 0.62, 0.45)],
    "tile": [(0.85, 0.85, 0.82), (0.55, 0.58, 0.6), (0.7, 0.6, 0.5), (0.3, 0.32, 0.35), (0.8, 0.75, 0.65)],
    "stone": [(0.92, 0.92, 0.9), (0.3, 0.3, 0.32), (0.8, 0.76, 0.7)],
    "screen": [(0.05, 0.06, 0.08)],
    "glass": [(0.75, 0.85, 0.95), (0.85, 0.9, 0.95), (0.65, 0.78, 0.92)],
    "light": [(1.0, 0.97, 0.88), (1.0, 0.92, 0.8), (0.95, 0.95, 1.0)],
}

# preset -> (texture kinds to choose from, second colour mode, wave scale range cycles/m, specular range)
_PRESETS = {
    "wood": ([WOOD], "darker", (3.0, 9.0), (0.05, 0.25)),
    "floorwood": ([TILES], "darker", (0.12, 0.25), (0.05, 0.2)),  # planks: tile cells are the planks
    "fabric": ([FABRIC, FABRIC, STRIPES], "other", (8.0, 16.0), (0.0, 0.03)),
    "paint": ([PAINT], "near", (0.5, 1.5), (0.0, 0.05)),
    "accent": ([STRIPES, PAINT, MARBLE], "other", (2.0, 6.0), (0.0, 0.05)),
    "metal": ([PLAIN], "near", (2.0, 4.0), (0.3, 0.6)),
    "plastic": ([PLAIN], "near", (2.0, 4.0), (0.15, 0.35)),
    "leaf": ([FABRIC, MARBLE], "darker", (6.0, 12.0), (0.0, 0.1)),
    "ceramic": ([PLAIN, STRIPES, MARBLE], "other", (4.0, 10.0), (0.3, 0.5)),
    "cardboard": ([PAINT, STRIPES], "darker", (3.0, 8.0), (0.0, 0.03)),
    "tile": ([TILES], "other", (0.2, 0.6), (0.1, 0.3)),
    "stone": ([MARBLE], "other", (1.5, 4.0), (0.2, 0.4)),
    "carpet": ([FABRIC, STRIPES], "other", (3.0, 10.0), (0.0, 0.02)),
    "screen": ([PLAIN], "near", (1.0, 2.0), (0.5, 0.7)),
    "glass": ([EMISSIVE], "near", (0.5, 1.5), (0.0, 0.0)),
    "light": ([EMISSIVE], "near", (0.5, 1.0), (0.0, 0.0)),
}
_PRESET_PALETTE = {"floorwood": "wood", "accent": "paint", "carpet": "fabric"}


@dataclass
class MaterialBank:
    """Growing list of materials (numpy). `scale`: pattern size parameter (cycles/m, or cell size m for tiles)."""

    kinds: list = field(default_factory=list)
    colors_a: list = field(default_factory=list)
    colors_b: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    speculars: list = field(default_factory=list)
    phases: list = field(default_factory=list)

    def add(self, kind: int, color_a, color_b, scale: float, specular: float, phases) -> int:
        self.kinds.append(int(kind))
        self.colors_a.append(np.clip(np.asarray(color_a, np.float64), 0, 1))
        self.colors_b.append(np.clip(np.asarray(color_b, np.float64), 0, 1))
        self.scales.append(float(scale))
        self.speculars.append(float(specular))
        self.phases.append(np.asarray(phases, np.float64))
        return len(self.kinds) - 1

    def sample(self, rng: np.random.Generator, preset: str) -> int:
        """A new randomised material from a named preset (see `_PRESETS`); returns its index."""
        kinds, mode, (s0, s1), (p0, p1) = _PRESETS[preset]
        pal = _PALETTES[_PRESET_PALETTE.get(preset, preset)]
        a = np.asarray(pal[rng.integers(len(pal))]) * rng.uniform(0.85, 1.12) + rng.normal(0, 0.03, 3)
        if mode == "darker":
            b = a * rng.uniform(0.55, 0.8)
        elif mode == "near":
            b = a * rng.uniform(0.85, 0.97)
        else:
            other = _PALETTES["paint" if preset == "accent" else _PRESET_PALETTE.get(preset, preset)]
            b = np.asarray(other[rng.integers(len(other))]) * rng.uniform(0.6, 1.0)
        return self.add(kinds[rng.integers(len(kinds))], a, b, rng.uniform(s0, s1), rng.uniform(p0, p1),
                        rng.uniform(0, 2 * np.pi, N_WAVES))

    def tensors(self, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        f = {"device": device, "dtype": dtype}
        return {"kinds": torch.tensor(self.kinds, dtype=torch.long, device=device),
                "colors_a": torch.tensor(np.stack(self.colors_a), **f),
                "colors_b": torch.tensor(np.stack(self.colors_b), **f),
                "scales": torch.tensor(self.scales, **f), "speculars": torch.tensor(self.speculars, **f),
                "phases": torch.tensor(np.stack(self.phases), **f)}


def waves(points: Tensor, phases: Tensor, freq: Tensor) -> Tensor:
    """Band-limited scalar noise ~[-1, 1]: mean of sines, points [N,3], phases [N,8], freq [N] cycles/m."""
    dirs = torch.as_tensor(_WAVE_DIRS, dtype=points.dtype, device=points.device)  # [8, 3]
    fr = torch.as_tensor(_WAVE_FREQS, dtype=points.dtype, device=points.device)  # [8]
    # explicit 3-term dot: a [N,3] @ [3,8] matmul is slow on CPU for such skinny shapes
    proj = points[:, 0:1] * dirs[:, 0] + points[:, 1:2] * dirs[:, 1] + points[:, 2:3] * dirs[:, 2]  # [N, 8]
    arg = proj * (2 * torch.pi * freq[:, None] * fr) + phases  # [N, 8]
    return torch.sin(arg).mean(-1) * 2.0


def _cell_hash(cells: Tensor) -> Tensor:
    """Cheap deterministic hash of integer cells [N,3] -> [0,1)."""
    c = cells.to(torch.float64)
    h = torch.sin(c[:, 0] * 12.9898 + c[:, 1] * 78.233 + c[:, 2] * 37.719) * 43758.5453
    return (h - torch.floor(h)).to(cells.dtype)


def albedo(mats: dict[str, Tensor], points: Tensor, locals_: Tensor, normals: Tensor, mat_ids: Tensor):
    """Evaluate materials at hit points.

    points [N,3] world, locals_ [N,3] object-local (metres, axis-aligned with the part), normals [N,3],
    mat_ids [N] -> albedo [N,3] in [0,1], specular strength [N], emissive [N] bool.
    """
    kinds, scale, ph = mats["kinds"][mat_ids], mats["scales"][mat_ids], mats["phases"][mat_ids]
    ca, cb = mats["colors_a"][mat_ids], mats["colors_b"][mat_ids]
    mix = torch.zeros_like(scale)  # weight of colour b
    gain = torch.ones_like(scale)  # brightness modulation
    for kind in kinds.unique().tolist():
        idx = (kinds == kind).nonzero()[:, 0]
        p, lp, s, q, n = points[idx], locals_[idx], scale[idx], ph[idx], normals[idx]
        if kind == PAINT:  # low-frequency blotches + finer mottling
            m = 0.3 * (0.5 + 0.5 * waves(p, q, s * 4.0))
            g = 1.0 + 0.1 * waves(p, q.flip(-1), s)
        elif kind == WOOD:  # rings around the part's local x axis, warped by noise
            r = torch.sqrt((lp[:, 1] + q[:, 0]) ** 2 + (lp[:, 2] + q[:, 1]) ** 2 + 1e-12)
            ring = r * s * 6.0 + 0.8 * waves(lp * torch.tensor([0.2, 1.0, 1.0], device=p.device, dtype=p.dtype),
                                              q, s * 0.5)
            m = (ring - torch.floor(ring)) ** 2
            g = 1.0 + 0.06 * waves(lp, q.flip(-1), s * 2)
        elif kind == FABRIC:  # weave + slub noise
            w = torch.sin(2 * torch.pi * s[:, None] * 2.0 * lp).prod(-1)
            m = (0.5 + 0.3 * w + 0.25 * waves(lp, q, s * 0.4)).clamp(0, 1)
            g = 1.0 + 0.08 * waves(lp, q.flip(-1), s)
        elif kind == TILES:  # cells of size 1/s... here `s` is the cell size in metres; grout between cells
            cell = lp / s[:, None]
            cells = torch.floor(cell)
            frac = cell - cells
            edge = torch.minimum(frac, 1 - frac)  # distance to cell border, in cells
            tangent = n.abs() < 0.5  # only the two in-surface axes have grout lines
            grout = ((edge < 0.04) & tangent).any(-1)
            h = _cell_hash(cells * tangent)
            m = torch.where(grout, torch.zeros_like(h), 0.25 + 0.5 * h)
            g = torch.where(grout, torch.full_like(h, 0.55), 1.0 + 0.08 * waves(lp, q, 3.0 / s))
        elif kind == STRIPES:
            d = torch.stack([torch.cos(q[:, 0]), torch.sin(q[:, 0]), 0.3 * torch.cos(q[:, 1])], -1)
            m = (2.0 * torch.sin(2 * torch.pi * s * (lp * d).sum(-1))).clamp(-1, 1) * 0.5 + 0.5
            g = 1.0 + 0.08 * waves(lp, q, s * 0.7)
        elif kind == MARBLE:
            d = torch.stack([torch.cos(q[:, 2]), torch.sin(q[:, 2]), torch.cos(q[:, 3])], -1)
            v = torch.sin(2 * torch.pi * s * 0.5 * (lp * d).sum(-1) + 3.0 * waves(lp, q, s * 0.5))
            m = (1 - v.abs()) ** 6
            g = 1.0 + 0.05 * waves(lp, q.flip(-1), s)
        else:  # PLAIN, EMISSIVE: nearly flat, a little variation so surfaces are not featureless
            m = 0.15 * (0.5 + 0.5 * waves(lp, q, s))
            g = torch.ones_like(s)
        mix[idx], gain[idx] = m.to(mix.dtype), g.to(gain.dtype)
    rgb = (ca + (cb - ca) * mix[:, None]) * gain[:, None]
    return rgb.clamp(0, 1), mats["speculars"][mat_ids], kinds == EMISSIVE
