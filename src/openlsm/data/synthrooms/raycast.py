"""Batched analytic ray casting of SynthRooms scenes in PyTorch (same code on CPU and CUDA).

Rays from one point (a camera centre, a light) are binned by screen tile; every primitive's world AABB is
projected (clipped at the near plane, so the result is conservative) to find the tiles it can cover, and only
(ray, primitive) pairs that share a tile are intersected, one primitive type at a time. The room shell
(floor, walls, ceiling of a box or an L of two boxes) is intersected analytically for every ray.

Depth, labels, instances and normals come from the ray through each exact pixel centre; only RGB is
supersampled (on pixels whose centre-ray primitive differs from a neighbour's, by default).

    st = scene_tensors(generate_scene(7))
    out = render(st, cams)   # rgb [V,3,H,W], depth [V,H,W] (camera z, m), labels, instances, normals [V,3,H,W]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from ...cameras import Cameras
from ...cameras.cameras import pixel_directions, pixel_grid
from .catalogue import BOX, ELLIPSOID, FRUSTUM
from .scene import CLASS_IDS, FIRST_WALL_INSTANCE, Scene
from .textures import albedo

INF = float("inf")


@dataclass
class SceneTensors:
    room_lo: Tensor  # [S, B, 3] (S scenes; a batch pads B by repeating box 0)
    room_hi: Tensor  # [S, B, 3]
    shell_codes: Tensor  # [S, B, 3, 2] (box, axis, side) -> shell index (0 floor, 1 ceiling, 2 + w wall)
    shell_normals: Tensor  # [S, 3] inward normals
    shell_mats: Tensor  # [S]
    shell_labels: Tensor  # [S]
    shell_instances: Tensor  # [S]
    centers: Tensor  # [P, 3]
    yaws_cs: Tensor  # [P, 2] cos, sin of the yaw
    inv_halves: Tensor  # [P, 3]
    halves: Tensor  # [P, 3]
    ratios: Tensor  # [P]
    aabb_lo: Tensor  # [P, 3]
    aabb_hi: Tensor  # [P, 3]
    prim_labels: Tensor  # [P]
    prim_instances: Tensor  # [P]
    prim_mats: Tensor  # [P]
    type_ranges: list  # [(start, end)] for BOX, ELLIPSOID, FRUSTUM
    mats: dict
    lights: Tensor  # [S, L, 3]
    light_powers: Tensor  # [S, L]
    ambient: float | Tensor  # float, or [S] for a batch
    # batches of scenes (merge_scenes): primitives of scene s are scene_prims[s][scene_prim_valid[s]]
    scene_prims: Tensor | None = None  # [S, Pmax] global primitive ids (padding: 0)
    scene_prim_valid: Tensor | None = None  # [S, Pmax]
    light_valid: Tensor | None = None  # [S, L]
    n_boxes: Tensor | None = None  # [S]

    @property
    def batched(self) -> bool:
        return self.scene_prims is not None

    @property
    def device(self):
        return self.centers.device

    @property
    def dtype(self):
        return self.centers.dtype

    def to(self, device=None) -> SceneTensors:
        def mv(x):
            if isinstance(x, Tensor):
                return x.to(device)
            return {k: mv(v) for k, v in x.items()} if isinstance(x, dict) else x
        return SceneTensors(**{f.name: mv(getattr(self, f.name)) for f in fields(self)})


def scene_tensors(scene: Scene, device=None, dtype=torch.float32) -> SceneTensors:
    f = {"device": device, "dtype": dtype}
    B = len(scene.room_lo)
    codes = torch.zeros(B, 3, 2, dtype=torch.long)
    codes[:, 2, 0], codes[:, 2, 1] = 0, 1
    codes[:, :2] = torch.as_tensor(scene.wall_ids) + 2
    W = scene.n_walls
    normals = [[0, 0, 1.0], [0, 0, -1.0]] + [[*w.normal, 0.0] for w in scene.walls]
    lo, hi = scene.prim_aabbs()
    t = scene.prim_types
    ranges = [(int((t < k).sum()), int((t <= k).sum())) for k in (BOX, ELLIPSOID, FRUSTUM)]
    first_obj = FIRST_WALL_INSTANCE + W
    return SceneTensors(
        room_lo=torch.tensor(scene.room_lo, **f)[None], room_hi=torch.tensor(scene.room_hi, **f)[None],
        shell_codes=codes.to(device)[None], shell_normals=torch.tensor(normals, **f),
        shell_mats=torch.tensor(scene.shell_mats, device=device),
        shell_labels=torch.tensor([CLASS_IDS["floor"], CLASS_IDS["ceiling"]] + [CLASS_IDS["wall"]] * W, device=device),
        shell_instances=torch.tensor([1, 2] + list(range(FIRST_WALL_INSTANCE, first_obj)), device=device),
        centers=torch.tensor(scene.prim_centers, **f),
        yaws_cs=torch.tensor(np.stack([np.cos(scene.prim_yaws), np.sin(scene.prim_yaws)], -1), **f).reshape(-1, 2),
        inv_halves=torch.tensor(1.0 / scene.prim_halves, **f).reshape(-1, 3),
        halves=torch.tensor(scene.prim_halves, **f).reshape(-1, 3), ratios=torch.tensor(scene.prim_ratios, **f),
        aabb_lo=torch.tensor(lo, **f).reshape(-1, 3), aabb_hi=torch.tensor(hi, **f).reshape(-1, 3),
        prim_labels=torch.tensor(scene.object_classes[scene.prim_objects], device=device, dtype=torch.long),
        prim_instances=torch.tensor(scene.prim_objects + first_obj, device=device, dtype=torch.long),
        prim_mats=torch.tensor(scene.prim_mats, device=device, dtype=torch.long), type_ranges=ranges,
        mats=scene.materials.tensors(device, dtype), lights=torch.tensor(scene.lights, **f).reshape(1, -1, 3),
        light_powers=torch.tensor(scene.light_powers, **f).reshape(1, -1), ambient=scene.ambient)


def merge_scenes(sts: list[SceneTensors], device=None) -> SceneTensors:
    """One SceneTensors for S scenes (built on the host, moved once), for `render_batch`.

    Primitives of all scenes share one id space, sorted by type (so `intersect` runs once per type); each scene
    keeps its primitives in their original relative order, so nearest-hit tie breaks match the single path.
    """
    S = len(sts)
    counts = [len(st.centers) for st in sts]
    types = torch.cat([torch.cat([torch.full((e - s,), k) for k, (s, e) in enumerate(st.type_ranges)])
                       for st in sts]).long()  # [P]
    order = torch.sort(types, stable=True).indices  # new id -> old id
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(len(order))
    pm = max(max(counts), 1)
    scene_prims = torch.zeros(S, pm, dtype=torch.long)
    valid = torch.zeros(S, pm, dtype=torch.bool)
    start = 0
    for s_, n in enumerate(counts):
        scene_prims[s_, :n], valid[s_, :n] = new_id[start:start + n], True
        start += n
    ranges = [(int((types < k).sum()), int((types <= k).sum())) for k in (BOX, ELLIPSOID, FRUSTUM)]
    mat_off = torch.tensor([0] + [len(st.mats["kinds"]) for st in sts]).cumsum(0)
    shell_off = torch.tensor([0] + [len(st.shell_mats) for st in sts]).cumsum(0)

    def cat(name, perm=True):
        x = torch.cat([getattr(st, name) for st in sts])
        return x[order] if perm else x

    bmax, lmax = max(st.room_lo.shape[1] for st in sts), max(st.lights.shape[1] for st in sts)

    def pad_boxes(x):  # [1, B, ...] -> [1, bmax, ...], repeating box 0 (a duplicate box changes no exit)
        return torch.cat([x, x[:, :1].expand(1, bmax - x.shape[1], *x.shape[2:])], 1)

    lights = torch.zeros(S, lmax, 3, dtype=sts[0].dtype)
    powers = torch.zeros(S, lmax, dtype=sts[0].dtype)
    lvalid = torch.zeros(S, lmax, dtype=torch.bool)
    for s_, st in enumerate(sts):
        n = st.lights.shape[1]
        lights[s_, :n], powers[s_, :n], lvalid[s_, :n] = st.lights[0].cpu(), st.light_powers[0].cpu(), True
    out = SceneTensors(
        room_lo=torch.cat([pad_boxes(st.room_lo) for st in sts]), room_hi=torch.cat([pad_boxes(st.room_hi) for st in sts]),
        shell_codes=torch.cat([pad_boxes(st.shell_codes) + shell_off[i] for i, st in enumerate(sts)]),
        shell_normals=cat("shell_normals", False),
        shell_mats=torch.cat([st.shell_mats + mat_off[i] for i, st in enumerate(sts)]),
        shell_labels=cat("shell_labels", False), shell_instances=cat("shell_instances", False),
        centers=cat("centers"), yaws_cs=cat("yaws_cs"), inv_halves=cat("inv_halves"), halves=cat("halves"),
        ratios=cat("ratios"), aabb_lo=cat("aabb_lo"), aabb_hi=cat("aabb_hi"), prim_labels=cat("prim_labels"),
        prim_instances=cat("prim_instances"),
        prim_mats=torch.cat([st.prim_mats + mat_off[i] for i, st in enumerate(sts)])[order], type_ranges=ranges,
        mats={k: torch.cat([st.mats[k] for st in sts]) for k in sts[0].mats}, lights=lights, light_powers=powers,
        ambient=torch.tensor([float(st.ambient) for st in sts], dtype=sts[0].dtype), scene_prims=scene_prims,
        scene_prim_valid=valid, light_valid=lvalid, n_boxes=torch.tensor([st.room_lo.shape[1] for st in sts]))
    return out.to(device)


# --- ray / primitive kernels in the primitive's unit frame -----------------------------------------------------

def _nonzero(d: Tensor) -> Tensor:
    return torch.where(d.abs() < 1e-30, torch.full_like(d, 1e-30), d)


def hit_box(o: Tensor, d: Tensor, tmin: float = 1e-6):
    """Unit cube [-1,1]^3: first hit t [N] (inf if none) and local normal [N,3]. o, d [N,3]."""
    inv = 1.0 / _nonzero(d)
    t0, t1 = (-1.0 - o) * inv, (1.0 - o) * inv
    tn3 = torch.minimum(t0, t1)
    tn, axis = tn3.max(-1)
    tf = torch.maximum(t0, t1).amin(-1)
    t = torch.where((tn <= tf) & (tn > tmin), tn, torch.full_like(tn, INF))
    n = torch.zeros_like(o).scatter_(-1, axis[:, None], -torch.sign(d.gather(-1, axis[:, None])))
    return t, n


def hit_ellipsoid(o: Tensor, d: Tensor, tmin: float = 1e-6):
    """Unit sphere, solved about the closest approach (stable in float32 for distant rays)."""
    a = (d * d).sum(-1)
    tc = -(o * d).sum(-1) / a
    q = o + tc[:, None] * d
    disc = 1.0 - (q * q).sum(-1)
    t = tc - torch.sqrt(disc.clamp_min(0) / a)
    t = torch.where((disc >= 0) & (t > tmin), t, torch.full_like(t, INF))
    return t, o + torch.nan_to_num(t, posinf=0.0)[:, None] * d


def hit_frustum(o: Tensor, d: Tensor, k: Tensor, tmin: float = 1e-6):
    """Capped truncated cone |z| <= 1, radius 1 at z=-1 and k at z=+1 (k=1: cylinder)."""
    a2 = (d * d).sum(-1)
    t0 = -(o * d).sum(-1) / a2  # shift the origin near the primitive for float32 accuracy
    o = o + t0[:, None] * d
    beta = (k - 1) / 2
    alpha = 1 + beta
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    rz = alpha + beta * oz
    qa = dx * dx + dy * dy - beta * beta * dz * dz
    qb = ox * dx + oy * dy - beta * rz * dz
    qc = ox * ox + oy * oy - rz * rz
    disc = qb * qb - qa * qc
    sq = torch.sqrt(disc.clamp_min(0))
    qa = torch.where(qa.abs() < 1e-20, torch.full_like(qa, 1e-20), qa)
    best = torch.full_like(ox, INF)
    face = torch.zeros_like(ox, dtype=torch.long)
    for root in ((-qb - sq) / qa, (-qb + sq) / qa):
        z = oz + root * dz
        ok = (disc >= 0) & (z.abs() <= 1) & (root + t0 > tmin) & (root < best)
        best = torch.where(ok, root, best)
    dzs = _nonzero(dz)
    for f, zc, r in ((1, -1.0, torch.ones_like(k)), (2, 1.0, k)):
        root = (zc - oz) / dzs
        x, y = ox + root * dx, oy + root * dy
        ok = (x * x + y * y <= r * r) & (root + t0 > tmin) & (root < best)
        best = torch.where(ok, root, best)
        face = torch.where(ok, torch.full_like(face, f), face)
    p = o + torch.nan_to_num(best, posinf=0.0)[:, None] * d
    side = torch.stack([p[:, 0], p[:, 1], -beta * (alpha + beta * p[:, 2])], -1)
    caps = torch.zeros_like(p)
    caps[:, 2] = torch.where(face == 1, -1.0, 1.0)
    n = torch.where((face == 0)[:, None], side, caps)
    return best + t0, n


def _to_local(st: SceneTensors, origins: Tensor, dirs: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """World ray origins, dirs [N,3] -> unit frame of primitives p [N] (yaw then scale), one gather."""
    f = torch.cat([st.centers, st.yaws_cs, st.inv_halves], -1)[p]  # [N, 8]: one gather, not three
    c, s, ih = f[:, 3], f[:, 4], f[:, 5:]
    v = torch.stack([origins - f[:, :3], dirs], 0)  # [2, N, 3]
    x = c * v[..., 0] + s * v[..., 1]
    y = c * v[..., 1] - s * v[..., 0]
    out = torch.stack([x, y, v[..., 2]], -1) * ih
    return out[0], out[1]


def _normal_to_world(st: SceneTensors, n: Tensor, p: Tensor) -> Tensor:
    n = n * st.inv_halves[p]  # inverse-transpose of the scale
    cs = st.yaws_cs[p]
    x = cs[:, 0] * n[:, 0] - cs[:, 1] * n[:, 1]
    y = cs[:, 1] * n[:, 0] + cs[:, 0] * n[:, 1]
    w = torch.stack([x, y, n[:, 2]], -1)
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-20)


def intersect(st: SceneTensors, origins: Tensor, dirs: Tensor, prims: Tensor, tmin: float = 1e-6,
              normals: bool = False, rays: Tensor | None = None):
    """Ray i against primitive prims[i]: origins, dirs [N,3] world -> t [N] (inf: miss), world normals [N,3].

    rays [N]: pair i uses ray rays[i] of origins, dirs (saves gathering them twice)."""
    t = torch.full_like(prims, INF, dtype=dirs.dtype)
    n = torch.zeros(len(prims), 3, device=dirs.device, dtype=dirs.dtype) if normals else None
    for kind, (s, e) in enumerate(st.type_ranges):
        if e == s:
            continue
        sel = ((prims >= s) & (prims < e)).nonzero()[:, 0]
        if len(sel) == 0:
            continue
        p = prims[sel]
        r = sel if rays is None else rays[sel]
        o, d = _to_local(st, origins[r], dirs[r], p)
        if kind == BOX:
            tk, nk = hit_box(o, d, tmin)
        elif kind == ELLIPSOID:
            tk, nk = hit_ellipsoid(o, d, tmin)
        else:
            tk, nk = hit_frustum(o, d, st.ratios[p], tmin)
        t[sel] = tk
        if normals:
            n[sel] = _normal_to_world(st, nk, p)
    return t, n


def cast_shell(st: SceneTensors, origins: Tensor, dirs: Tensor, rs: Tensor | None = None):
    """Exit of rays starting inside the room: t [N] and shell index [N] (0 floor, 1 ceiling, 2+ walls).

    rs [N]: scene of each ray (batches); None: scene 0."""
    inv = 1.0 / _nonzero(dirs)
    t_exit = torch.full_like(dirs[:, 0], -INF)
    code = torch.zeros_like(t_exit, dtype=torch.long)
    spans = []
    los, his = (st.room_lo[0], st.room_hi[0]) if rs is None else (st.room_lo[rs], st.room_hi[rs])  # [(N,) B, 3]
    for b in range(st.room_lo.shape[1]):
        t0, t1 = (los[..., b, :] - origins) * inv, (his[..., b, :] - origins) * inv
        tn = torch.minimum(t0, t1).amax(-1)
        tf3 = torch.maximum(t0, t1)
        tf, axis = tf3.min(-1)
        side = (dirs.gather(-1, axis[:, None])[:, 0] > 0).long()
        c = st.shell_codes[0, b][axis, side] if rs is None else st.shell_codes[rs, b, axis, side]
        spans.append((tn, tf, c))
    for tn, tf, c in spans:  # boxes that contain the origin
        inside = (tn <= 1e-6) & (tf > t_exit)
        t_exit, code = torch.where(inside, tf, t_exit), torch.where(inside, c, code)
    for _ in range(len(spans) - 1):  # continue through an overlapping box (L-shaped rooms)
        for tn, tf, c in spans:
            ext = (tn <= t_exit + 1e-6) & (tf > t_exit)
            t_exit, code = torch.where(ext, tf, t_exit), torch.where(ext, c, code)
    return t_exit, code


# --- tiles ------------------------------------------------------------------------------------------------------

_EDGES = [(i, i ^ b) for i in range(8) for b in (1, 2, 4) if i < i ^ b]


def tile_table(st: SceneTensors, viewmats: Tensor, Ks: Tensor, width: int, height: int, tile: int,
               clamp: bool = False, view_scene: Tensor | None = None):
    """Which primitives may be seen in which screen tile.

    viewmats [V,4,4], Ks [V,3,3] -> counts [V*T], table [V*T, K] (primitive ids, first counts[i] valid).
    clamp: rays outside the image are clamped to border tiles (used for lights), so every primitive in front
    of the source is kept and stretched to the border.
    view_scene [V]: scene of each view in a batch (merge_scenes); only that scene's primitives are listed.
    """
    lo, hi = st.aabb_lo, st.aabb_hi
    bits = torch.tensor([[(i >> a) & 1 for a in range(3)] for i in range(8)], device=lo.device, dtype=lo.dtype)
    if view_scene is None:
        corners = lo[:, None] + bits * (hi - lo)[:, None]  # [P, 8, 3]
        cam = torch.einsum("vij,pcj->vpci", viewmats[:, :3, :3], corners) + viewmats[:, None, None, :3, 3]
    else:  # per view, its scene's primitives padded to Pmax
        gidx, pvalid = st.scene_prims[view_scene], st.scene_prim_valid[view_scene]  # [V, Pm]
        lo, hi = lo[gidx], hi[gidx]  # [V, Pm, 3]
        corners = lo[..., None, :] + bits * (hi - lo)[..., None, :]  # [V, Pm, 8, 3]
        cam = torch.einsum("vij,vpcj->vpci", viewmats[:, :3, :3], corners) + viewmats[:, None, None, :3, 3]
    eps = 1e-3
    i, j = torch.tensor(_EDGES, device=lo.device).unbind(-1)
    zi, zj = cam[..., i, 2], cam[..., j, 2]
    cross = (zi - eps) * (zj - eps) < 0
    s = ((eps - zi) / torch.where(cross, zj - zi, torch.ones_like(zi))).clamp(0, 1)
    clip = cam[..., i, :] + s[..., None] * (cam[..., j, :] - cam[..., i, :])
    pts = torch.cat([cam, clip], -2)  # [V, P, 20, 3]
    valid = torch.cat([cam[..., 2] > eps, cross], -1)
    uvw = torch.einsum("vij,vpcj->vpci", Ks, pts)
    uv = uvw[..., :2] / uvw[..., 2:].clamp_min(eps)
    big = torch.full_like(uv[..., 0], INF)
    umin, umax = torch.where(valid, uv[..., 0], big).amin(-1), torch.where(valid, uv[..., 0], -big).amax(-1)
    vmin, vmax = torch.where(valid, uv[..., 1], big).amin(-1), torch.where(valid, uv[..., 1], -big).amax(-1)
    vis = valid.any(-1)
    if view_scene is not None:
        vis = vis & pvalid
    if not clamp:
        vis = vis & (umax >= 0) & (umin <= width) & (vmax >= 0) & (vmin <= height)
    tx, ty = -(-width // tile), -(-height // tile)

    def tiles(a, n):
        return torch.floor(a.clamp(-1e6, 1e6) / tile).clamp(0, n - 1).long()

    x0, x1, y0, y1 = tiles(umin, tx), tiles(umax, tx), tiles(vmin, ty), tiles(vmax, ty)
    ax, ay = torch.arange(tx, device=lo.device), torch.arange(ty, device=lo.device)
    inx = (ax >= x0[..., None]) & (ax <= x1[..., None])  # [V, P, Tx]
    iny = (ay >= y0[..., None]) & (ay <= y1[..., None])  # [V, P, Ty]
    mask = vis[..., None, None] & iny[..., :, None] & inx[..., None, :]  # [V, P, Ty, Tx]
    mask = mask.permute(0, 2, 3, 1).reshape(-1, mask.shape[1])  # [V*T, P]
    counts = mask.sum(-1)
    kmax = int(counts.max()) if counts.numel() else 0
    # row-major nonzero lists each row's primitives in ascending order (what a stable sort of the mask gives)
    rows, cols = mask.nonzero().unbind(-1)
    slot = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    table = torch.zeros(len(counts), kmax, device=rows.device, dtype=torch.long)
    table[rows, slot] = cols
    if view_scene is not None:  # local slots -> global primitive ids
        table = torch.gather(gidx.repeat_interleave(tx * ty, 0), 1, table)
    return counts, table, tx


def pairs_from_tiles(tiles: Tensor, counts: Tensor, table: Tensor):
    """Expand rays' tiles [R] into (ray, primitive) pairs [M], [M]."""
    n = counts[tiles]
    rays = torch.repeat_interleave(torch.arange(len(tiles), device=tiles.device), n)
    starts = torch.cumsum(n, 0) - n
    slot = torch.arange(len(rays), device=tiles.device) - starts[rays]
    return rays, table[tiles[rays], slot]


