"""Vertex normals and 3-band spherical-harmonics Lambertian shading (pure functions).

The SH basis, constants and the ambient default follow Deep3DFaceRecon (``models/bfm.py``), so
illumination coefficients fitted there mean the same here: with world-space unit normal
``n = (x, y, z)`` (x image right, y up, z towards the camera),

``Y(n) = [a0 c0, -a1 c1 y, a1 c1 z, -a1 c1 x, a2 c2 x y, -a2 c2 y z, a2 c2 (3 z^2 - 1) / (2 sqrt 3),
-a2 c2 x z, a2 c2 (x^2 - y^2) / 2]`` with ``a = (pi, 2 pi / sqrt 3, 2 pi / sqrt 8)`` and
``c = (1 / sqrt(4 pi), sqrt 3 / sqrt(4 pi), 3 sqrt 5 / sqrt(12 pi))``.

The illumination group of ``p`` holds 27 values = 3 colour channels x 9 coefficients (channel-major);
:data:`AMBIENT` (0.8 on the constant band of every channel) is added, so ``p = 0`` is a soft frontal
white light. Colour = albedo x irradiance, per channel.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["AMBIENT", "sh_basis", "sh_shade", "vertex_normals"]

_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
_C = (
    1.0 / math.sqrt(4.0 * math.pi),
    math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
    3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi),
)
#: Added to the constant SH coefficient of each channel (Deep3DFaceRecon's ``init_lit``).
AMBIENT = 0.8


class _Topology:
    """Index tensors of a fixed triangle list, for fast gathers and scatters on CPU.

    Everything runs through ``embedding_bag`` (sums of gathered rows, with optional weights), which on
    CPU is several times faster than ``index_select`` followed by a reduction, ``index_add`` (which does
    not parallelise) or a CSR matrix product:

    * ``tri`` int64 [F, 3]: bags of the three corners (the sum of the corner rows of each face);
    * ``edges`` int64 [2F, 2] with ``edge_weights`` [2F, 2] = (1, -1): bags giving the edge vectors
      ``c1 - c0`` (bags ``0..F-1``) then ``c2 - c0`` (bags ``F..2F-1``): a fused gather-and-subtract;
    * ``faces``: (indices, offsets) summing face rows [F, K] onto the vertices of each face -> [V, K]
      (one bag per vertex: the CSR form of the [V, F] incidence matrix);
    * ``edges_t``: (indices, offsets, weights) summing edge rows [2F, K] back onto the vertices -> [V, K]
      (the adjoint of the ``edges`` gather).
    """

    def __init__(self, triangles: torch.Tensor, num_vertices: int, dtype: torch.dtype) -> None:
        self.triangles = triangles  # a strong reference: its address stays unique while cached
        tri = triangles.long()
        F = tri.shape[0]
        dev = tri.device
        self.tri = tri.contiguous()
        self.edges = torch.cat([tri[:, [1, 0]], tri[:, [2, 0]]]).contiguous()
        self.edge_weights = torch.tensor([1.0, -1.0], dtype=dtype, device=dev).repeat(2 * F, 1)
        self.faces = self._bags(tri.T.reshape(-1), torch.arange(F, device=dev).repeat(3), None, num_vertices)
        self.edges_t = self._bags(
            self.edges.reshape(-1),
            torch.arange(2 * F, device=dev).repeat_interleave(2),
            self.edge_weights.reshape(-1),
            num_vertices,
        )

    @staticmethod
    def _bags(rows, cols, weights, num_rows):
        """(indices, offsets[, weights]) of the sparse matrix with entries (rows, cols) (duplicates summed)."""
        vals = (
            torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device) if weights is None else weights
        )
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            m = torch.sparse_coo_tensor(
                torch.stack([rows, cols]), vals, (num_rows, int(cols.max()) + 1 if cols.numel() else 0)
            ).coalesce()
            m = m.to_sparse_csr()
        bags = (m.col_indices().contiguous(), m.crow_indices().contiguous())
        if weights is None:
            return bags
        return (*bags, m.values().contiguous())


def _bag_sum(rows: torch.Tensor, bags: tuple) -> torch.Tensor:
    """Row sums ``out[i] = sum_j w_j rows[indices[j]]`` over bag ``i`` of ``bags`` (see :class:`_Topology`)."""
    weights = bags[2] if len(bags) > 2 else None
    return torch.nn.functional.embedding_bag(
        bags[0], rows, bags[1], mode="sum", per_sample_weights=weights, include_last_offset=True
    )


_TOPOLOGY_CACHE: dict[tuple, _Topology] = {}


def _topology(triangles: torch.Tensor, num_vertices: int, dtype: torch.dtype) -> _Topology:
    # Keyed by the tensor's address, layout and version (an in-place edit rebuilds it); the cache holds
    # the tensor itself, so a freed tensor's address cannot be reused by another mesh while cached.
    key = (
        triangles.data_ptr(),
        triangles._version,
        tuple(triangles.shape),
        triangles.stride(),
        num_vertices,
        dtype,
        triangles.device,
    )
    topo = _TOPOLOGY_CACHE.get(key)
    if topo is None:
        if len(_TOPOLOGY_CACHE) > 16:
            _TOPOLOGY_CACHE.clear()
        topo = _TOPOLOGY_CACHE[key] = _Topology(triangles, num_vertices, dtype)
    return topo


#: Component orders (y, z, x) and (z, x, y): with a' = a[YZX], a'' = a[ZXY], cross(a, b) = a' b'' - a'' b'.
_ROTATIONS = (1, 2, 0, 2, 0, 1)


class _VertexNormals(torch.autograd.Function):
    """vertices [B, V, 3] -> unit area-weighted vertex normals, with a fused hand-written backward.

    Layouts: the geometry runs batch-innermost ([V, 3, B] rows, so gathers move whole rows); the normals
    are written component-major ([3, B, V], what :func:`sh_shade` reads) and returned as a permuted
    [B, V, 3] view. Edge vectors are gathered already rotated (y, z, x) and (z, x, y), which turns both
    the cross product and its adjoints into whole-tensor products. Plain-autograd twin (the reference of
    the tests): :func:`_vertex_normals_autograd`.
    """

    @staticmethod
    def forward(ctx, vertices, topo, eps):  # type: ignore[override]
        B, V, _ = vertices.shape
        F = topo.tri.shape[0]
        # Rows [V, (y, z, x, z, x, y), B]: one gather straight from the [B, V, 3] input.
        rot = vertices.permute(1, 2, 0).index_select(1, torch.tensor(_ROTATIONS, device=vertices.device))
        rot = rot.view(V, 6 * B)
        # e[0] = c1 - c0, e[1] = c2 - c0, each as (rotation, xyz, B): one fused gather-and-subtract.
        e = torch.nn.functional.embedding_bag(
            topo.edges, rot, mode="sum", per_sample_weights=topo.edge_weights
        ).view(2, F, 2, 3, B)
        (a1, a2), (b1, b2) = e[0].unbind(1), e[1].unbind(1)  # a' a'' b' b'', [F, 3, B] each
        fn = a1 * b2
        fn -= a2 * b1  # [F, 3, B] face normals, |fn| = 2 area
        vn = _bag_sum(fn.view(F, 3 * B), topo.faces).view(V, 3, B)
        x, y, z = vn.unbind(1)
        s = x * x + y * y + z * z  # [V, B]
        keep = s >= eps * eps  # where the normalisation is not clamped (its gradient flows)
        r = s.clamp_min_(eps * eps).rsqrt_()
        out = vertices.new_empty(3, B, V)
        torch.mul(vn, r[:, None], out=out.permute(2, 0, 1))
        ctx.save_for_backward(e, out, r, keep)
        ctx.topo = topo
        return out.permute(1, 2, 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        e, n, r, keep = ctx.saved_tensors
        topo = ctx.topo
        _, F, _, _, B = e.shape
        V = n.shape[2]
        g = grad.permute(2, 0, 1)  # [3, B, V], contiguous when it comes from sh_shade
        # n = vn r with r = |vn|^-1: d n = r (d vn - n (n . d vn)) (r is a constant where it was clamped).
        dot = n[0] * g[0] + n[1] * g[1] + n[2] * g[2]  # [B, V]
        dot *= keep.T
        t = g - n * dot
        gvn = torch.empty(V, 3, B, dtype=n.dtype, device=n.device)
        torch.mul(t.permute(2, 0, 1), r[:, None], out=gvn)
        grot = gvn.index_select(1, torch.tensor(_ROTATIONS, device=n.device)).view(V, 6 * B)
        gf1, gf2 = (
            torch.nn.functional.embedding_bag(topo.tri, grot, mode="sum").view(F, 2, 3, B).unbind(1)
        )  # face-normal gradient, rotated
        (a1, a2), (b1, b2) = e[0].unbind(1), e[1].unbind(1)
        # fn = a x b: grad a = b x gf, grad b = gf x a.
        ge = torch.empty(2, F, 3, B, dtype=n.dtype, device=n.device)
        ge1, ge2 = ge.unbind(0)
        torch.mul(b1, gf2, out=ge1).sub_(b2 * gf1)
        torch.mul(gf1, a2, out=ge2).sub_(gf2 * a1)
        grows = _bag_sum(ge.view(2 * F, 3 * B), topo.edges_t).view(V, 3, B)
        return grows.permute(2, 0, 1), None, None


def _vertex_normals_autograd(
    vertices: torch.Tensor, triangles: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """:func:`vertex_normals` in plain autograd ops (the reference for tests; slower)."""
    tri = triangles.long()
    c0, c1, c2 = (vertices.index_select(1, tri[:, k]) for k in range(3))  # [B, F, 3] each
    ax, ay, az = (c1 - c0).unbind(-1)
    bx, by, bz = (c2 - c0).unbind(-1)
    fn = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn = vn.index_add(1, tri[:, k], fn)
    return vn * torch.rsqrt((vn * vn).sum(-1, keepdim=True).clamp_min(eps * eps))


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: float [B, V, 3].
        triangles: int64 [F, 3], counter-clockwise seen from outside (normals then point outwards).
        eps: guards the normalisation of isolated vertices.

    Returns:
        float [B, V, 3] unit normals (zero for vertices in no triangle), first-order differentiable
        (a fused custom backward). A permuted view of a component-major [3, B, V] buffer (the layout
        :func:`sh_shade` reads); the mesh topology becomes cached index tensors, so every gather and
        scatter (forward and backward) runs as an ``embedding_bag`` row sum, several times faster on CPU
        than ``index_add`` or CSR products.
    """
    topo = _topology(triangles, vertices.shape[1], vertices.dtype)
    return _VertexNormals.apply(vertices, topo, eps)


