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
    """Sparse incidence matrices of a fixed triangle list, for fast gathers and scatters on CPU.

    ``flat`` lists the triangle corners corner-major (all first corners, then all second, then all
    third) and ``columns[k]`` the k-th corners alone; ``corner[k]`` [V, F] sums values at the k-th corners
    back onto their vertices (the adjoint of gathering ``columns[k]``); ``faces`` [V, F] sums face values
    onto the vertices of each face. A CSR matrix product is
    several times faster than ``index_add`` on CPU (which does not parallelise).
    """

    def __init__(self, triangles: torch.Tensor, num_vertices: int, dtype: torch.dtype) -> None:
        self.triangles = triangles  # a strong reference: its address stays unique while cached
        tri = triangles.long()
        F = tri.shape[0]
        dev = tri.device
        self.flat = tri.T.reshape(-1)
        self.columns = tri.T.contiguous().unbind(0)  # corner k of every face: 3 x [F]
        face_ids = torch.arange(F, device=dev)
        ones = torch.ones(F, dtype=dtype, device=dev)
        self.corner = [
            torch.sparse_coo_tensor(torch.stack([col, face_ids]), ones, (num_vertices, F))
            .coalesce()
            .to_sparse_csr()
            for col in self.columns
        ]
        self.faces = (
            torch.sparse_coo_tensor(
                torch.stack([self.flat, face_ids.repeat(3)]), ones.repeat(3), (num_vertices, F)
            )
            .coalesce()
            .to_sparse_csr()
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
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            topo = _TOPOLOGY_CACHE[key] = _Topology(triangles, num_vertices, dtype)
    return topo


class _GatherCorners(torch.autograd.Function):
    """rows [V, K] -> the k-th corner of every face [F, K]; backward sums them back with a CSR product."""

    @staticmethod
    def forward(ctx, rows, topo, k):  # type: ignore[override]
        ctx.topo, ctx.k = topo, k
        return rows.index_select(0, topo.columns[k])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.topo.corner[ctx.k] @ grad.contiguous(), None, None


class _SumFaces(torch.autograd.Function):
    """face rows [F, K] -> per-vertex sums [V, K] (CSR product); backward gathers and sums the corners."""

    @staticmethod
    def forward(ctx, face_values, topo):  # type: ignore[override]
        ctx.topo = topo
        return topo.faces @ face_values.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        F = ctx.topo.flat.shape[0] // 3
        return grad.index_select(0, ctx.topo.flat).view(3, F, -1).sum(0), None


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: float [B, V, 3].
        triangles: int64 [F, 3], counter-clockwise seen from outside (normals then point outwards).
        eps: guards the normalisation of isolated vertices.

    Returns:
        float [B, V, 3] unit normals (zero for vertices in no triangle), first-order differentiable.
        Computed in a [V, 3, B] layout (returned as a permuted view); the mesh topology becomes cached
        sparse matrices, so gathers and scatters run as row copies and CSR products (several times
        faster on CPU than ``index_add``, which does not parallelise).
    """
    B, V, _ = vertices.shape
    F = triangles.shape[0]
    topo = _topology(triangles, V, vertices.dtype)
    rows = vertices.permute(1, 2, 0).reshape(V, 3 * B)
    # One gather per corner (not one gather split three ways): the backward is then three small CSR
    # products instead of a stack of the three corner gradients.
    c0, c1, c2 = (_GatherCorners.apply(rows, topo, k).view(F, 3, B) for k in range(3))  # [F, xyz, B] each
    ax, ay, az = (c1 - c0).unbind(1)  # [F, B] each
    bx, by, bz = (c2 - c0).unbind(1)
    fn = torch.stack(
        [ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=1
    )  # [F, 3, B], |fn| = 2 area
    vn = _SumFaces.apply(fn.view(F, 3 * B), topo).view(V, 3, B)
    vn = vn * torch.rsqrt((vn * vn).sum(1, keepdim=True).clamp_min(eps * eps))
    return vn.permute(2, 0, 1)


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


def sh_shade(albedo: torch.Tensor, normals: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
    """Lambertian colour under 3-band SH light.

    Args:
        albedo: float [B, N, 3] linear RGB in [0, 1].
        normals: float [B, N, 3] unit normals, world space.
        illumination: float [B, 27], channel-major 3 x 9, *without* the ambient default
            (:data:`AMBIENT` is added here).

    Returns:
        float [B, N, 3] linear RGB (not clamped).
    """
    B = normals.shape[0]
    gamma = illumination.reshape(B, 3, 9)
    gamma = gamma + torch.nn.functional.pad(gamma.new_full((1, 3, 1), AMBIENT), (0, 8))
    basis = sh_basis(normals.contiguous())  # [B, N, 9]
    return albedo * torch.bmm(basis, gamma.transpose(1, 2))  # [B, N, 3]
