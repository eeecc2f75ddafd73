"""Numba kernels of `numba_backend` (imported only where Numba is installed). Module-level functions, so that
Numba's on-disk cache serves later processes (kernels nested in a function are compiled again in every process)."""

import numba
import numpy as np

from .sh import C0, C1, C2, C3
from .torch_backend import ALPHA_MIN, MAX_ALPHA, T_MIN

TILE = 16


@numba.njit(cache=True)
def bin_tiles(x0, x1, y0, y1, tiles_x, n_tiles):  # boxes [M] in depth order -> CSR lists per tile
    starts = np.zeros(n_tiles + 1, np.int64)
    for i in range(x0.shape[0]):
        for ty in range(y0[i] // TILE, (y1[i] - 1) // TILE + 1):
            for tx in range(x0[i] // TILE, (x1[i] - 1) // TILE + 1):
                starts[ty * tiles_x + tx + 1] += 1
    starts = np.cumsum(starts)
    fill = starts[:-1].copy()
    ids = np.empty(starts[-1], np.int64)
    for i in range(x0.shape[0]):  # ascending i: every tile's list stays in depth order
        for ty in range(y0[i] // TILE, (y1[i] - 1) // TILE + 1):
            for tx in range(x0[i] // TILE, (x1[i] - 1) // TILE + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = i
                fill[t] += 1
    return starts, ids


@numba.njit(inline="always")
def row_span(params, g, py, xa, xb):
    """The pixels [lo, hi) of row py within [xa, xb) where Gaussian g may reach alpha >= 1/255, and its alpha at lo
    with the factors that step alpha along the row. σ(dx) = ½a·dx² + b·dy·dx + ½c·dy² is quadratic in dx, so
    alpha(px + 1) = alpha(px)·f and f(px + 1) = f(px)·exp(-a): two products per pixel instead of an exp. The span is
    the ellipse σ <= ln(255·o) widened by a pixel on each side; the caller still tests alpha >= 1/255 per pixel."""
    mx, my, a, b, c, o = params[g, 0], params[g, 1], params[g, 2], params[g, 3], params[g, 4], params[g, 5]
    dy = py + 0.5 - my
    disc = (b * dy) ** 2 - a * (c * dy * dy - 2.0 * params[g, 6])  # params[g, 6] = ln(255·o)
    if disc < 0.0:
        return 0, 0, 0.0, 0.0
    half, centre = np.sqrt(disc) / a, mx - 0.5 - b * dy / a  # the ellipse's pixels: centre ± half
    lo, hi = max(xa, int(np.floor(centre - half))), min(xb, int(np.ceil(centre + half)) + 1)
    dx = lo + 0.5 - mx
    alpha = o * np.exp(-(0.5 * a * dx * dx + b * dx * dy + 0.5 * c * dy * dy))
    return lo, hi, alpha, np.exp(-(a * (dx + 0.5) + b * dy))


@numba.njit(inline="always")
def blend(trans, p, alpha):
    """Front-to-back step of tile pixel p through a Gaussian of this alpha: its weight alpha x T (0 if alpha is under
    the cut-off or the pixel has stopped), updating the tile's transmittances `trans`; -1 where the pixel stops
    (its final transmittance is then kept negated: -trans[p])."""
    T = trans[p]
    if T <= 0.0 or alpha < ALPHA_MIN:
        return 0.0
    a = min(alpha, MAX_ALPHA)
    if T * (1.0 - a) <= T_MIN:
        trans[p] = -T
        return -1.0
    trans[p] = T * (1.0 - a)
    return a * T


# Both kernels walk a tile Gaussian-major (its list is in depth order, so every pixel still composites front to
# back), visiting only the pixels of each Gaussian's ellipse (`row_span`); a pixel stops before the Gaussian that
# would bring its transmittance to 1e-4 or below (as gsplat), and a tile stops when all its pixels have. Tile
# pixels are numbered row-major, p = (py - tile_y0) * TILE + px - tile_x0. The n_threads threads take the tiles in
# turns, in the `order` of their list lengths (longest first): a static split of the image into bands left one
# thread with ~60 % of the work on a trained model's scene. Plain element indexing, no row views or slice
# assignments: those doubled the first-use compile time.
# params [M, 8] per Gaussian in depth order: centre, conic (a, b, c), opacity, ln(255·opacity), exp(-a).
@numba.njit(parallel=True, cache=True)
def composite(order, n_threads, starts, ids, params, x0, x1, y0, y1, values, sources, width, height, tiles_x, out,
              alpha, stops, final_T):
    # values [N, D] of all Gaussians; sources [M]: the values row of each Gaussian in depth order. Also writes, per
    # pixel, the position in its tile's list where it stopped (stops, int64; the list's end if it did not) and its
    # final transmittance (final_T): what `composite_grad` needs to walk the lists back.
    n_values = values.shape[1]
    for thread in numba.prange(n_threads):
        for t in order[thread::n_threads]:
            tile_x0, tile_y0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            trans = np.ones(TILE * TILE)  # negated once the pixel has stopped
            stop = np.full(TILE * TILE, starts[t + 1])
            acc = np.zeros((TILE * TILE, n_values + 1))  # the values, then alpha
            open_pixels = min(TILE, height - tile_y0) * min(TILE, width - tile_x0)
            for k in range(starts[t], starts[t + 1]):
                g = ids[k]
                source, step = sources[g], params[g, 7]
                xa, xb = max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    lo, hi, a, f = row_span(params, g, py, xa, xb)
                    row = (py - tile_y0) * TILE - tile_x0
                    for px in range(lo, hi):
                        w = blend(trans, row + px, a)
                        a, f = a * f, f * step
                        if w < 0.0:
                            open_pixels -= 1
                            stop[row + px] = k
                        elif w > 0.0:
                            for d in range(n_values):
                                acc[row + px, d] += w * values[source, d]
                            acc[row + px, n_values] += w
                if open_pixels == 0:
                    break
            for py in range(tile_y0, min(height, tile_y0 + TILE)):
                for px in range(tile_x0, min(width, tile_x0 + TILE)):
                    p = (py - tile_y0) * TILE + px - tile_x0
                    for d in range(n_values):
                        out[py * width + px, d] = acc[p, d]
                    alpha[py * width + px] = acc[p, n_values]
                    stops[py * width + px], final_T[py * width + px] = stop[p], abs(trans[p])


@numba.njit(parallel=True, cache=True)
def composite_grad(order, n_threads, starts, ids, params, x0, x1, y0, y1, values, sources, width, height, tiles_x,
                   stops, final_T, grad_out, grad_alpha, grad_params, grad_values):
    """The backward of `composite`: each tile's list walked back to front over the same pixels, rebuilding each
    pixel's transmittance from its final one (T_before = T_after / (1 - alpha), as gsplat). For out = Σ vᵢ wᵢ,
    alpha = 1 - T_final, wᵢ = aᵢ Tᵢ: d out/d aᵢ = vᵢ Tᵢ - (Σ_{j behind i} vⱼ wⱼ) / (1 - aᵢ), d alpha/d aᵢ =
    T_final / (1 - aᵢ), and aᵢ = o·exp(-σ) unless clamped at MAX_ALPHA. Accumulates into this thread's rows:
    grad_params [threads, M, 6] (centre x, y, conic a, b, c, opacity per Gaussian in depth order) and grad_values
    [threads, N, D]."""
    n_values = values.shape[1]
    for thread in numba.prange(n_threads):
        for t in order[thread::n_threads]:
            tile_x0, tile_y0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            trans = np.zeros(TILE * TILE)  # the transmittance behind the Gaussian being visited
            last = np.zeros(TILE * TILE)  # the final transmittance
            stop = np.zeros(TILE * TILE, np.int64)
            behind = np.zeros((TILE * TILE, n_values))  # Σ vⱼ wⱼ of the Gaussians visited so far (behind)
            g_out = np.zeros((TILE * TILE, n_values))
            g_alpha = np.zeros(TILE * TILE)
            for py in range(tile_y0, min(height, tile_y0 + TILE)):
                for px in range(tile_x0, min(width, tile_x0 + TILE)):
                    p, q = (py - tile_y0) * TILE + px - tile_x0, py * width + px
                    trans[p], last[p], stop[p], g_alpha[p] = final_T[q], final_T[q], stops[q], grad_alpha[q]
                    for d in range(n_values):
                        g_out[p, d] = grad_out[q, d]
            for k in range(starts[t + 1] - 1, starts[t] - 1, -1):
                g = ids[k]
                source, step = sources[g], params[g, 7]
                mx, my, ca, cb, cc, o = params[g, 0], params[g, 1], params[g, 2], params[g, 3], params[g, 4], \
                    params[g, 5]
                xa, xb = max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    lo, hi, a, f = row_span(params, g, py, xa, xb)
                    row = (py - tile_y0) * TILE - tile_x0
                    for px in range(lo, hi):
                        p, raw = row + px, a
                        a, f = a * f, f * step
                        if k >= stop[p] or raw < ALPHA_MIN:  # not composited (as in `blend`)
                            continue
                        al = min(raw, MAX_ALPHA)
                        T = trans[p] / (1.0 - al)
                        w = al * T
                        d_a = g_alpha[p] * last[p] / (1.0 - al)
                        for d in range(n_values):
                            v = values[source, d]
                            d_a += g_out[p, d] * (v * T - behind[p, d] / (1.0 - al))
                            grad_values[thread, source, d] += g_out[p, d] * w
                            behind[p, d] += v * w
                        trans[p] = T
                        if raw < MAX_ALPHA:  # clamped alphas have no gradient
                            d_sigma = -d_a * al
                            dx, dy = px + 0.5 - mx, py + 0.5 - my
                            grad_params[thread, g, 0] -= d_sigma * (ca * dx + cb * dy)
                            grad_params[thread, g, 1] -= d_sigma * (cb * dx + cc * dy)
                            grad_params[thread, g, 2] += d_sigma * 0.5 * dx * dx
                            grad_params[thread, g, 3] += d_sigma * dx * dy
                            grad_params[thread, g, 4] += d_sigma * 0.5 * dy * dy
                            grad_params[thread, g, 5] += d_a * al / o


@numba.njit(parallel=True, cache=True)
def weights(order, n_threads, starts, ids, params, x0, x1, y0, y1, width, height, tiles_x, min_weight, crow, cols, vals):
    """With empty cols: counts each pixel's weights above min_weight into crow[p + 1]. Else writes them (the
    Gaussian's position k in depth order, the weight) from crow[p] on: CSR rows, each in depth order."""
    fill = cols.shape[0] > 0
    for thread in numba.prange(n_threads):
        for t in order[thread::n_threads]:
            tile_x0, tile_y0 = (t % tiles_x) * TILE, (t // tiles_x) * TILE
            trans = np.ones(TILE * TILE)
            cursor = np.zeros(TILE * TILE, np.int64)  # the image row-major index for counting, the CSR slot for filling
            for py in range(tile_y0, min(height, tile_y0 + TILE)):
                for px in range(tile_x0, min(width, tile_x0 + TILE)):
                    cursor[(py - tile_y0) * TILE + px - tile_x0] = crow[py * width + px] if fill else py * width + px
            open_pixels = min(TILE, height - tile_y0) * min(TILE, width - tile_x0)
            for k in range(starts[t], starts[t + 1]):
                g = ids[k]
                step = params[g, 7]
                xa, xb = max(x0[g], tile_x0), min(x1[g], tile_x0 + TILE)
                for py in range(max(y0[g], tile_y0), min(y1[g], tile_y0 + TILE)):
                    lo, hi, a, f = row_span(params, g, py, xa, xb)
                    row = (py - tile_y0) * TILE - tile_x0
                    for px in range(lo, hi):
                        w = blend(trans, row + px, a)
                        a, f = a * f, f * step
                        if w < 0.0:
                            open_pixels -= 1
                        elif w > min_weight and fill:
                            c = cursor[row + px]
                            cols[c], vals[c] = g, w
                            cursor[row + px] = c + 1
                        elif w > min_weight:
                            crow[cursor[row + px] + 1] += 1
                if open_pixels == 0:
                    break


@numba.njit(cache=True)
def transpose(crow, cols, n_cols):  # CSR structure -> the transpose's row pointers and, per entry, its slot
    crow_t = np.zeros(n_cols + 1, np.int64)
    for c in cols:
        crow_t[c + 1] += 1
    crow_t = np.cumsum(crow_t)
    fill = crow_t[:-1].copy()
    slots = np.empty(cols.shape[0], np.int64)
    for r in range(crow.shape[0] - 1):  # rows in order: each row of the transpose stays sorted
        for k in range(crow[r], crow[r + 1]):
            slots[k] = fill[cols[k]]
            fill[cols[k]] += 1
    return crow_t, slots


@numba.njit(parallel=True, cache=True)
def csr_matmul(crow, cols, vals, x, out):  # out [R, D] = CSR [R, C] @ x [C, D], rows in parallel
    for r in numba.prange(crow.shape[0] - 1):
        row = out[r]
        row[:] = 0
        for k in range(crow[r], crow[r + 1]):
            v, xr = vals[k], x[cols[k]]
            for j in range(x.shape[1]):
                row[j] += v * xr[j]


@numba.njit(cache=True)
def project(means, quats, scales, opacities, viewmat, K, width, height, near, far, eps2d, means2d, depths, conics,
            radii):
    """`torch_backend.project_gaussians` for one camera (viewmat [4, 4], K [3, 3]), per Gaussian in float64; writes
    means2d [N, 2], depths [N], conics [N, 3] and radii [N, 2] (0 = culled)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x_hi, x_lo = (width - cx) / fx + 0.15 * width / fx, -(cx / fx + 0.15 * width / fx)  # 1.3x the field of view
    y_hi, y_lo = (height - cy) / fy + 0.15 * height / fy, -(cy / fy + 0.15 * height / fy)
    for i in range(means.shape[0]):
        px, py, pz = means[i, 0], means[i, 1], means[i, 2]
        x = viewmat[0, 0] * px + viewmat[0, 1] * py + viewmat[0, 2] * pz + viewmat[0, 3]
        y = viewmat[1, 0] * px + viewmat[1, 1] * py + viewmat[1, 2] * pz + viewmat[1, 3]
        z = viewmat[2, 0] * px + viewmat[2, 1] * py + viewmat[2, 2] * pz + viewmat[2, 3]
        zs = z if abs(z) >= 1e-6 else 1e-6
        tx, ty = zs * min(x_hi, max(x_lo, x / zs)), zs * min(y_hi, max(y_lo, y / zs))
        # rows of J·W: (fx/z)·W₀ - (fx·tx/z²)·W₂ and (fy/z)·W₁ - (fy·ty/z²)·W₂
        ja, jb, jc, jd = fx / zs, fx * tx / (zs * zs), fy / zs, fy * ty / (zs * zs)
        u0, u1, u2 = ja * viewmat[0, 0] - jb * viewmat[2, 0], ja * viewmat[0, 1] - jb * viewmat[2, 1], \
            ja * viewmat[0, 2] - jb * viewmat[2, 2]
        v0, v1, v2 = jc * viewmat[1, 0] - jd * viewmat[2, 0], jc * viewmat[1, 1] - jd * viewmat[2, 1], \
            jc * viewmat[1, 2] - jd * viewmat[2, 2]
        qn = np.sqrt(quats[i, 0] ** 2 + quats[i, 1] ** 2 + quats[i, 2] ** 2 + quats[i, 3] ** 2)
        w, qx, qy, qz = quats[i, 0] / qn, quats[i, 1] / qn, quats[i, 2] / qn, quats[i, 3] / qn
        # the rotation R, row by row; T = J W R S, column j = (J W)·R[:, j]·s_j
        r00, r01, r02 = 1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)
        r10, r11, r12 = 2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)
        r20, r21, r22 = 2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)
        s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
        t00, t01, t02 = (u0 * r00 + u1 * r10 + u2 * r20) * s0, (u0 * r01 + u1 * r11 + u2 * r21) * s1, \
            (u0 * r02 + u1 * r12 + u2 * r22) * s2
        t10, t11, t12 = (v0 * r00 + v1 * r10 + v2 * r20) * s0, (v0 * r01 + v1 * r11 + v2 * r21) * s1, \
            (v0 * r02 + v1 * r12 + v2 * r22) * s2
        a = t00 * t00 + t01 * t01 + t02 * t02 + eps2d  # Σ2d = T Tᵀ + eps2d·I
        b = t00 * t10 + t01 * t11 + t02 * t12
        c = t10 * t10 + t11 * t11 + t12 * t12 + eps2d
        det = a * c - b * b
        inv = 1.0 / det if det > 0 else 1.0
        conics[i, 0], conics[i, 1], conics[i, 2] = c * inv, -b * inv, a * inv
        mx, my = fx * x / zs + cx, fy * y / zs + cy
        means2d[i, 0], means2d[i, 1], depths[i] = mx, my, z
        op = opacities[i]
        extend = min(np.sqrt(2.0 * np.log(max(op, ALPHA_MIN) / ALPHA_MIN)), 3.33)
        rx, ry = np.ceil(extend * np.sqrt(max(a, 0.0))), np.ceil(extend * np.sqrt(max(c, 0.0)))
        keep = near <= z <= far and det > 0 and op >= ALPHA_MIN and (rx > 0 or ry > 0) and mx + rx > 0 \
            and mx - rx < width and my + ry > 0 and my - ry < height
        radii[i, 0], radii[i, 1] = (rx, ry) if keep else (0, 0)


@numba.njit(cache=True)
def sh_colors(sh, dirs, out):  # `sh.eval_sh`: sh [N, K, 3] (K = 1, 4, 9, 16), dirs [N, 3] -> out [N, 3]
    n_coeffs = sh.shape[1]
    for i in range(sh.shape[0]):
        norm = max(np.sqrt(dirs[i, 0] ** 2 + dirs[i, 1] ** 2 + dirs[i, 2] ** 2), 1e-12)
        x, y, z = dirs[i, 0] / norm, dirs[i, 1] / norm, dirs[i, 2] / norm
        xx, yy, zz = x * x, y * y, z * z
        for ch in range(3):  # written out: a loop over a tuple of the basis values compiles to a slow switch
            v = C0 * sh[i, 0, ch]
            if n_coeffs > 1:
                v += -C1 * y * sh[i, 1, ch] + C1 * z * sh[i, 2, ch] - C1 * x * sh[i, 3, ch]
            if n_coeffs > 4:
                v += C2[0] * x * y * sh[i, 4, ch] + C2[1] * y * z * sh[i, 5, ch] \
                    + C2[2] * (2 * zz - xx - yy) * sh[i, 6, ch] + C2[3] * x * z * sh[i, 7, ch] \
                    + C2[4] * (xx - yy) * sh[i, 8, ch]
            if n_coeffs > 9:
                v += C3[0] * y * (3 * xx - yy) * sh[i, 9, ch] + C3[1] * x * y * z * sh[i, 10, ch] \
                    + C3[2] * y * (4 * zz - xx - yy) * sh[i, 11, ch] \
                    + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[i, 12, ch] \
                    + C3[4] * x * (4 * zz - xx - yy) * sh[i, 13, ch] + C3[5] * z * (xx - yy) * sh[i, 14, ch] \
                    + C3[6] * x * (xx - 3 * yy) * sh[i, 15, ch]
            out[i, ch] = v