def nearest(st: SceneTensors, origins: Tensor, dirs: Tensor, rays: Tensor, prims: Tensor, n_rays: int):
    """Nearest primitive hit per ray among candidate pairs -> t [R] (inf: none), prim [R] (-1: none)."""
    t, _ = intersect(st, origins, dirs, prims, rays=rays)
    best = torch.full((n_rays,), INF, device=dirs.device, dtype=dirs.dtype)
    best = best.scatter_reduce(0, rays, t, "amin")
    win = (t == best[rays]) & torch.isfinite(t)
    P = len(st.centers)
    pid = torch.full((n_rays,), P, device=dirs.device, dtype=torch.long)
    pid = pid.scatter_reduce(0, rays[win], prims[win], "amin")  # deterministic tie break
    return best, torch.where(pid == P, -1, pid)


def trace(st: SceneTensors, origins: Tensor, dirs: Tensor, tiles: Tensor, counts: Tensor, table: Tensor,
          rs: Tensor | None = None):
    """Closest surface along rays -> t [R] and id [R] (>= 0 primitive, < 0 shell: -1 - shell index)."""
    t_sh, code = cast_shell(st, origins, dirs, rs)
    rays, prims = pairs_from_tiles(tiles, counts, table)
    t_pr, pid = nearest(st, origins, dirs, rays, prims, len(dirs))
    use = t_pr < t_sh
    return torch.where(use, t_pr, t_sh), torch.where(use, pid, -1 - code)


