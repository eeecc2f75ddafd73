"""Camera sampler: k views of one room (two inputs + targets) with controlled input overlap.

Cameras stand in walkable space (inside the room, away from walls and furniture footprints) at eye height,
look at content (an object or a far wall point), and the second input is chosen among candidates whose
co-visibility with the first, measured by depth reprojection on small probe renders, falls in a range.
Targets lie on (or just beyond) the segment between the inputs and look between their look-at points.

    cams, info = sample_views(st, scene, np.random.default_rng(0), 256, 192)
    info["covisibility"]   # measured overlap of views 0 and 1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...cameras import Cameras
from ...cameras.cameras import look_at, project, unproject_depth
from .raycast import SceneTensors, render_depth
from .scene import CLASS_IDS, Scene


@dataclass(frozen=True)
class SamplerConfig:
    fov_range: tuple[float, float] = (50.0, 90.0)  # horizontal field of view, degrees (one per sample)
    height_range: tuple[float, float] = (1.2, 1.8)  # camera height above the floor, metres
    covis_range: tuple[float, float] = (0.3, 0.8)  # accepted overlap of the two input views
    baseline_range: tuple[float, float] = (0.2, 1.5)  # distance between the input cameras, metres
    clearance: float = 0.3  # minimum distance to walls and furniture footprints, metres
    target_spread: float = 0.25  # targets at lerp(a) with a in [-spread, 1 + spread]
    candidates: int = 12  # second-view candidates probed per sample
    probe_size: tuple[int, int] = (24, 32)  # (H, W) of the co-visibility probe renders


def _footprints(scene: Scene, margin: float) -> np.ndarray:
    """Inflated XY boxes of all standing objects (not rugs, not ceiling fixtures) [O, 4]."""
    lo, hi = scene.prim_aabbs()
    out = []
    for o, c in enumerate(scene.object_classes):
        m = scene.prim_objects == o
        olo, ohi = lo[m].min(0), hi[m].max(0)
        if c == CLASS_IDS["rug"] or olo[2] > 2.2:
            continue
        out.append([olo[0] - margin, olo[1] - margin, ohi[0] + margin, ohi[1] + margin])
    return np.array(out).reshape(-1, 4)


def is_free(xy: np.ndarray, scene: Scene, margin: float) -> np.ndarray:
    """Walkable positions xy [N, 2] -> [N] bool."""
    inside = ((xy[:, None] >= scene.room_lo[None, :, :2] + margin) &
              (xy[:, None] <= scene.room_hi[None, :, :2] - margin)).all(-1).any(-1)
    fp = _footprints(scene, margin)
    hit = ((xy[:, None, 0] >= fp[None, :, 0]) & (xy[:, None, 0] <= fp[None, :, 2]) &
           (xy[:, None, 1] >= fp[None, :, 1]) & (xy[:, None, 1] <= fp[None, :, 3])).any(-1)
    return inside & ~hit


def free_cells(scene: Scene, margin: float, step: float = 0.1) -> np.ndarray:
    lo, hi = scene.room_lo.min(0), scene.room_hi.max(0)
    xs, ys = np.arange(lo[0] + step / 2, hi[0], step), np.arange(lo[1] + step / 2, hi[1], step)
    xy = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    return xy[is_free(xy, scene, margin)]


def covisibility(depths: torch.Tensor, cams: Cameras, a: int, b: int) -> float:
    """Fraction of view a's pixels seen, unoccluded, by view b (depth reprojection, 3 % tolerance)."""
    pts = unproject_depth(depths[a], cams.Ks[a], cams.c2w[a]).reshape(-1, 3)
    uv, z = project(pts, cams.Ks[b], cams.viewmats[b])
    H, W = depths.shape[-2:]
    j, i = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
    inb = (z > 1e-3) & (i >= 0) & (i < H) & (j >= 0) & (j < W)
    zb = depths[b][i.clamp(0, H - 1), j.clamp(0, W - 1)]
    ok = inb & ((z - zb).abs() < 0.03 * z + 0.01) & (depths[a].reshape(-1) > 0)
    return float(ok.float().mean())


