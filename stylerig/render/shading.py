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


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: float [B, V, 3].
        triangles: int64 [F, 3], counter-clockwise seen from outside (normals then point outwards).
        eps: guards the normalisation of isolated vertices.

    Returns:
        float [B, V, 3] unit normals (zero for vertices in no triangle). Computed vertex-major
        ([V, B, 3]) internally: row gathers and ``index_add`` along dim 0 are several times faster on
        CPU than along dim 1; the result is a permuted view.
    """
    B, V, _ = vertices.shape
    F = triangles.shape[0]
    tri = triangles.long()
    vt = vertices.transpose(0, 1).reshape(V, B * 3)
    corners = vt.index_select(0, tri.reshape(-1)).view(F, 3, B, 3)
    v0, v1, v2 = corners.unbind(1)
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).reshape(F, B * 3)  # length = 2 x area
    vn = vt.new_zeros(V, B * 3)
    for k in range(3):
        vn = vn.index_add(0, tri[:, k], fn)
    vn = vn.view(V, B, 3)
    vn = vn / vn.norm(dim=-1, keepdim=True).clamp_min(eps)
    return vn.transpose(0, 1)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 SH basis values (with Lambertian convolution constants) per normal.

    Args:
        normals: float [..., 3] unit normals, world space.

    Returns:
        float [..., 9].
    """
    x, y, z = normals.unbind(-1)
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
        dim=-1,
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
    gamma = illumination.view(-1, 3, 9)
    gamma = gamma + torch.nn.functional.pad(gamma.new_full((1, 3, 1), AMBIENT), (0, 8))
    irradiance = sh_basis(normals) @ gamma.transpose(1, 2)  # [B, N, 3]
    return albedo * irradiance