def camera_rays(cams: Cameras, offsets: Tensor | None = None, pixels: Tensor | None = None, tile: int = 8):
    """Rays with camera-z = 1 (so t is z-depth) through pixel centres (+ sub-pixel offsets).

    pixels: [R, 3] (view, row, col) to trace only those; default all. offsets [R, 2] (du, dv) in pixels.
    Returns origins [R,3], dirs [R,3], tile ids [R] (view-major).
    """
    V, H, W = len(cams.flatten()), cams.height, cams.width
    Ks, c2w = cams.Ks.reshape(-1, 3, 3), cams.c2w.reshape(-1, 4, 4)
    dev, dt = c2w.device, c2w.dtype
    tx, ty = -(-W // tile), -(-H // tile)
    if pixels is None and offsets is None:  # whole images: per-view matrices, no per-ray gathers
        dcam = pixel_directions(Ks, W, H).reshape(V, H * W, 3)
        dirs = (dcam @ c2w[:, :3, :3].transpose(1, 2)).reshape(-1, 3)
        origins = c2w[:, None, :3, 3].expand(V, H * W, 3).reshape(-1, 3)
        i, j = torch.meshgrid(torch.arange(H, device=dev) // tile, torch.arange(W, device=dev) // tile, indexing="ij")
        tiles = (torch.arange(V, device=dev)[:, None] * (tx * ty) + (i * tx + j).reshape(1, -1)).reshape(-1)
        return origins, dirs, tiles
    if pixels is None:
        grid = pixel_grid(W, H, dev, dt)  # [H, W, 2]
        v = torch.arange(V, device=dev).repeat_interleave(H * W)
        uv = grid.reshape(-1, 2).repeat(V, 1)
    else:
        v = pixels[:, 0]
        uv = torch.stack([pixels[:, 2], pixels[:, 1]], -1).to(dt) + 0.5
    pix = torch.floor(uv).long()
    if offsets is not None:
        uv = uv + offsets
    K = Ks[v]
    x = (uv[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
    y = (uv[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
    dcam = torch.stack([x, y, torch.ones_like(x)], -1)
    dirs = torch.einsum("rij,rj->ri", c2w[v, :3, :3], dcam)
    origins = c2w[v, :3, 3]
    tiles = v * (tx * ty) + (pix[:, 1] // tile).clamp(0, ty - 1) * tx + (pix[:, 0] // tile).clamp(0, tx - 1)
    return origins, dirs, tiles


# --- shading ----------------------------------------------------------------------------------------------------

def surface(st: SceneTensors, origins: Tensor, dirs: Tensor, t: Tensor, ids: Tensor):
    """Hit points [R,3], world normals facing the ray [R,3], object-local coords [R,3], material ids [R]."""
    points = origins + t[:, None] * dirs
    shell = ids < 0
    sidx = (-1 - ids).clamp_min(0)
    pidx = ids.clamp_min(0)
    normals = st.shell_normals[sidx].clone()
    locals_ = points.clone()
    mats = st.shell_mats[sidx].clone()
    sel = (~shell).nonzero()[:, 0]
    if len(sel):
        p = pidx[sel]
        _, n = intersect(st, origins[sel], dirs[sel], p, normals=True)
        normals[sel] = n
        d = points[sel] - st.centers[p]
        cs = st.yaws_cs[p]
        locals_[sel] = torch.stack([cs[:, 0] * d[:, 0] + cs[:, 1] * d[:, 1], -cs[:, 1] * d[:, 0] + cs[:, 0] * d[:, 1],
                                    d[:, 2]], -1)
        mats[sel] = st.prim_mats[p]
    flip = (normals * dirs).sum(-1) > 0
    normals = torch.where(flip[:, None], -normals, normals)
    return points, normals, locals_, mats


def _light_frame(light: Tensor, grid: int, extent: float):
    """A downward 'camera' at the light: its image plane covers tan(angle) in [-extent, extent]."""
    c2w = torch.eye(4, device=light.device, dtype=light.dtype)
    c2w[1, 1], c2w[2, 2] = -1.0, -1.0
    c2w[:3, 3] = light
    w2c = c2w.clone()
    w2c[:3, 3] = -(c2w[:3, :3].T @ light)
    f = grid / (2 * extent)
    K = torch.tensor([[f, 0, grid / 2], [0, f, grid / 2], [0, 0, 1]], device=light.device, dtype=light.dtype)
    return w2c, K


def _light_frames(lights: Tensor, grid: int, extent: float):
    """_light_frame for lights [S,3] -> w2c [S,4,4], K [3,3]."""
    w2c = torch.eye(4, device=lights.device, dtype=lights.dtype).repeat(len(lights), 1, 1)
    w2c[:, 1, 1], w2c[:, 2, 2] = -1.0, -1.0
    w2c[:, :3, 3] = lights * torch.tensor([-1.0, 1.0, 1.0], device=lights.device, dtype=lights.dtype)
    f = grid / (2 * extent)
    K = torch.tensor([[f, 0, grid / 2], [0, f, grid / 2], [0, 0, 1]], device=lights.device, dtype=lights.dtype)
    return w2c, K


def shadowed_batch(st: SceneTensors, points: Tensor, lights: Tensor, rs: Tensor, grid: int = 96,
                   extent: float = 4.0) -> Tensor:
    """`shadowed` for a batch of scenes: points [R,3] of scene rs [R], one light per scene lights [S,3]."""
    w2c, K = _light_frames(lights, grid, extent)
    S = len(lights)
    counts, table, _ = tile_table(st, w2c, K.expand(S, 3, 3), grid, grid, 1, clamp=True,
                                  view_scene=torch.arange(S, device=points.device))
    light = lights[rs]  # [R, 3]
    dirs = points - light
    cam = dirs * w2c[rs, :3, :3].diagonal(dim1=-2, dim2=-1)  # the light frame is diagonal
    uv = (cam[:, :2] / cam[:, 2:].clamp_min(1e-9)) * K[0, 0] + K[0, 2]
    tiles = torch.floor(uv.clamp(-1e6, 1e6)).clamp(0, grid - 1).long()
    tiles = rs * (grid * grid) + tiles[:, 1] * grid + tiles[:, 0]
    rays, prims = pairs_from_tiles(tiles, counts, table)
    t, _ = intersect(st, light, dirs, prims, tmin=1e-5, rays=rays)
    occ = torch.zeros(len(points), device=points.device, dtype=torch.bool)
    occ[rays[t < 1 - 1e-5]] = True
    if st.room_lo.shape[1] > 1:  # walls of an L-shaped room can hide a light
        t_exit, _ = cast_shell(st, points, -dirs, rs)
        occ |= (t_exit < 1 - 1e-5) & (st.n_boxes[rs] > 1)
    return occ


def shadowed(st: SceneTensors, points: Tensor, light: Tensor, grid: int = 96, extent: float = 4.0) -> Tensor:
    """Whether the segment from each point [R,3] (below the light) to the light [3] is blocked."""
    w2c, K = _light_frame(light, grid, extent)
    counts, table, _ = tile_table(st, w2c[None], K[None], grid, grid, 1, clamp=True)
    dirs = points - light  # from the light: t = 1 at the point
    cam = dirs @ w2c[:3, :3].T
    uv = (cam[:, :2] / cam[:, 2:].clamp_min(1e-9)) * K[0, 0] + K[0, 2]
    tiles = torch.floor(uv.clamp(-1e6, 1e6)).clamp(0, grid - 1).long()
    tiles = tiles[:, 1] * grid + tiles[:, 0]
    origins = light.expand_as(dirs)
    rays, prims = pairs_from_tiles(tiles, counts, table)
    t, _ = intersect(st, origins, dirs, prims, tmin=1e-5, rays=rays)
    occ = torch.zeros(len(points), device=points.device, dtype=torch.bool)
    occ[rays[t < 1 - 1e-5]] = True
    if st.room_lo.shape[1] > 1:  # walls of an L-shaped room can hide a light
        t_exit, _ = cast_shell(st, points, -dirs)
        occ |= t_exit < 1 - 1e-5
    return occ


def shade(st: SceneTensors, origins, dirs, t, ids, shadows=True, specular=True, rs: Tensor | None = None):
    """Lambertian + ambient (+ Blinn-Phong) colour of hits -> rgb [R,3], normals [R,3]. rs [R]: ray scenes."""
    points, normals, locals_, mats = surface(st, origins, dirs, t, ids)
    base, spec, emissive = albedo(st.mats, points, locals_, normals, mats)
    light = torch.full_like(t, st.ambient) if rs is None else st.ambient[rs]
    hl = torch.zeros_like(t)
    view = -dirs / dirs.norm(dim=-1, keepdim=True)
    for li in range(st.lights.shape[1]):
        if rs is None:
            pos, power = st.lights[0, li], st.light_powers[0, li]
        else:  # per ray; padded lights (power 0) are masked out below
            pos, power = st.lights[rs, li], st.light_powers[rs, li]
        to_l = pos - points
        dist = to_l.norm(dim=-1, keepdim=True)
        ldir = to_l / dist
        ndl = (normals * ldir).sum(-1).clamp_min(0)
        vis = torch.ones_like(t)
        if shadows:
            sel = (ndl > 0) & ~emissive & (points[:, 2] < pos[..., 2] - 1e-3)
            if rs is not None:
                sel &= st.light_valid[rs, li]
            sel = sel.nonzero()[:, 0]
            if len(sel):
                q = points[sel] + 2e-3 * normals[sel]
                occ = shadowed(st, q, pos) if rs is None else shadowed_batch(st, q, st.lights[:, li], rs[sel])
                vis[sel] = 1.0 - occ.to(t.dtype)
        falloff = 1.0 / (1.0 + 0.04 * dist[:, 0] ** 2)
        lit = light + 1.6 * power * ndl * vis * falloff
        light = lit if rs is None else torch.where(st.light_valid[rs, li], lit, light)
        if specular:
            h = ldir + view
            h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            hl2 = hl + power * vis * (ndl > 0) * (normals * h).sum(-1).clamp_min(0) ** 40
            hl = hl2 if rs is None else torch.where(st.light_valid[rs, li], hl2, hl)
    rgb = base * light[:, None] + (spec * hl)[:, None]
    rgb = torch.where(emissive[:, None], base, rgb)
    return rgb.clamp(0, 1), normals


# --- full render ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RenderConfig:
    supersample: int = 2  # RGB samples per pixel side (1: centre ray only)
    adaptive: bool = True  # supersample only pixels on object/primitive boundaries
    shadows: bool = True  # hard shadows via shadow rays
    specular: bool = True  # mild Blinn-Phong highlights
    tile: int = 8  # screen tile (pixels) for ray/primitive culling


def _edges(ids: Tensor) -> Tensor:
    """Pixels [V,H,W] whose id differs from a 4-neighbour."""
    e = torch.zeros_like(ids, dtype=torch.bool)
    dx = ids[:, :, 1:] != ids[:, :, :-1]
    dy = ids[:, 1:, :] != ids[:, :-1, :]
    e[:, :, 1:] |= dx
    e[:, :, :-1] |= dx
    e[:, 1:, :] |= dy
    e[:, :-1, :] |= dy
    return e


def _ray_scenes(view_scene: Tensor | None, tiles: Tensor, n_tiles: int) -> Tensor | None:
    return None if view_scene is None else view_scene[torch.div(tiles, n_tiles, rounding_mode="floor")]


@torch.no_grad()
def render_depth(st: SceneTensors, cams: Cameras, tile: int = 8, view_scene: Tensor | None = None):
    """Centre-ray geometry only (for the camera sampler): depth [V,H,W], ids [V,H,W].

    view_scene [V]: scene of each view when st is a batch (merge_scenes)."""
    cams = cams.flatten()
    V, H, W = len(cams), cams.height, cams.width
    counts, table, _ = tile_table(st, cams.viewmats, cams.Ks, W, H, tile, view_scene=view_scene)
    o, d, tiles = camera_rays(cams, tile=tile)
    rs = _ray_scenes(view_scene, tiles, len(counts) // max(V, 1))
    t, ids = trace(st, o, d, tiles, counts, table, rs)
    return t.reshape(V, H, W), ids.reshape(V, H, W)


@torch.no_grad()
def render(st: SceneTensors, cams: Cameras, cfg: RenderConfig = RenderConfig(),
           view_scene: Tensor | None = None) -> dict[str, Tensor]:
    """Render V cameras (one image size). Returns rgb [V,3,H,W] in [0,1], depth [V,H,W] (z, metres),
    valid [V,H,W], labels / instances [V,H,W] int64, normals [V,3,H,W] (world frame, facing the camera).

    view_scene [V]: scene of each view when st is a batch of scenes (merge_scenes; see render_batch)."""
    cams = cams.flatten().to(dtype=st.dtype, device=st.device)
    V, H, W = len(cams), cams.height, cams.width
    counts, table, _ = tile_table(st, cams.viewmats, cams.Ks, W, H, cfg.tile, view_scene=view_scene)
    n_tiles = len(counts) // max(V, 1)
    o, d, tiles = camera_rays(cams, tile=cfg.tile)
    rs = _ray_scenes(view_scene, tiles, n_tiles)
    t, ids = trace(st, o, d, tiles, counts, table, rs)
    rgb, normals = shade(st, o, d, t, ids, cfg.shadows, cfg.specular, rs)
    s = cfg.supersample
    if s > 1:
        ids_img = ids.reshape(V, H, W)
        sel = _edges(ids_img) if cfg.adaptive else torch.ones_like(ids_img, dtype=torch.bool)
        pix = sel.nonzero()  # [E, 3]
        if len(pix):
            k = (torch.arange(s, device=st.device, dtype=st.dtype) + 0.5) / s - 0.5
            offs = torch.stack(torch.meshgrid(k, k, indexing="xy"), -1).reshape(-1, 2)  # [s*s, 2]
            pix_r = pix.repeat_interleave(s * s, 0)
            so, sd, stiles = camera_rays(cams, offs.repeat(len(pix), 1), pix_r, cfg.tile)
            srs = _ray_scenes(view_scene, stiles, n_tiles)
            st_t, st_ids = trace(st, so, sd, stiles, counts, table, srs)
            sub_rgb, _ = shade(st, so, sd, st_t, st_ids, cfg.shadows, cfg.specular, srs)
            flat = (pix[:, 0] * H + pix[:, 1]) * W + pix[:, 2]
            rgb[flat] = sub_rgb.reshape(-1, s * s, 3).mean(1)
    shell = ids < 0
    sidx = (-1 - ids).clamp_min(0)
    pidx = ids.clamp_min(0)
    labels = torch.where(shell, st.shell_labels[sidx], st.prim_labels[pidx])
    instances = torch.where(shell, st.shell_instances[sidx], st.prim_instances[pidx])
    valid = torch.isfinite(t) & (t > 0)
    return {"rgb": rgb.reshape(V, H, W, 3).permute(0, 3, 1, 2).contiguous(),
            "depth": torch.where(valid, t, torch.zeros_like(t)).reshape(V, H, W),
            "valid": valid.reshape(V, H, W),
            "labels": torch.where(valid, labels, 0).reshape(V, H, W),
            "instances": torch.where(valid, instances, 0).reshape(V, H, W),
            "normals": normals.reshape(V, H, W, 3).permute(0, 3, 1, 2).contiguous()}


@torch.no_grad()
def render_batch(sts: list[SceneTensors] | SceneTensors, cams: Cameras, cfg: RenderConfig = RenderConfig(),
                 device=None) -> dict[str, Tensor]:
    """Render S scenes with V cameras each in one pass (few host syncs: worth it on GPUs).

    sts: S SceneTensors (or one merge_scenes result), cams [S, V] (one image size). Same outputs as `render`,
    with a leading scene axis: rgb [S,V,3,H,W], depth [S,V,H,W], ...
    """
    st = sts if isinstance(sts, SceneTensors) else merge_scenes(sts, device)
    S, V = cams.batch_shape[:2]
    view_scene = torch.arange(S, device=st.device).repeat_interleave(V)
    out = render(st, cams.flatten(), cfg, view_scene)
    return {k: v.reshape(S, V, *v.shape[1:]) for k, v in out.items()}
