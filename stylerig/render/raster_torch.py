"""Pure-PyTorch rasterizer with nvdiffrast's output contract (CPU and CUDA).

Method (``docs/rendering.md`` has the long form):

1. *Setup* (no autograd): clip space -> screen space in pixel units (pixel centres at ``i + 0.5``);
   per triangle, the box of candidate pixel centres and three affine "planes" over that box -- the
   barycentrics ``b0``, ``b1`` and the depth ``z/w`` -- expressed relative to the box's first pixel
   centre, so each candidate costs two multiply-adds per value and float32 stays exact enough.
   Triangles with a vertex at ``w <= 0``, with zero screen area or with an empty box are culled.
   No back-face culling (as nvdiffrast).
2. *Candidates*, grouped by box width and height (:data:`_GRID`: 1-4 pixels exactly, 6 and 8
   padded; one stable sort of uint8 class codes makes each class a contiguous slice): each class
   evaluates a dense ``[gh*gw, triangles]`` grid (no per-candidate gathers); larger boxes, and
   triangles that reach a depth plane, enumerate their pixels through a prefix sum in chunks of at most
   ``_CHUNK`` candidates, so a screen-filling triangle costs time in proportion to its area but
   bounded memory.
3. *Coverage and depth*: a pixel centre is covered when ``b0, b1, b2 >= 0`` (on an edge counts as
   inside) and ``-1 <= z/w <= 1``; the dense grids skip the depth test, which cannot fail inside a
   triangle whose vertices are all well inside the range (:data:`_SAFE_DEPTH`).
4. *Z-buffer*: one ``scatter_reduce(amin)`` over packed int64 keys
   ``(float_bits((z/w + 1) / 2) << 32) | triangle_index``. Non-negative IEEE floats order like their
   bit patterns, so the minimum key is the nearest fragment; exact depth ties go to the lower triangle
   index. Deterministic, no sorting of fragments, no atomics.
5. *Differentiable stage*: for covered pixels only, the winning triangle's clip-space vertices are
   gathered *with* autograd and the perspective-correct barycentrics recomputed at the pixel centre, so
   gradients reach ``pos`` through (u, v) as in nvdiffrast's rasterize backward. ``z/w`` and the id
   carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Fragments", "rasterize_fragments", "fragments_to_rast", "rast_to_fragments"]

#: Upper bound on candidate (triangle, pixel) pairs held at once by the large-box path.
_CHUNK = 1 << 21
_INT64_MAX = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class Fragments:
    """The covered pixels of a rasterized batch, in sparse form.

    Attributes:
        pixel: int64 [N] flat index ``b * H * W + y * W + x`` of each covered pixel, ascending.
        tri_id: int64 [N] 0-based index of the visible triangle.
        u, v: float [N] perspective-correct barycentrics of its first and second vertex (autograd to pos).
        zw: float [N] ``z/w`` (no gradient).
        shape: (B, H, W).
    """

    pixel: torch.Tensor
    tri_id: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    zw: torch.Tensor
    shape: tuple[int, int, int]

    @property
    def batch(self) -> torch.Tensor:
        """int64 [N] batch index of each fragment."""
        return self.pixel // (self.shape[1] * self.shape[2])


def _edge(ax, ay, bx, by, px, py):
    """Twice the signed area of (a, b, p)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


#: Box extents (pixels, per axis) of the dense candidate grids; a box is evaluated on the smallest grid that
#: holds it (exact up to 4, padded above). Boxes wider or taller than the last take the prefix-sum path.
_GRID = (1, 2, 3, 4, 6, 8)
#: Grid index of a box extent 0..9 (clamped): index 0 for extent 1, ..., len(_GRID) past the last grid.
_GRID_OF_EXTENT = (0, 0, 1, 2, 3, 4, 4, 5, 5, 6)
#: Triangles whose vertices all have |z/w| below this skip the per-pixel depth-range test: z/w is affine
#: in screen space, so inside the triangle it stays within its vertices' range (the margin absorbs the
#: rounding of the plane evaluation). The others take the prefix-sum path, which tests every candidate.
_SAFE_DEPTH = 0.999