def _targets(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Candidate look-at points: object centres and points on the walls."""
    lo, hi = scene.prim_aabbs()
    pts = []
    for o, c in enumerate(scene.object_classes):
        m = scene.prim_objects == o
        if lo[m].min(0)[2] < 2.2:
            pts.append((lo[m].min(0) + hi[m].max(0)) / 2)
    for w in scene.walls:
        s = rng.uniform(w.lo, w.hi)
        p = np.zeros(3)
        p[w.axis], p[1 - w.axis], p[2] = w.value, s, rng.uniform(0.5, 1.5)
        pts.append(p)
    return np.array(pts)


def _cams(eyes, targets, fov, width, height) -> Cameras:
    c2w = look_at(torch.as_tensor(eyes, dtype=torch.float64), torch.as_tensor(targets, dtype=torch.float64))
    return Cameras.from_fov(fov, width, height, c2w.float())


def sample_views(st: SceneTensors, scene: Scene, rng: np.random.Generator, width: int, height: int,
                 views: int = 3, cfg: SamplerConfig = SamplerConfig()) -> tuple[Cameras, dict]:
    """Cameras [views] (inputs first) and info {covisibility, fov}."""
    steps = _sample_steps(scene, rng, width, height, views, cfg)
    try:
        probes = next(steps)
        while True:
            depths, _ = render_depth(st, probes.to(device=st.device, dtype=st.dtype), tile=8)
            probes = steps.send(depths.cpu())
    except StopIteration as stop:
        return stop.value


def sample_views_batch(st: SceneTensors, scenes: list[Scene], rngs: list[np.random.Generator], width: int,
                       height: int, views: int = 3, cfg: SamplerConfig = SamplerConfig()) -> list[tuple[Cameras, dict]]:
    """sample_views for S scenes at once: st = merge_scenes(...) of those scenes; the probe renders of all
    scenes go through one `render_depth` per step (same cameras as S calls of sample_views)."""
    gens = [_sample_steps(sc, r, width, height, views, cfg) for sc, r in zip(scenes, rngs)]
    results: list = [None] * len(gens)
    pending = {}
    for i, g in enumerate(gens):
        try:
            pending[i] = next(g)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        idx = list(pending)
        probes = [pending[i] for i in idx]
        lens = [len(p) for p in probes]
        cams = Cameras(torch.cat([p.Ks for p in probes]), torch.cat([p.c2w for p in probes]),
                       probes[0].width, probes[0].height)
        vs = torch.repeat_interleave(torch.tensor(idx), torch.tensor(lens)).to(st.device)
        depths, _ = render_depth(st, cams.to(device=st.device, dtype=st.dtype), tile=8, view_scene=vs)
        depths = depths.cpu()
        pending = {}
        for i, d in zip(idx, depths.split(lens)):
            try:
                pending[i] = gens[i].send(d)
            except StopIteration as stop:
                results[i] = stop.value
    return results


def _sample_steps(scene: Scene, rng: np.random.Generator, width: int, height: int, views: int,
                  cfg: SamplerConfig):
    """Generator behind sample_views: yields probe Cameras, receives their depths [V,H,W] (CPU), returns
    (cams, info). Keeping the rng draws in one place lets single and batched sampling agree exactly."""
    if views < 1:
        raise ValueError("views must be >= 1")
    cells = free_cells(scene, cfg.clearance)
    margin = cfg.clearance
    if len(cells) == 0:  # crowded room: fall back to a smaller clearance
        margin = 0.1
        cells = free_cells(scene, margin, 0.05)
    if len(cells) == 0:  # never seen in practice; the room centre is at least inside the room
        cells = ((scene.room_lo[:, :2] + scene.room_hi[:, :2]) / 2)[:1]
    fov = float(rng.uniform(*cfg.fov_range))
    looks = _targets(scene, rng)
    # first view: a free cell looking at something at least 1 m away
    for _ in range(20):
        xy = cells[rng.integers(len(cells))]
        eye0 = np.array([*xy, rng.uniform(*cfg.height_range)])
        far = np.linalg.norm(looks - eye0, axis=1) > 1.0
        if far.any():
            break
    cand_t = looks[far] if far.any() else looks
    tgt0 = cand_t[rng.integers(len(cand_t))] + rng.normal(0, 0.1, 3)
    if views == 1:
        return _cams(eye0[None], tgt0[None], fov, width, height), {"covisibility": 1.0, "fov": fov}
    ph, pw = cfg.probe_size
    probe0 = _cams(eye0[None], tgt0[None], fov, pw, ph)
    d0 = yield probe0
    pts0 = unproject_depth(d0[0].cpu().double(), probe0.Ks[0].double(), probe0.c2w[0].double()).numpy()
    # second-view candidates: free cells at a baseline, looking at points seen by view 0
    dist = np.linalg.norm(cells - eye0[:2], axis=1)
    ring = cells[(dist >= cfg.baseline_range[0]) & (dist <= cfg.baseline_range[1])]
    if len(ring) == 0:
        ring = cells
    n = cfg.candidates
    xy1 = ring[rng.integers(len(ring), size=n)] + rng.uniform(-0.04, 0.04, (n, 2))
    xy1 = np.where(is_free(xy1, scene, margin)[:, None], xy1, ring[rng.integers(len(ring), size=n)])
    z1 = np.clip(eye0[2] + rng.uniform(-0.2, 0.2, n), *cfg.height_range)
    eyes1 = np.concatenate([xy1, z1[:, None]], 1)
    ii = rng.integers(ph // 4, ph - ph // 4, n)
    jj = rng.integers(pw // 4, pw - pw // 4, n)
    tgts1 = pts0[ii, jj] + rng.normal(0, 0.15, (n, 3))
    probes = _cams(np.concatenate([eye0[None], eyes1]), np.concatenate([tgt0[None], tgts1]), fov, pw, ph)
    depths = (yield probes).cpu()
    covis = np.array([(covisibility(depths, probes, 0, k) + covisibility(depths, probes, k, 0)) / 2
                      for k in range(1, n + 1)])
    lo_c, hi_c = cfg.covis_range
    ok = np.nonzero((covis >= lo_c) & (covis <= hi_c))[0]
    k = int(ok[rng.integers(len(ok))]) if len(ok) else int(np.argmin(np.abs(covis - (lo_c + hi_c) / 2)))
    eyes, tgts = [eye0, eyes1[k]], [tgt0, tgts1[k]]
    # targets: between (or slightly beyond) the inputs
    for _ in range(views - 2):
        for _ in range(20):
            a = rng.uniform(-cfg.target_spread, 1 + cfg.target_spread)
            e = (1 - a) * eyes[0] + a * eyes[1] + np.array([*rng.normal(0, 0.08, 2), rng.normal(0, 0.03)])
            e[2] = np.clip(e[2], *cfg.height_range)
            if is_free(e[None, :2], scene, margin)[0]:
                break
        else:
            a, e = 0.0, eyes[0].copy()
        eyes.append(e)
        tgts.append((1 - a) * tgts[0] + a * tgts[1] + rng.normal(0, 0.05, 3))
    cams = _cams(np.stack(eyes), np.stack(tgts), fov, width, height)
    return cams, {"covisibility": float(covis[k]), "fov": fov}
