"""Procedural indoor scenes, deterministic from an integer seed (numpy PCG64, so identical on every machine).

World frame: metres, z up, floor at z = 0, the room inside the union of one (rectangle) or two (L-shape)
axis-aligned boxes. Everything else is a list of primitives (boxes, ellipsoids, vertical frusta/cylinders)
rotated about z, each owned by one object of a class in `CLASSES`.

    scene = generate_scene(123)
    scene.object_names()        # ['door', 'window', 'sofa', ...]
    check_scene(scene)          # raises if objects interpenetrate or leave the room

Ids: class 0 is "void"; instance 0 is void, 1 the floor, 2 the ceiling, 3..3+W-1 the walls, then objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .catalogue import BOX, ELLIPSOID, FRUSTUM, Parts, build
from .textures import MaterialBank

CLASSES = ["void", "wall", "floor", "ceiling", "door", "window", "chair", "table", "sofa", "bed", "cabinet",
           "shelf", "lamp", "plant", "tv", "rug", "desk", "box"]
CLASS_IDS = {name: i for i, name in enumerate(CLASSES)}
FIRST_WALL_INSTANCE = 3


@dataclass(frozen=True)
class SceneConfig:
    min_size: float = 3.0  # room footprint side range (m)
    max_size: float = 8.0
    min_height: float = 2.4  # ceiling height range (m)
    max_height: float = 3.2
    l_shape_prob: float = 0.35  # L-shaped plans need both sides >= 4.5 m
    max_prims: int = 200  # optional objects are skipped beyond this budget (render speed)
    max_floor_cover: float = 0.45  # keep walkable space: furniture footprint / floor area


@dataclass
class Wall:
    axis: int  # 0: plane x = value, 1: plane y = value
    value: float
    lo: float  # extent along the other horizontal axis
    hi: float
    normal: np.ndarray  # inward unit normal (2D)


@dataclass
class Scene:
    seed: int
    height: float
    room_lo: np.ndarray  # [B, 3] boxes whose union is the room interior
    room_hi: np.ndarray  # [B, 3]
    walls: list
    wall_ids: np.ndarray  # [B, 2, 2] (box, axis x/y, side lo/hi) -> wall index
    prim_types: np.ndarray  # [P] BOX / ELLIPSOID / FRUSTUM, sorted
    prim_centers: np.ndarray  # [P, 3]
    prim_halves: np.ndarray  # [P, 3] half extents (frusta: bottom radius, radius, half height)
    prim_ratios: np.ndarray  # [P] frustum top / bottom radius
    prim_yaws: np.ndarray  # [P] rotation about z (radians)
    prim_objects: np.ndarray  # [P] owning object
    prim_mats: np.ndarray  # [P] material index
    object_classes: np.ndarray  # [O] class id
    materials: MaterialBank
    shell_mats: np.ndarray  # [2 + W]: floor, ceiling, walls
    lights: np.ndarray  # [L, 3]
    light_powers: np.ndarray  # [L]
    ambient: float

    @property
    def n_walls(self) -> int:
        return len(self.walls)

    def object_names(self) -> list[str]:
        return [CLASSES[c] for c in self.object_classes]

    def instance_classes(self) -> np.ndarray:
        """Class id of every instance id [1 + 2 + W + O]."""
        return np.concatenate([[0, CLASS_IDS["floor"], CLASS_IDS["ceiling"]],
                               np.full(self.n_walls, CLASS_IDS["wall"]), self.object_classes]).astype(np.int64)

    def prim_aabbs(self) -> tuple[np.ndarray, np.ndarray]:
        return prim_aabbs(self.prim_types, self.prim_centers, self.prim_halves, self.prim_ratios, self.prim_yaws)


def prim_aabbs(types, centers, halves, ratios, yaws):
    """Conservative world AABBs of primitives (the box around the local bounding box) -> lo, hi [P, 3]."""
    hb = halves.copy()
    fr = types == FRUSTUM
    hb[fr, :2] *= np.maximum(1.0, ratios[fr])[:, None]
    c, s = np.abs(np.cos(yaws)), np.abs(np.sin(yaws))
    hx = c * hb[:, 0] + s * hb[:, 1]
    hy = s * hb[:, 0] + c * hb[:, 1]
    hw = np.stack([hx, hy, hb[:, 2]], 1)
    return centers - hw, centers + hw


def points_inside_prims(points: np.ndarray, scene: Scene) -> np.ndarray:
    """Exact point-in-primitive test, points [N, 3] -> [N, P] bool (float64)."""
    d = points[:, None, :] - scene.prim_centers[None]  # [N, P, 3]
    c, s = np.cos(scene.prim_yaws), np.sin(scene.prim_yaws)
    lx = (c * d[..., 0] + s * d[..., 1]) / scene.prim_halves[:, 0]
    ly = (-s * d[..., 0] + c * d[..., 1]) / scene.prim_halves[:, 1]
    lz = d[..., 2] / scene.prim_halves[:, 2]
    box = (np.abs(lx) <= 1) & (np.abs(ly) <= 1) & (np.abs(lz) <= 1)
    ell = lx ** 2 + ly ** 2 + lz ** 2 <= 1
    r = 1 + (scene.prim_ratios - 1) * (lz + 1) / 2
    fru = (np.abs(lz) <= 1) & (lx ** 2 + ly ** 2 <= r ** 2)
    t = scene.prim_types
    return np.where(t == BOX, box, np.where(t == ELLIPSOID, ell, fru))


def points_inside_room(points: np.ndarray, scene: Scene, margin: float = 0.0) -> np.ndarray:
    inside = (points[:, None] >= scene.room_lo + margin) & (points[:, None] <= scene.room_hi - margin)
    return inside.all(-1).any(-1)


def check_scene(scene: Scene, tol: float = 1e-4) -> None:
    """Raise AssertionError if primitives of different objects overlap or leave the room."""
    lo, hi = scene.prim_aabbs()
    ov = ((lo[:, None] < hi[None] - tol) & (lo[None] < hi[:, None] - tol)).all(-1)
    same = scene.prim_objects[:, None] == scene.prim_objects[None]
    bad = np.argwhere(ov & ~same)
    assert len(bad) == 0, f"seed {scene.seed}: objects {scene.prim_objects[bad[0]]} interpenetrate"
    corners_in = points_inside_room(lo, scene, -tol) & points_inside_room(hi, scene, -tol)
    assert corners_in.all(), f"seed {scene.seed}: primitive outside the room"


# --- placement state ------------------------------------------------------------------------------------------

@dataclass
class _State:
    rng: np.random.Generator
    cfg: SceneConfig
    lo: np.ndarray  # room boxes
    hi: np.ndarray
    height: float
    walls: list
    bank: MaterialBank = field(default_factory=MaterialBank)
    prims: list = field(default_factory=list)  # (type, c, h, k, yaw, obj, mat)
    aabb_lo: list = field(default_factory=list)
    aabb_hi: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    surfaces: list = field(default_factory=list)  # world: (x0, y0, x1, y1, z, clearance, yaw, obj)
    keepouts: list = field(default_factory=list)  # 2D rects kept free of floor furniture (door swing)
    rugs: list = field(default_factory=list)  # (x0, y0, x1, y1, top)
    wall_used: dict = field(default_factory=dict)  # wall index -> list of occupied intervals
    cover: float = 0.0

    def floor_area(self) -> float:
        a = np.prod(self.hi[:, :2] - self.lo[:, :2], 1).sum()
        if len(self.lo) == 2:  # subtract the double-counted overlap of the two boxes
            olo, ohi = np.maximum(self.lo[0], self.lo[1]), np.minimum(self.hi[0], self.hi[1])
            a -= np.prod(np.clip(ohi[:2] - olo[:2], 0, None))
        return float(a)


def _rot(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def _world(parts: Parts, x, y, z, yaw):
    R = _rot(yaw)
    out = []
    for t, c, h, k, m in parts.prims:
        cw = np.array([*(R @ c[:2] + [x, y]), c[2] + z])
        out.append((t, cw, h, k, yaw, m))
    return out


def _place(st: _State, cls: str, parts: Parts, x, y, yaw, z=0.0, floor=True, max_z=None) -> int | None:
    """Put an object at (x, y, z) with rotation yaw if it fits; returns its index or None."""
    if len(st.prims) + len(parts.prims) > st.cfg.max_prims:
        return None
    wp = _world(parts, x, y, z, yaw)
    types = np.array([p[0] for p in wp])
    lo, hi = prim_aabbs(types, np.stack([p[1] for p in wp]), np.stack([p[2] for p in wp]),
                        np.array([p[3] for p in wp]), np.array([p[4] for p in wp]))
    olo, ohi = lo.min(0), hi.max(0)
    if floor and cls != "rug" and z == 0.0:  # objects standing on a rug are lifted by its thickness
        for rx0, ry0, rx1, ry1, top in st.rugs:
            if olo[0] < rx1 and rx0 < ohi[0] and olo[1] < ry1 and ry0 < ohi[1]:
                return _place(st, cls, parts, x, y, yaw, top, floor, max_z)
    if not (((olo >= st.lo - 1e-9) & (ohi <= st.hi + 1e-9)).all(-1)).any():
        return None
    if ohi[2] > (st.height - 0.25 if max_z is None else max_z):
        return None
    if st.aabb_lo:
        plo, phi = np.stack(st.aabb_lo), np.stack(st.aabb_hi)
        if ((lo[:, None] < phi[None] - 1e-4) & (plo[None] < hi[:, None] - 1e-4)).all(-1).any():
            return None
    area = (ohi[0] - olo[0]) * (ohi[1] - olo[1])
    if floor and cls not in ("rug", "door", "window"):
        for k0, k1, k2, k3 in st.keepouts:
            if olo[0] < k2 and k0 < ohi[0] and olo[1] < k3 and k1 < ohi[1]:
                return None
        if st.cover + area > st.cfg.max_floor_cover * st.floor_area():
            return None
        st.cover += area
    obj = len(st.classes)
    st.classes.append(CLASS_IDS[cls])
    for (t, c, h, k, yw, m), a, b in zip(wp, lo, hi):
        st.prims.append((t, c, h, k, yw, obj, m))
        st.aabb_lo.append(a)
        st.aabb_hi.append(b)
    R = _rot(yaw)
    for cx, cy, hx, hy, sz, cl in parts.surfaces:
        cxy = R @ [cx, cy] + [x, y]
        ex = np.abs(R) @ [hx, hy]
        st.surfaces.append((cxy[0] - ex[0], cxy[1] - ex[1], cxy[0] + ex[0], cxy[1] + ex[1], sz + z, cl, yaw, obj))
    if cls == "rug":
        st.rugs.append((olo[0], olo[1], ohi[0], ohi[1], ohi[2]))
    return obj


def _yaw_facing(n2) -> float:
    """Yaw that turns the object's front (-y) towards the inward wall normal n2."""
    return float(np.arctan2(n2[0], -n2[1]))


