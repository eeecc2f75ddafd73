"""Furniture catalogue: each builder assembles one object from primitives in its own frame.

Object frame: metres, z up from the floor (or from the supporting surface), the object's front faces -y
(its back, the side that goes against a wall, is +y). `Parts.normalized()` centres the footprint on the
origin and puts the lowest point at z = 0; placement (scene.py) then rotates about z and translates.

    parts = build("chair", rng, bank)          # Parts with .prims and .surfaces
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .textures import MaterialBank

BOX, ELLIPSOID, FRUSTUM = 0, 1, 2  # FRUSTUM with ratio 1 is a cylinder, ratio 0 a cone


@dataclass
class Parts:
    """Primitives (type, centre [3], half extents [3], top/bottom radius ratio, material) and flat support
    surfaces (cx, cy, hx, hy, z, clearance) on which small objects may stand."""

    prims: list = field(default_factory=list)
    surfaces: list = field(default_factory=list)

    def box(self, c, h, m):
        self.prims.append((BOX, np.asarray(c, float), np.asarray(h, float), 1.0, m))

    def ell(self, c, h, m):
        self.prims.append((ELLIPSOID, np.asarray(c, float), np.asarray(h, float), 1.0, m))

    def cyl(self, c, r, hz, m, ratio=1.0):
        """Vertical cylinder / truncated cone: bottom radius r, top radius r * ratio, half height hz."""
        self.prims.append((FRUSTUM, np.asarray(c, float), np.array([r, r, hz], float), float(ratio), m))

    def rbox(self, c, h, r, m):
        """Box with rounded vertical edges (radius r): two boxes + four corner cylinders."""
        c, h = np.asarray(c, float), np.asarray(h, float)
        r = min(r, 0.45 * h[0], 0.45 * h[1])
        self.box(c, [h[0], h[1] - r, h[2]], m)
        self.box(c, [h[0] - r, h[1], h[2]], m)
        for sx in (-1, 1):
            for sy in (-1, 1):
                self.cyl(c + [sx * (h[0] - r), sy * (h[1] - r), 0], r, h[2], m)

    def surface(self, cx, cy, hx, hy, z, clearance=0.6):
        self.surfaces.append((cx, cy, hx, hy, z, clearance))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        los, his = [], []
        for t, c, h, k, _ in self.prims:
            hb = h * np.array([max(1, k), max(1, k), 1]) if t == FRUSTUM else h
            los.append(c - hb)
            his.append(c + hb)
        return np.min(los, 0), np.max(his, 0)

    def normalized(self) -> Parts:
        lo, hi = self.bounds()
        shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
        out = Parts([(t, c + shift, h, k, m) for t, c, h, k, m in self.prims],
                    [(cx + shift[0], cy + shift[1], hx, hy, z + shift[2], cl) for cx, cy, hx, hy, z, cl in
                     self.surfaces])
        return out


U = np.random.Generator.uniform


def chair(rng, bank: MaterialBank, **_) -> Parts:
    p = Parts()
    w, d, sh = U(rng, 0.42, 0.55), U(rng, 0.42, 0.52), U(rng, 0.42, 0.48)
    frame = bank.sample(rng, "wood" if rng.random() < 0.6 else "metal")
    seat_m = bank.sample(rng, "fabric") if rng.random() < 0.6 else frame
    style = rng.choice(["classic", "armchair", "stool", "office"], p=[0.45, 0.25, 0.15, 0.15])
    st = U(rng, 0.04, 0.07)
    if style == "stool":
        r = U(rng, 0.16, 0.22)
        p.cyl([0, 0, sh - st / 2], r, st / 2, seat_m)
        for a in np.linspace(0, 2 * np.pi, 4, endpoint=False) + rng.uniform(0, 1):
            p.cyl([0.7 * r * np.cos(a), 0.7 * r * np.sin(a), (sh - st) / 2], 0.015, (sh - st) / 2, frame)
        return p
    p.box([0, 0, sh - st / 2], [w / 2, d / 2, st / 2], seat_m)
    if style == "office":
        p.cyl([0, 0, (sh - st) / 2 + 0.03], 0.025, (sh - st) / 2 - 0.03, frame)
        p.box([0, 0, 0.015], [0.3, 0.03, 0.015], frame)
        p.box([0, 0, 0.015], [0.03, 0.3, 0.015], frame)
    else:
        lw = U(rng, 0.015, 0.025)
        round_legs = rng.random() < 0.5
        for sx in (-1, 1):
            for sy in (-1, 1):
                c = [sx * (w / 2 - lw), sy * (d / 2 - lw), (sh - st) / 2]
                if round_legs:
                    p.cyl(c, lw, (sh - st) / 2, frame)
                else:
                    p.box(c, [lw, lw, (sh - st) / 2], frame)
    bh, bt = U(rng, 0.3, 0.5), U(rng, 0.025, 0.05)
    p.box([0, d / 2 - bt / 2, sh + bh / 2], [w / 2, bt / 2, bh / 2], seat_m if rng.random() < 0.5 else frame)
    if style == "armchair":
        for sx in (-1, 1):
            p.box([sx * (w / 2 + 0.03), 0, sh + 0.2], [0.03, d / 2, 0.025], frame)
            p.box([sx * (w / 2 + 0.03), -d / 2 + 0.03, sh + 0.09], [0.02, 0.02, 0.09], frame)
    return p


def table(rng, bank, kind="dining", **_) -> Parts:
    p = Parts()
    wood = bank.sample(rng, "wood" if rng.random() < 0.75 else "stone")
    legm = wood if rng.random() < 0.6 else bank.sample(rng, "metal")
    h = {"dining": U(rng, 0.72, 0.78), "coffee": U(rng, 0.38, 0.48), "side": U(rng, 0.5, 0.65)}[kind]
    tt = U(rng, 0.025, 0.05)
    if rng.random() < 0.35:  # round table on a pedestal or three legs
        r = {"dining": U(rng, 0.45, 0.65), "coffee": U(rng, 0.35, 0.5), "side": U(rng, 0.2, 0.3)}[kind]
        p.cyl([0, 0, h - tt / 2], r, tt / 2, wood)
        if rng.random() < 0.5:
            p.cyl([0, 0, (h - tt) / 2], 0.04, (h - tt) / 2, legm)
            p.cyl([0, 0, 0.02], 0.5 * r, 0.02, legm, ratio=0.4)
        else:
            for a in np.linspace(0, 2 * np.pi, 3, endpoint=False):
                p.cyl([0.6 * r * np.cos(a), 0.6 * r * np.sin(a), (h - tt) / 2], 0.02, (h - tt) / 2, legm)
        p.surface(0, 0, 0.68 * r, 0.68 * r, h)
        return p
    w, d = {"dining": (U(rng, 1.1, 1.9), U(rng, 0.75, 1.0)), "coffee": (U(rng, 0.8, 1.3), U(rng, 0.45, 0.7)),
            "side": (U(rng, 0.4, 0.6), U(rng, 0.4, 0.6))}[kind]
    if rng.random() < 0.3:
        p.rbox([0, 0, h - tt / 2], [w / 2, d / 2, tt / 2], 0.08, wood)
    else:
        p.box([0, 0, h - tt / 2], [w / 2, d / 2, tt / 2], wood)
    lw, inset = U(rng, 0.02, 0.035), U(rng, 0.03, 0.1)
    if rng.random() < 0.2:  # two panel legs
        for sx in (-1, 1):
            p.box([sx * (w / 2 - inset), 0, (h - tt) / 2], [0.02, d / 2 - inset, (h - tt) / 2], legm)
    else:
        for sx in (-1, 1):
            for sy in (-1, 1):
                p.box([sx * (w / 2 - inset), sy * (d / 2 - inset), (h - tt) / 2], [lw, lw, (h - tt) / 2], legm)
    p.surface(0, 0, w / 2 - 0.03, d / 2 - 0.03, h)
    return p


def desk(rng, bank, **_) -> Parts:
    p = Parts()
    wood, legm = bank.sample(rng, "wood"), bank.sample(rng, "metal" if rng.random() < 0.5 else "wood")
    w, d, h, tt = U(rng, 1.0, 1.6), U(rng, 0.55, 0.75), U(rng, 0.72, 0.76), U(rng, 0.025, 0.04)
    p.box([0, 0, h - tt / 2], [w / 2, d / 2, tt / 2], wood)
    if rng.random() < 0.5:
        for sx in (-1, 1):
            p.box([sx * (w / 2 - 0.02), 0, (h - tt) / 2], [0.02, d / 2 - 0.02, (h - tt) / 2], legm)
    else:
        for sx in (-1, 1):
            for sy in (-1, 1):
                p.box([sx * (w / 2 - 0.04), sy * (d / 2 - 0.04), (h - tt) / 2], [0.02, 0.02, (h - tt) / 2], legm)
    if rng.random() < 0.5:  # drawer block with handles
        bw = 0.4
        x = (w / 2 - 0.05 - bw / 2) * rng.choice([-1, 1])
        p.box([x, 0, (h - tt) / 2], [bw / 2, d / 2 - 0.05, (h - tt) / 2 - 0.01], wood)
        for k in range(3):
            p.box([x, -d / 2 + 0.04, (k + 0.5) * (h - tt) / 3], [0.06, 0.01, 0.01], legm)
    p.surface(0, 0.05, w / 2 - 0.03, d / 2 - 0.1, h)
    return p


def sofa(rng, bank, **_) -> Parts:
    p = Parts()
    fab, legm = bank.sample(rng, "fabric"), bank.sample(rng, "wood")
    w, d, sh = U(rng, 1.5, 2.4), U(rng, 0.8, 0.95), U(rng, 0.38, 0.45)
    lh, ch, bh, aw, ah = U(rng, 0.04, 0.12), U(rng, 0.1, 0.16), U(rng, 0.72, 0.9), U(rng, 0.1, 0.22), U(rng, 0.55, 0.65)
    bt = U(rng, 0.15, 0.22)
    for sx in (-1, 1):
        for sy in (-1, 1):
            p.cyl([sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), lh / 2], 0.025, lh / 2, legm, ratio=0.7)
    base_top = sh - ch
    p.box([0, 0, (lh + base_top) / 2], [w / 2, d / 2, (base_top - lh) / 2], fab)
    p.box([0, d / 2 - bt / 2, (base_top + bh) / 2], [w / 2, bt / 2, (bh - base_top) / 2], fab)
    for sx in (-1, 1):
        p.box([sx * (w / 2 - aw / 2), -bt / 2, (base_top + ah) / 2], [aw / 2, d / 2 - bt / 2, (ah - base_top) / 2], fab)
    n = int(rng.integers(2, 4))
    inner = w - 2 * aw
    cush = bank.sample(rng, "fabric") if rng.random() < 0.4 else fab
    for i in range(n):
        cx = -inner / 2 + (i + 0.5) * inner / n
        p.box([cx, -bt / 2, base_top + ch / 2], [inner / n / 2 - 0.01, d / 2 - bt / 2 - 0.01, ch / 2], cush)
        if rng.random() < 0.5:  # back cushion leaning on the backrest
            p.ell([cx, d / 2 - bt - 0.07, sh + 0.2], [inner / n / 2 - 0.03, 0.07, 0.18], cush)
    return p


def bed(rng, bank, **_) -> Parts:
    p = Parts()
    frame, sheet = bank.sample(rng, "wood"), bank.sample(rng, "fabric")
    blanket = bank.sample(rng, "fabric")
    w, L = rng.choice([U(rng, 0.9, 1.1), U(rng, 1.4, 1.8)]), U(rng, 1.95, 2.15)
    lh, fh, mh = U(rng, 0.05, 0.15), U(rng, 0.25, 0.35), U(rng, 0.16, 0.25)
    for sx in (-1, 1):
        for sy in (-1, 1):
            p.box([sx * (w / 2 - 0.04), sy * (L / 2 - 0.04), lh / 2], [0.03, 0.03, lh / 2], frame)
    p.box([0, 0, (lh + fh) / 2], [w / 2, L / 2, (fh - lh) / 2], frame)
    p.rbox([0, 0, fh + mh / 2], [w / 2 - 0.02, L / 2 - 0.02, mh / 2], 0.06, sheet)
    hb_h, hb_t = U(rng, 0.8, 1.2), U(rng, 0.04, 0.08)
    p.box([0, L / 2 + hb_t / 2, hb_h / 2], [w / 2 + 0.02, hb_t / 2, hb_h / 2], frame)
    top = fh + mh
    npil = 1 if w < 1.2 else 2
    for i in range(npil):
        cx = 0 if npil == 1 else (i - 0.5) * w / 2
        p.ell([cx, L / 2 - 0.25, top + 0.06], [min(0.3, w / npil / 2 - 0.05), 0.17, 0.07], sheet)
    bl = L * U(rng, 0.55, 0.7)
    p.box([0, -L / 2 + bl / 2 - 0.005, top + 0.01], [w / 2 - 0.01, bl / 2, 0.02], blanket)
    return p


def cabinet(rng, bank, kind="low", **_) -> Parts:
    p = Parts()
    body = bank.sample(rng, "wood" if rng.random() < 0.7 else "plastic")
    front = body if rng.random() < 0.6 else bank.sample(rng, "wood")
    handle = bank.sample(rng, "metal")
    w, d, h = {"low": (U(rng, 0.8, 1.8), U(rng, 0.38, 0.5), U(rng, 0.5, 0.85)),
               "night": (U(rng, 0.4, 0.55), U(rng, 0.35, 0.45), U(rng, 0.45, 0.6)),
               "tall": (U(rng, 0.8, 1.5), U(rng, 0.5, 0.6), U(rng, 1.7, 2.05))}[kind]
    lh = U(rng, 0.0, 0.12)
    if lh > 0.03:
        for sx in (-1, 1):
            for sy in (-1, 1):
                p.cyl([sx * (w / 2 - 0.04), sy * (d / 2 - 0.04), lh / 2], 0.02, lh / 2, handle)
    else:
        lh = 0.0
    p.box([0, 0, (lh + h) / 2], [w / 2, d / 2, (h - lh) / 2], body)
    drawers = kind != "tall" and rng.random() < 0.5
    ncol = max(1, round(w / (0.5 if drawers else 0.45)))
    nrow = int(rng.integers(2, 4)) if drawers else 1
    cw, rh = w / ncol, (h - lh) / nrow
    for i in range(ncol):
        for j in range(nrow):
            cx, cz = -w / 2 + (i + 0.5) * cw, lh + (j + 0.5) * rh
            p.box([cx, -d / 2 - 0.008, cz], [cw / 2 - 0.006, 0.008, rh / 2 - 0.006], front)
            hx = cx if drawers else cx + (cw / 2 - 0.06) * (1 if i % 2 else -1)
            p.box([hx, -d / 2 - 0.026, cz + (0 if drawers else 0.1 * rh)],
                  [0.05 if drawers else 0.01, 0.01, 0.01 if drawers else 0.05], handle)
    p.surface(0, 0, w / 2 - 0.02, d / 2 - 0.02, h)
    return p


def shelf(rng, bank, **_) -> Parts:
    p = Parts()
    m = bank.sample(rng, "wood" if rng.random() < 0.7 else "plastic")
    w, d, h, t = U(rng, 0.6, 1.2), U(rng, 0.25, 0.4), U(rng, 1.0, 2.0), U(rng, 0.018, 0.03)
    n = max(3, int(h / U(rng, 0.3, 0.42)))
    for sx in (-1, 1):
        p.box([sx * (w / 2 - t / 2), 0, h / 2], [t / 2, d / 2, h / 2], m)
    if rng.random() < 0.6:
        p.box([0, d / 2 - 0.005, h / 2], [w / 2 - t, 0.005, h / 2], m)
    zs = np.linspace(0.05, h - t / 2, n)
    for k, z in enumerate(zs):
        p.box([0, 0, z], [w / 2 - t, d / 2, t / 2], m)
        if k + 1 < n:
            p.surface(0, -0.005, w / 2 - t - 0.01, d / 2 - 0.015, z + t / 2, zs[k + 1] - z - t - 0.01)
    p.surface(0, 0, w / 2 - 0.01, d / 2 - 0.01, h, 0.4)
    return p


def lamp(rng, bank, kind="floor", **_) -> Parts:
    p = Parts()
    base, shade = bank.sample(rng, "metal" if rng.random() < 0.6 else "ceramic"), bank.sample(rng, "light")
    if kind == "ceiling":
        p.cyl([0, 0, 0.03], U(rng, 0.12, 0.25), 0.03, shade)
        return p
    hgt = U(rng, 1.3, 1.7) if kind == "floor" else U(rng, 0.32, 0.55)
    sr, sh = (U(rng, 0.17, 0.25), U(rng, 0.2, 0.3)) if kind == "floor" else (U(rng, 0.09, 0.14), U(rng, 0.12, 0.18))
    if kind == "table" and rng.random() < 0.5:
        p.ell([0, 0, 0.4 * sr], [0.45 * sr, 0.45 * sr, 0.4 * sr], base)
    else:
        p.cyl([0, 0, 0.015], 0.6 * sr, 0.015, base)
    p.cyl([0, 0, (hgt - sh) / 2], 0.012, (hgt - sh) / 2, base)
    p.cyl([0, 0, hgt - sh / 2], sr, sh / 2, shade, ratio=U(rng, 0.55, 0.85))
    return p


def plant(rng, bank, kind="floor", **_) -> Parts:
    p = Parts()
    pot, leaf = bank.sample(rng, "ceramic"), bank.sample(rng, "leaf")
    s = 1.0 if kind == "floor" else 0.45
    r, ph = s * U(rng, 0.1, 0.2), s * U(rng, 0.2, 0.4)
    p.cyl([0, 0, ph / 2], r, ph / 2, pot, ratio=U(rng, 1.1, 1.35))
    n = int(rng.integers(1, 5))
    top = ph
    if rng.random() < 0.5 and kind == "floor":  # tall plant on a stem
        stem = U(rng, 0.3, 0.8)
        p.cyl([0, 0, ph + stem / 2], 0.015, stem / 2, bank.sample(rng, "wood"))
        top = ph + stem
    for _ in range(n):
        e = np.array([U(rng, 0.6, 1.3), U(rng, 0.6, 1.3), U(rng, 0.6, 1.4)]) * r * U(rng, 1.0, 1.6)
        off = rng.normal(0, 0.35, 2) * r
        p.ell([off[0], off[1], top + e[2] * 0.85], e, leaf)
    return p


def tv(rng, bank, kind="tv", **_) -> Parts:
    p = Parts()
    body, screen = bank.sample(rng, "plastic"), bank.sample(rng, "screen")
    w = U(rng, 0.8, 1.4) if kind == "tv" else U(rng, 0.45, 0.7)
    h, t = w * U(rng, 0.56, 0.62), U(rng, 0.03, 0.06)
    lift = U(rng, 0.06, 0.12) if kind == "tv" else U(rng, 0.1, 0.2)
    p.box([0, 0, 0.01], [min(0.3, w / 3), 0.1, 0.01], body)
    p.box([0, 0.02, lift / 2 + 0.01], [0.03, 0.015, lift / 2], body)
    p.box([0, 0, lift + h / 2], [w / 2, t / 2, h / 2], body)
    p.box([0, -t / 2 - 0.002, lift + h / 2], [w / 2 - 0.015, 0.002, h / 2 - 0.015], screen)
    return p


def rug(rng, bank, **_) -> Parts:
    p = Parts()
    w, d = U(rng, 1.2, 3.0), U(rng, 0.8, 2.0)
    p.box([0, 0, 0.005], [w / 2, d / 2, 0.005], bank.sample(rng, "carpet"))
    return p


def clutter(rng, bank, max_w=0.5, max_d=0.5, max_h=0.5, **_) -> Parts:
    """Class "box": cardboard boxes, rows of books, vases and bowls (sized to fit the given space)."""
    p = Parts()
    style = rng.choice(["boxes", "books", "vase", "bowl"])
    if style == "books" and max_w > 0.1 and max_h > 0.15:
        n, x = int(rng.integers(3, 8)), 0.0
        for _ in range(n):
            bw, bh, bd = U(rng, 0.02, 0.05), U(rng, 0.15, min(0.3, max_h)), U(rng, 0.12, min(0.22, max_d))
            if x + bw > max_w:
                break
            p.box([x + bw / 2, 0, bh / 2], [bw / 2, bd / 2, bh / 2], bank.sample(rng, "plastic"))
            x += bw + 0.002
        return p
    if style == "vase" and max_h > 0.12:
        r, h = U(rng, 0.04, 0.1), U(rng, 0.1, min(0.4, max_h))
        p.cyl([0, 0, h / 2], min(r, max_w / 2.4), h / 2, bank.sample(rng, "ceramic"), ratio=U(rng, 0.5, 1.2))
        return p
    if style == "bowl":
        r = min(U(rng, 0.08, 0.16), max_w / 2, max_d / 2)
        p.ell([0, 0, min(0.06, max_h / 2)], [r, r, min(0.06, max_h / 2)], bank.sample(rng, "ceramic"))
        return p
    m = bank.sample(rng, "cardboard")
    z = 0.0
    for _ in range(int(rng.integers(1, 3))):
        bw, bd, bh = (min(U(rng, 0.15, 0.5), max_w), min(U(rng, 0.15, 0.45), max_d),
                      min(U(rng, 0.1, 0.4), max_h - z))
        if bh < 0.05:
            break
        p.box([0, 0, z + bh / 2], [bw / 2, bd / 2, bh / 2], m)
        z += bh
        max_w, max_d = bw, bd
    return p


def door(rng, bank, height=2.05, **_) -> Parts:
    p = Parts()
    frame, panel, handle = bank.sample(rng, "wood"), bank.sample(rng, "wood" if rng.random() < 0.5 else "paint"), \
        bank.sample(rng, "metal")
    w, ft, fd = U(rng, 0.8, 1.0), U(rng, 0.05, 0.08), U(rng, 0.03, 0.05)
    for sx in (-1, 1):
        p.box([sx * (w / 2 + ft / 2), 0, height / 2], [ft / 2, fd / 2, height / 2], frame)
    p.box([0, 0, height + ft / 2], [w / 2 + ft, fd / 2, ft / 2], frame)
    p.box([0, fd / 2 - 0.015, height / 2], [w / 2, 0.015, height / 2], panel)
    hx = (w / 2 - 0.08) * rng.choice([-1, 1])
    if rng.random() < 0.5:
        p.ell([hx, fd / 2 - 0.05, 1.0], [0.03, 0.02, 0.03], handle)
    else:
        p.box([hx, fd / 2 - 0.05, 1.0], [0.06, 0.015, 0.012], handle)
    return p


def window(rng, bank, width=1.2, height=1.2, **_) -> Parts:
    p = Parts()
    frame, glass = bank.sample(rng, "plastic" if rng.random() < 0.5 else "wood"), bank.sample(rng, "glass")
    ft, fd = U(rng, 0.04, 0.07), U(rng, 0.03, 0.05)
    for sx in (-1, 1):
        p.box([sx * (width / 2 - ft / 2), 0, height / 2], [ft / 2, fd / 2, height / 2], frame)
    for sz in (0, 1):
        p.box([0, 0, ft / 2 + sz * (height - ft)], [width / 2 - ft, fd / 2, ft / 2], frame)
    p.box([0, fd / 2 - 0.005, height / 2], [width / 2 - ft, 0.005, height / 2 - ft], glass)
    if width > 1.0 and rng.random() < 0.6:  # mullion
        p.box([0, -0.005, height / 2], [ft / 3, fd / 2 - 0.005, height / 2 - ft], frame)
    p.box([0, -0.03, -0.02], [width / 2 + 0.04, fd / 2 + 0.03, 0.02], frame)  # sill
    return p


BUILDERS = {"chair": chair, "table": table, "desk": desk, "sofa": sofa, "bed": bed, "cabinet": cabinet,
            "shelf": shelf, "lamp": lamp, "plant": plant, "tv": tv, "rug": rug, "box": clutter, "door": door,
            "window": window}


def build(cls: str, rng: np.random.Generator, bank: MaterialBank, **kwargs) -> Parts:
    return BUILDERS[cls](rng, bank, **kwargs).normalized()