def _grid_offsets(gw: int, gh: int, W: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Offsets of a ``gw`` x ``gh`` grid, row-major, as [gh*gw, 1] columns: float x, float y, int64 y*W+x."""
    oy, ox = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    ox, oy = ox.reshape(-1, 1), oy.reshape(-1, 1)
    return ox.float(), oy.float(), oy * W + ox


def _plane(v, dx, dy, ox, oy):
    """``v + dx * ox + dy * oy`` over a [G, T] grid of offsets (``None`` = all zero), as [G, T]."""
    if ox is not None:
        v = torch.addcmul(v, dx, ox)
    if oy is not None:
        v = torch.addcmul(v, dy, oy)
    return v if v.dim() == 2 else v[None]


def _scatter(keys, inside, d01, tri_index, pix):
    """Fold candidates into the packed z-buffer ``keys`` (int64 [B*H*W + 1]).

    ``d01`` is the depth mapped to [0, 1] (only read where ``inside``). Misses are sent to the trash slot
    at the end, whose value is never read, so neither compaction nor a masked key is needed.
    """
    key = d01.view(torch.int32).to(torch.int64)
    key <<= 32
    key |= tri_index
    trash = keys.shape[0] - 1
    keys.scatter_reduce_(0, torch.where(inside, pix, trash).reshape(-1), key.reshape(-1), reduce="amin")


def _zbuffer(pos: torch.Tensor, tri64: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Packed z-buffer keys int64 [B*H*W] (``_INT64_MAX`` where empty). No autograd."""
    B = pos.shape[0]
    F = tri64.shape[0]
    hw = H * W
    device = pos.device
    keys = torch.full((B * hw + 1,), _INT64_MAX, dtype=torch.int64, device=device)  # + a trash slot
    # Screen space laid out [4, V, B] and gathered corner-major, so that every per-triangle array below is a
    # contiguous [F, B] block (batch innermost) and the elementwise setup vectorises; on CPU this layout
    # matters several-fold.
    p = pos.detach().float().permute(2, 1, 0)  # [4, V, B] view
    inv_w = 1.0 / p[3]
    scr = torch.stack(
        [(p[0] * inv_w + 1.0) * (0.5 * W), (p[1] * inv_w + 1.0) * (0.5 * H), p[2] * inv_w, p[3]]
    )
    corners = tri64.T.reshape(-1)
    # One dim-0 gather per component ([V, B] rows): several times faster than one gather along dim 1.
    X, Y, Z, Wc = (scr[c].index_select(0, corners).view(3, F, B) for c in range(4))  # [3, F, B] each
    # Triangle (f, b) is flattened as f * B + b below.
    xmin, xmax = (
        torch.minimum(torch.minimum(X[0], X[1]), X[2]),
        torch.maximum(torch.maximum(X[0], X[1]), X[2]),
    )
    ymin, ymax = (
        torch.minimum(torch.minimum(Y[0], Y[1]), Y[2]),
        torch.maximum(torch.maximum(Y[0], Y[1]), Y[2]),
    )
    x0 = torch.ceil(xmin - 0.5).clamp_(min=0)
    y0 = torch.ceil(ymin - 0.5).clamp_(min=0)
    bw = torch.floor(xmax - 0.5).clamp_(max=W - 1) - x0 + 1
    bh = torch.floor(ymax - 0.5).clamp_(max=H - 1) - y0 + 1
    X0, X1, X2 = X.unbind(0)
    Y0, Y1, Y2 = Y.unbind(0)
    Z0, Z1, Z2 = Z.unbind(0)
    area = _edge(X0, Y0, X1, Y1, X2, Y2)
    ok = (Wc[0] > 0) & (Wc[1] > 0) & (Wc[2] > 0) & (area != 0) & (bw > 0) & (bh > 0) & torch.isfinite(area)

    # Affine planes over the box, relative to its first pixel centre (x0 + 0.5, y0 + 0.5): value, d/dx, d/dy
    # of b0, b1 and of the depth mapped to [0, 1], (z/w + 1) / 2 (the z-buffer's key).
    inv = 1.0 / area
    cx, cy = x0 + 0.5, y0 + 0.5
    e0 = _edge(X1, Y1, X2, Y2, cx, cy) * inv
    e1 = _edge(X2, Y2, X0, Y0, cx, cy) * inv
    e0x, e0y = (Y1 - Y2) * inv, (X2 - X1) * inv
    e1x, e1y = (Y2 - Y0) * inv, (X0 - X2) * inv
    dz0, dz1 = (Z0 - Z2) * 0.5, (Z1 - Z2) * 0.5
    planes = (e0, e0x, e0y, e1, e1x, e1y, (Z2 + 1.0) * 0.5 + e0 * dz0 + e1 * dz1, e0x * dz0 + e1x * dz1)
    planes += (e0y * dz0 + e1y * dz1,)

    # Sort the kept triangles by grid class (box height class, then width class), so that each class is a
    # contiguous slice of the sorted planes: one gather per plane instead of one per plane and class.
    # Class codes are uint8 (its stable sort is several times faster than int64's).
    n = len(_GRID)
    lut = torch.tensor(_GRID_OF_EXTENT, dtype=torch.uint8, device=device)
    ext = len(_GRID_OF_EXTENT) - 1

    def grid_index(extent):
        return lut.index_select(0, torch.where(ok, extent, 1.0).clamp_(max=ext).long().view(-1))

    near = (Z.abs() < _SAFE_DEPTH).all(0).view(-1)
    large = n * (n + 1) + n  # any class with a grid index of n goes here
    culled = large + 1
    cls = grid_index(bh) * (n + 1) + grid_index(bw)
    cls = torch.where(near, cls, large)
    cls = torch.where(ok.view(-1), cls, culled)
    order = torch.argsort(cls, stable=True)
    counts = torch.bincount(cls, minlength=culled + 1).tolist()
    order = order[: len(order) - counts[culled]]
    pl = [q.reshape(-1).index_select(0, order) for q in planes]  # 9 x [K], sorted
    tri_index = order // B
    base = (order % B) * hw + y0.view(-1).index_select(0, order).long() * W
    base += x0.view(-1).index_select(0, order).long()

    def covered(b0, b1, d01=None):
        inside = b0 >= 0
        inside &= b1 >= 0
        inside &= b0 + b1 <= 1
        if d01 is not None:
            inside &= d01 >= 0
            inside &= d01 <= 1
        return inside

    start, big = 0, []
    for code, count in enumerate(counts[:culled]):
        if not count:
            continue
        rows = slice(start, start + count)
        start += count
        ih, iw = divmod(code, n + 1)
        if ih == n or iw == n:
            big.append(rows)
            continue
        # Dense [gh*gw, T] candidate grid (no per-candidate gathers); terms with a zero offset are skipped.
        gw, gh = _GRID[iw], _GRID[ih]
        fx, fy, off = _grid_offsets(gw, gh, W, device)
        b0, b1, d01 = (
            _plane(q[0][rows], q[1][rows], q[2][rows], fx if gw > 1 else None, fy if gh > 1 else None)
            for q in (pl[0:3], pl[3:6], pl[6:9])
        )
        inside = covered(b0, b1)
        if gw > 4 or gh > 4:  # padded grid: drop the offsets past the box
            box = order[rows]
            inside &= fx < bw.view(-1).index_select(0, box)
            inside &= fy < bh.view(-1).index_select(0, box)
        _scatter(keys, inside, d01, tri_index[rows], base[rows] + off)

    # Large boxes: prefix-sum enumeration in bounded chunks.
    if big:
        idx = torch.cat([torch.arange(r.start, r.stop, device=device) for r in big])
        box = order[idx]
        tw, th = bw.view(-1)[box].long(), bh.view(-1)[box].long()
        m = tw * th
        end = torch.cumsum(m, 0)
        first = end - m
        total = int(end[-1])
        for k0 in range(0, total, _CHUNK):
            k = torch.arange(k0, min(k0 + _CHUNK, total), device=device)
            seg = torch.searchsorted(end, k, right=True)
            local = k - first[seg]
            wid = tw[seg]
            ox, oy = local % wid, local // wid
            j = idx[seg]
            fx, fy = ox.float(), oy.float()
            b0, b1, d01 = (pl[i][j] + pl[i + 1][j] * fx + pl[i + 2][j] * fy for i in (0, 3, 6))
            _scatter(keys, covered(b0, b1, d01), d01, tri_index[j], base[j] + oy * W + ox)
    return keys[:-1]


def rasterize_fragments(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> Fragments:
    """Rasterize to sparse :class:`Fragments` (the torch backend's native output).

    Args:
        pos: float32/float64 [B, V, 4] clip-space positions.
        tri: int [F, 3] 0-based vertex indices.
        resolution: (H, W).
    """
    B = pos.shape[0]
    H, W = int(resolution[0]), int(resolution[1])
    tri64 = tri.to(device=pos.device, dtype=torch.int64)
    with torch.no_grad():
        keys = _zbuffer(pos, tri64, H, W)
        pixel = (keys != _INT64_MAX).nonzero().squeeze(1)
        k = keys[pixel]
        tri_id = k & 0xFFFFFFFF
        rem = pixel % (H * W)
        # Pixel centres in NDC.
        nx = ((rem % W).to(pos.dtype) + 0.5) * (2.0 / W) - 1.0
        ny = ((rem // W).to(pos.dtype) + 0.5) * (2.0 / H) - 1.0
        zw = (k >> 32).to(torch.int32).view(torch.float32).to(pos.dtype) * 2.0 - 1.0

    # Differentiable, perspective-correct barycentrics of the winning triangle at each pixel centre, in
    # homogeneous form (no division by w): with r_i = (x_i - nx w_i, y_i - ny w_i), the barycentric of
    # vertex i is proportional to cross(r_{i+1}, r_{i+2}). Gathering (x, y, w) component-major
    # ([3, B*V] along dim 1, corners first) keeps this gather and its backward scatter fast on CPU.
    V = pos.shape[1]
    vid = (tri64.index_select(0, tri_id) + ((pixel // (H * W)) * V)[:, None]).T.reshape(
        -1
    )  # [3N], corner-major
    x, y, _, w = pos.unbind(-1)  # [B, V] each, with autograd
    px, py, pw = (c.reshape(-1).index_select(0, vid).view(3, -1) for c in (x, y, w))  # [corner, N] each
    rx = px - nx * pw
    ry = py - ny * pw
    rx0, rx1, rx2 = rx.unbind(0)
    ry0, ry1, ry2 = ry.unbind(0)
    c0 = rx1 * ry2 - ry1 * rx2
    c1 = rx2 * ry0 - ry2 * rx0
    s = c0 + c1 + (rx0 * ry1 - ry0 * rx1)
    return Fragments(pixel=pixel, tri_id=tri_id, u=c0 / s, v=c1 / s, zw=zw, shape=(B, H, W))


def fragments_to_rast(frags: Fragments) -> torch.Tensor:
    """Dense nvdiffrast-style ``rast`` float [B, H, W, 4] = (u, v, z/w, id + 1) from fragments."""
    B, H, W = frags.shape
    vals = torch.stack([frags.u, frags.v, frags.zw, (frags.tri_id + 1).to(frags.u.dtype)], dim=1)
    out = vals.new_zeros(B * H * W, 4).index_put((frags.pixel,), vals)
    return out.view(B, H, W, 4)


def rast_to_fragments(rast: torch.Tensor) -> Fragments:
    """The inverse of :func:`fragments_to_rast` (used when ``rast`` came from another backend)."""
    B, H, W, _ = rast.shape
    flat = rast.reshape(-1, 4)
    pixel = (flat[:, 3] > 0).nonzero().squeeze(1)
    sel = flat[pixel]
    return Fragments(
        pixel=pixel, tri_id=sel[:, 3].long() - 1, u=sel[:, 0], v=sel[:, 1], zw=sel[:, 2], shape=(B, H, W)
    )