def sh_basis(normals: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The 9 SH basis values (with Lambertian convolution constants) per normal.

    Args:
        normals: float tensor holding unit normals (x, y, z) along ``dim`` (world space).
        dim: the dimension of size 3 holding (x, y, z); the result has 9 values there.

    Returns:
        float tensor with ``dim`` of size 9.
    """
    x, y, z = normals.unbind(dim)
    a0c0 = _A[0] * _C[0]
    a1c1 = _A[1] * _C[1]
    a2c2 = _A[2] * _C[2]
    return torch.stack(
        [
            torch.full_like(x, a0c0),
            -a1c1 * y,
            a1c1 * z,
            -a1c1 * x,
            a2c2 * x * y,
            -a2c2 * y * z,
            0.5 * a2c2 / math.sqrt(3.0) * (3.0 * z * z - 1.0),
            -a2c2 * x * z,
            0.5 * a2c2 * (x * x - y * y),
        ],
        dim=dim,
    )


#: Basis constants: ``Y_k = _SH_SCALE[k] * m_k(x, y, z)`` with the monomials
#: ``m = (1, y, z, x, x y, y z, 3 z^2 - 1, x z, x^2 - y^2)`` (see :func:`sh_basis`).
_SH_SCALE = (
    _A[0] * _C[0],
    -_A[1] * _C[1],
    _A[1] * _C[1],
    -_A[1] * _C[1],
    _A[2] * _C[2],
    -_A[2] * _C[2],
    0.5 * _A[2] * _C[2] / math.sqrt(3.0),
    -_A[2] * _C[2],
    0.5 * _A[2] * _C[2],
)


def _sh_coefficients(illumination: torch.Tensor, batch: int) -> torch.Tensor:
    """float [B, 27] illumination -> [B, 3, 9] coefficients with :data:`AMBIENT` added (differentiable)."""
    gamma = illumination.reshape(batch, 3, 9)
    return gamma + torch.nn.functional.pad(gamma.new_full((1, 3, 1), AMBIENT), (0, 8))


class _SHShade(torch.autograd.Function):
    """(albedo [B, N, 3], normals [B, N, 3], coefficients [B, 3, 9]) -> colour [B, N, 3], analytic backward.

    Runs component-major: normals are read as [3, B, N] planes (free when they come from
    :func:`vertex_normals`), the basis is built as [9, B, N] planes and contracted with one ``bmm``; the
    colour is written as a [3, B, N] buffer (what :func:`~stylerig.render.ops.interpolate_fragments`
    reads without a copy) and returned as a permuted [B, N, 3] view.
    """

    @staticmethod
    def forward(ctx, albedo, normals, gamma):  # type: ignore[override]
        B, N, _ = normals.shape
        n = normals.permute(2, 0, 1).contiguous()  # [3, B, N]
        x, y, z = n.unbind(0)
        k = _SH_SCALE
        basis = n.new_empty(9, B, N)
        basis[0].fill_(k[0])
        torch.mul(y, k[1], out=basis[1])
        torch.mul(z, k[2], out=basis[2])
        torch.mul(x, k[3], out=basis[3])
        torch.mul(x, k[4], out=basis[4]).mul_(y)
        torch.mul(y, k[5], out=basis[5]).mul_(z)
        torch.mul(z, 3.0, out=basis[6]).mul_(z).sub_(1.0).mul_(k[6])
        torch.mul(x, k[7], out=basis[7]).mul_(z)
        torch.mul(x, x, out=basis[8]).sub_(y * y).mul_(k[8])
        irr = torch.bmm(gamma, basis.transpose(0, 1))  # [B, 3, N]
        out = n.new_empty(3, B, N)
        torch.mul(albedo.permute(2, 0, 1), irr.transpose(0, 1), out=out)
        ctx.save_for_backward(albedo, n, gamma, basis, irr)
        return out.permute(1, 2, 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        albedo, n, gamma, basis, irr = ctx.saved_tensors
        B, N = n.shape[1], n.shape[2]
        g = grad.permute(2, 0, 1)  # [3, B, N], contiguous when it comes from interpolate_fragments
        g_albedo = g_normals = g_gamma = None
        if ctx.needs_input_grad[0]:
            g_albedo = (g * irr.transpose(0, 1)).permute(1, 2, 0)
        if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            return g_albedo, None, None
        g_irr = n.new_empty(3, B, N)
        torch.mul(g, albedo.permute(2, 0, 1), out=g_irr)
        g_irr = g_irr.transpose(0, 1)  # [B, 3, N]
        if ctx.needs_input_grad[2]:
            g_gamma = torch.bmm(g_irr, basis.permute(1, 2, 0))  # [B, 3, 9]
        if ctx.needs_input_grad[1]:
            scale = torch.tensor(_SH_SCALE, dtype=gamma.dtype, device=gamma.device)
            gm = torch.bmm((gamma * scale).transpose(1, 2), g_irr).transpose(0, 1)  # [9, B, N] monomials
            x, y, z = n.unbind(0)
            gn = n.new_empty(3, B, N)
            torch.addcmul(gm[3], y, gm[4], out=gn[0]).addcmul_(z, gm[7]).addcmul_(x, gm[8], value=2.0)
            torch.addcmul(gm[1], x, gm[4], out=gn[1]).addcmul_(z, gm[5]).addcmul_(y, gm[8], value=-2.0)
            torch.addcmul(gm[2], y, gm[5], out=gn[2]).addcmul_(x, gm[7]).addcmul_(z, gm[6], value=6.0)
            g_normals = gn.permute(1, 2, 0)
        return g_albedo, g_normals, g_gamma


def _sh_shade_autograd(
    albedo: torch.Tensor, normals: torch.Tensor, illumination: torch.Tensor
) -> torch.Tensor:
    """:func:`sh_shade` in plain autograd ops (any broadcastable albedo; the reference for tests)."""
    gamma = _sh_coefficients(illumination, normals.shape[0])
    basis = sh_basis(normals.contiguous())  # [B, N, 9]
    return albedo * torch.bmm(basis, gamma.transpose(1, 2))  # [B, N, 3]


def sh_shade(albedo: torch.Tensor, normals: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
    """Lambertian colour under 3-band SH light.

    Args:
        albedo: float [B, N, 3] linear RGB in [0, 1] (other shapes that broadcast against ``normals``
            take a slower plain-autograd path).
        normals: float [B, N, 3] unit normals, world space.
        illumination: float [B, 27], channel-major 3 x 9, *without* the ambient default
            (:data:`AMBIENT` is added here).

    Returns:
        float [B, N, 3] linear RGB (not clamped); first-order differentiable (analytic backward). A
        permuted view of a channel-major [3, B, N] buffer.
    """
    if albedo.shape != normals.shape or normals.ndim != 3 or normals.shape[-1] != 3:
        return _sh_shade_autograd(albedo, normals, illumination)
    gamma = _sh_coefficients(illumination, normals.shape[0])
    return _SHShade.apply(albedo, normals, gamma)