def _against_wall(st: _State, cls: str, parts: Parts, tries=20, gap=0.02, z=0.0, wall=None, at=None,
                  floor=True, max_z=None) -> int | None:
    lo, hi = parts.bounds()
    half_w, half_d = (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2
    for _ in range(tries):
        wi = int(st.rng.integers(len(st.walls))) if wall is None else wall
        w = st.walls[wi]
        if w.hi - w.lo < 2 * half_w + 0.1:
            continue
        s = st.rng.uniform(w.lo + half_w + 0.05, w.hi - half_w - 0.05) if at is None else at
        n = w.normal
        p = np.zeros(2)
        p[w.axis], p[1 - w.axis] = w.value, s
        p = p + n * (half_d + gap)
        obj = _place(st, cls, parts, p[0], p[1], _yaw_facing(n), z=z, floor=floor, max_z=max_z)
        if obj is not None:
            return obj
        if at is not None:
            return None
    return None


def _free(st: _State, cls: str, parts: Parts, tries=25, yaw_jitter=0.0) -> int | None:
    for _ in range(tries):
        b = int(st.rng.integers(len(st.lo)))
        x = st.rng.uniform(st.lo[b, 0] + 0.3, st.hi[b, 0] - 0.3)
        y = st.rng.uniform(st.lo[b, 1] + 0.3, st.hi[b, 1] - 0.3)
        yaw = st.rng.integers(4) * np.pi / 2 + st.rng.uniform(-yaw_jitter, yaw_jitter)
        obj = _place(st, cls, parts, x, y, yaw)
        if obj is not None:
            return obj
    return None


def _on_surface(st: _State, cls: str, tries=6, of=None, **kw) -> int | None:
    """Put a small object (lamp, tv, plant, box) on a free support surface."""
    cands = [s for s in st.surfaces if of is None or s[7] == of]
    for _ in range(tries):
        if not cands:
            return None
        x0, y0, x1, y1, z, cl, yaw, _ = cands[int(st.rng.integers(len(cands)))]
        w, d = x1 - x0, y1 - y0
        parts = build(cls, st.rng, st.bank, max_w=min(w, d) * 0.9, max_d=min(w, d) * 0.9, max_h=cl - 0.02, **kw)
        lo, hi = parts.bounds()
        if hi[2] > cl - 0.01:
            continue
        ex = np.abs(_rot(yaw)) @ [(hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2]
        if ex[0] * 2 > w or ex[1] * 2 > d:
            continue
        x = st.rng.uniform(x0 + ex[0], x1 - ex[0])
        y = st.rng.uniform(y0 + ex[1], y1 - ex[1])
        obj = _place(st, cls, parts, x, y, yaw, z=z, floor=False)
        if obj is not None:
            return obj
    return None


# --- the room ---------------------------------------------------------------------------------------------------

def _room(rng, cfg):
    lx, ly = rng.uniform(cfg.min_size, cfg.max_size, 2)
    h = rng.uniform(cfg.min_height, cfg.max_height)
    if min(lx, ly) >= 4.5 and rng.random() < cfg.l_shape_prob:
        lx2, ly1 = lx * rng.uniform(0.45, 0.65), ly * rng.uniform(0.45, 0.65)
        lo = np.zeros((2, 3))
        hi = np.array([[lx, ly1, h], [lx2, ly, h]])
        walls = [Wall(1, 0.0, 0, lx, np.array([0, 1.0])), Wall(0, lx, 0, ly1, np.array([-1.0, 0])),
                 Wall(1, ly1, lx2, lx, np.array([0, -1.0])), Wall(0, lx2, ly1, ly, np.array([-1.0, 0])),
                 Wall(1, ly, 0, lx2, np.array([0, -1.0])), Wall(0, 0.0, 0, ly, np.array([1.0, 0]))]
    else:
        lo, hi = np.zeros((1, 3)), np.array([[lx, ly, h]])
        walls = [Wall(1, 0.0, 0, lx, np.array([0, 1.0])), Wall(0, lx, 0, ly, np.array([-1.0, 0])),
                 Wall(1, ly, 0, lx, np.array([0, -1.0])), Wall(0, 0.0, 0, ly, np.array([1.0, 0]))]
    # which wall each box face belongs to (faces inside the union are never reached by rays from inside)
    ids = np.full((len(lo), 2, 2), -1, np.int64)
    for b in range(len(lo)):
        for axis in range(2):
            for side, v in enumerate((lo[b, axis], hi[b, axis])):
                for wi, w in enumerate(walls):
                    if w.axis == axis and abs(w.value - v) < 1e-9:
                        ids[b, axis, side] = wi
    ids[ids < 0] = 0
    return lo, hi, h, walls, ids


def _openings(st: _State):
    """Doors (1-2) and windows (0-3) on the walls, not overlapping each other along a wall."""
    rng = st.rng
    order = ["door"] + (["door"] if rng.random() < 0.3 else []) + ["window"] * int(rng.integers(0, 4))
    for cls in order:
        for _ in range(10):
            wi = int(rng.integers(len(st.walls)))
            w = st.walls[wi]
            if cls == "door":
                parts = build("door", rng, st.bank, height=rng.uniform(1.95, min(2.15, st.height - 0.35)))
                z = 0.0
            else:
                sill = rng.uniform(0.75, 1.0)
                top = min(rng.uniform(1.9, 2.2), st.height - 0.3)
                parts = build("window", rng, st.bank, width=rng.uniform(0.7, min(2.0, w.hi - w.lo - 0.6)),
                              height=top - sill)
                z = sill - 0.04
            lo, hi = parts.bounds()
            hw = (hi[0] - lo[0]) / 2
            if w.hi - w.lo < 2 * hw + 0.5:
                continue
            s = rng.uniform(w.lo + hw + 0.2, w.hi - hw - 0.2)
            used = st.wall_used.setdefault(wi, [])
            if any(s - hw - 0.15 < b and a < s + hw + 0.15 for a, b in used):
                continue
            obj = _against_wall(st, cls, parts, gap=0.0, z=z, wall=wi, at=s, floor=False, max_z=st.height - 0.2)
            if obj is None:
                continue
            used.append((s - hw, s + hw))
            if cls == "door":  # keep the door's swing area free
                p = np.zeros(2)
                p[w.axis], p[1 - w.axis] = w.value, s
                q = p + w.normal * 1.0
                ext = np.zeros(2)
                ext[1 - w.axis] = hw + 0.1
                a, b = np.minimum(p, q) - ext, np.maximum(p, q) + ext
                st.keepouts.append((a[0], a[1], b[0], b[1]))
            break


def _furnish(st: _State):
    rng = st.rng
    kind = rng.choice(["living", "bedroom", "office", "dining", "mixed"])
    B = st.bank

    def wall_obj(cls, **kw):
        return _against_wall(st, cls, build(cls, rng, B, **kw))

    def free_obj(cls, jitter=0.0, **kw):
        return _free(st, cls, build(cls, rng, B, **kw), yaw_jitter=jitter)

    def chairs_around(obj, n):
        """Chairs facing a table/desk, placed just outside its footprint."""
        lo, hi = np.stack(st.aabb_lo)[_prims_of(st, obj)].min(0), np.stack(st.aabb_hi)[_prims_of(st, obj)].max(0)
        c = (lo + hi) / 2
        sides = [(0, -1), (0, 1), (-1, 0), (1, 0)]
        for i in range(n):
            sx, sy = sides[i % 4] if n > 1 else sides[int(rng.integers(4))]
            parts = build("chair", rng, B)
            plo, phi = parts.bounds()
            d = (phi[1] - plo[1]) / 2 + 0.05
            x = c[0] + sx * ((hi[0] - lo[0]) / 2 + d) + (rng.uniform(-0.2, 0.2) if sx == 0 else 0)
            y = c[1] + sy * ((hi[1] - lo[1]) / 2 + d) + (rng.uniform(-0.2, 0.2) if sy == 0 else 0)
            _place(st, "chair", parts, x, y, _yaw_facing(np.array([-sx, -sy], float)))

    if rng.random() < 0.5:
        free_obj("rug")
    if kind == "living":
        wall_obj("sofa")
        free_obj("table", kind="coffee")
        cab = wall_obj("cabinet", kind="low")
        if cab is not None:
            _on_surface(st, "tv", of=cab, kind="tv")
    elif kind == "bedroom":
        wall_obj("bed")
        for _ in range(int(rng.integers(1, 3))):
            ns = wall_obj("cabinet", kind="night")
            if ns is not None:
                _on_surface(st, "lamp", of=ns, kind="table")
        wall_obj("cabinet", kind="tall")
    elif kind == "office":
        d = wall_obj("desk")
        if d is not None:
            _on_surface(st, "tv", of=d, kind="monitor")
            chairs_around(d, 1)
        wall_obj("shelf")
    elif kind == "dining":
        t = free_obj("table", kind="dining")
        if t is not None:
            chairs_around(t, int(rng.integers(2, 7)))
        wall_obj("cabinet", kind="low")
    extras = ["plant", "lamp", "shelf", "chair", "box", "cabinet", "desk", "table", "sofa", "bed", "tv", "rug"]
    for cls in rng.choice(extras, size=int(rng.integers(2, 6))):
        if cls in ("shelf", "cabinet", "desk", "sofa", "bed"):
            obj = wall_obj(cls, **({"kind": rng.choice(["low", "tall"])} if cls == "cabinet" else {}))
        elif cls == "tv":
            obj = _on_surface(st, "tv", kind="tv")
        elif cls == "table":
            obj = free_obj("table", kind=rng.choice(["side", "coffee"]))
        else:
            obj = free_obj(cls, jitter=0.3 if cls in ("chair", "plant", "box") else 0.0,
                           **({"kind": "floor"} if cls in ("lamp", "plant") else {}))
        if obj is not None and cls == "desk":
            chairs_around(obj, 1)
    for _ in range(int(rng.integers(1, 7))):  # small things on shelves, tables, cabinets
        _on_surface(st, rng.choice(["box", "box", "plant", "lamp"]), kind="small" if rng.random() < 0.5 else "table")


def _prims_of(st: _State, obj: int) -> np.ndarray:
    return np.array([p[5] == obj for p in st.prims])


def _lights(st: _State):
    rng = st.rng
    n = int(rng.integers(1, 3))
    lights = []
    for _ in range(n):
        for _ in range(20):
            b = int(rng.integers(len(st.lo)))
            x = rng.uniform(st.lo[b, 0] + 0.6, st.hi[b, 0] - 0.6)
            y = rng.uniform(st.lo[b, 1] + 0.6, st.hi[b, 1] - 0.6)
            parts = build("lamp", rng, st.bank, kind="ceiling")
            if _place(st, "lamp", parts, x, y, 0.0, z=st.height - 0.06, floor=False, max_z=st.height) is not None:
                lights.append([x, y, st.height - 0.12])
                break
    if not lights:  # always at least one light, even without its fixture
        b = 0
        lights.append([(st.lo[b, 0] + st.hi[b, 0]) / 2, (st.lo[b, 1] + st.hi[b, 1]) / 2, st.height - 0.12])
    powers = rng.dirichlet(np.ones(len(lights))) * rng.uniform(0.55, 0.85)
    return np.array(lights), powers


def generate_scene(seed: int, cfg: SceneConfig = SceneConfig()) -> Scene:
    """A furnished room, deterministic from `seed`."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    lo, hi, h, walls, wall_ids = _room(rng, cfg)
    st = _State(rng, cfg, lo, hi, h, walls)
    floor = st.bank.sample(rng, rng.choice(["floorwood", "tile", "stone", "carpet"]))
    ceiling = st.bank.sample(rng, "paint")
    paint = st.bank.sample(rng, "paint")
    wall_mats = [paint] * len(walls)
    if rng.random() < 0.35:
        wall_mats[int(rng.integers(len(walls)))] = st.bank.sample(rng, "accent")
    lights, powers = _lights(st)  # ceiling fixtures first: they must sit above their lights
    _openings(st)
    _furnish(st)
    t = np.array([p[0] for p in st.prims], np.int64)
    order = np.argsort(t, kind="stable")  # primitives grouped by type for the renderer

    def col(i, dtype=np.float64):
        return np.array([st.prims[j][i] for j in order], dtype)

    return Scene(seed=int(seed), height=float(h), room_lo=lo, room_hi=hi, walls=walls, wall_ids=wall_ids,
                 prim_types=t[order], prim_centers=np.stack([st.prims[j][1] for j in order]),
                 prim_halves=np.stack([st.prims[j][2] for j in order]), prim_ratios=col(3), prim_yaws=col(4),
                 prim_objects=col(5, np.int64), prim_mats=col(6, np.int64),
                 object_classes=np.array(st.classes, np.int64), materials=st.bank,
                 shell_mats=np.array([floor, ceiling, *wall_mats], np.int64), lights=lights, light_powers=powers,
                 ambient=float(rng.uniform(0.3, 0.45)))
