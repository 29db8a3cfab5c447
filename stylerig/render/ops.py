"""nvdiffrast-shaped rendering primitives with interchangeable backends.

``rasterize`` and ``interpolate`` follow nvdiffrast's conventions (``docs/conventions.md``); the one
difference is that the torch backend drops triangles with a vertex behind the camera (``w <= 0``)
instead of clipping them at the near plane:

* clip space is OpenGL's: visible where ``-w <= x, y, z <= w``; pixel centres sit at NDC
  ``2 (i + 0.5) / W - 1``; image row 0 is clip ``y = -1`` (the face renderer folds the flip to a
  top-down image into its projection, so its images need no flipping);
* ``rast[..., :]`` = (u, v, z/w, triangle_id + 1), all zeros where no triangle covers the pixel centre;
  (u, v) are perspective-correct barycentrics of the triangle's first and second vertex (the third has
  weight 1 - u - v);
* gradients reach ``pos`` through (u, v) and ``attr`` through ``interpolate``; ``z/w`` and the id carry
  none (coverage is discrete: no silhouette gradients).

Backends: ``"torch"`` (pure PyTorch, CPU and CUDA, the reference), ``"nvdiffrast"`` (CUDA tensors with
the nvdiffrast package installed) and ``"auto"`` (nvdiffrast when it can run on the tensors, else torch).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Literal

import torch

from stylerig._checks import check_tensor
from stylerig.errors import BackendUnavailableError, InputError
from stylerig.render.raster_torch import (
    Fragments,
    fragments_to_rast,
    rast_to_fragments,
    rasterize_fragments,
)

__all__ = [
    "Backend",
    "Fragments",
    "interpolate",
    "interpolate_fragments",
    "nvdiffrast_available",
    "rasterize",
    "rasterize_to_fragments",
    "resolve_backend",
]

Backend = Literal["auto", "torch", "nvdiffrast"]
_FLOATS = (torch.float32, torch.float64)
_INTS = (torch.int32, torch.int64)


@functools.cache
def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` can be imported (it is never imported at stylerig import time)."""
    if importlib.util.find_spec("nvdiffrast") is None:
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``"auto"`` into a concrete backend for tensors on ``device``; check the choice can run."""
    if backend not in ("auto", "torch", "nvdiffrast"):
        raise InputError(f"unknown renderer backend {backend!r}; expected auto, torch or nvdiffrast")
    if backend == "auto":
        return "nvdiffrast" if device.type == "cuda" and nvdiffrast_available() else "torch"
    if backend == "nvdiffrast":
        if device.type != "cuda":
            raise BackendUnavailableError(
                "the nvdiffrast renderer needs CUDA tensors",
                hint="use --renderer torch (or auto) on a CPU, or move the data to a CUDA device",
            )
        if not nvdiffrast_available():
            raise BackendUnavailableError(
                "nvdiffrast is not installed (it is not on the package index)",
                hint="install it from source: see 'stylerig doctor' and the README, or use --renderer torch",
            )
    return backend


@functools.cache
def _nvdr_context(device: torch.device):  # pragma: no cover - needs CUDA
    import nvdiffrast.torch as dr

    return dr.RasterizeCudaContext(device=device)


def _check_tri(tri: torch.Tensor, num_vertices: int) -> None:
    check_tensor(tri, "tri", [None, 3], dtypes=_INTS)
    if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= num_vertices):
        raise InputError(f"tri holds vertex indices outside [0, {num_vertices})")


def rasterize(
    pos: torch.Tensor,
    tri: torch.Tensor,
    resolution: tuple[int, int],
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Rasterize a batch of triangle meshes (nvdiffrast's instanced mode).

    Args:
        pos: float32 [B, V, 4] clip-space positions (float64 allowed with the torch backend, for
            gradcheck). Any device.
        tri: int32 or int64 [F, 3], 0-based vertex indices, same device as ``pos``.
        resolution: (H, W) in pixels.
        backend: ``"auto"``, ``"torch"`` or ``"nvdiffrast"`` (see module docstring).

    Returns:
        rast: float [B, H, W, 4] = (u, v, z/w, triangle_id + 1); zeros on empty pixels. Triangle ids are
        exact as floats up to 2**24 triangles.

    Raises:
        InputError: malformed tensors or resolution. BackendUnavailableError: the backend cannot run.
    """
    sizes: dict[str, int] = {}
    check_tensor(pos, "pos", ["B", "V", 4], dtypes=_FLOATS, sizes=sizes)
    _check_tri(tri, sizes["V"])
    if tri.device != pos.device:
        raise InputError(f"pos is on {pos.device} but tri is on {tri.device}")
    if len(resolution) != 2 or min(int(resolution[0]), int(resolution[1])) <= 0:
        raise InputError(f"resolution must be (H, W) with positive sizes, got {tuple(resolution)}")
    be = resolve_backend(backend, pos.device)
    res = (int(resolution[0]), int(resolution[1]))
    if be == "nvdiffrast":  # pragma: no cover - needs CUDA
        import nvdiffrast.torch as dr

        rast, _ = dr.rasterize(
            _nvdr_context(pos.device),
            pos.float().contiguous(),
            tri.to(torch.int32).contiguous(),
            res,
            grad_db=False,
        )
        return rast
    return fragments_to_rast(rasterize_fragments(pos, tri, res))


def rasterize_to_fragments(
    pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int], *, backend: Backend = "auto"
) -> Fragments:
    """:func:`rasterize`, returning the covered pixels in sparse form (:class:`Fragments`).

    The face renderer's hot path: with the torch backend it skips building and re-reading the dense
    ``rast`` tensor. Same arguments and conventions as :func:`rasterize`.
    """
    if resolve_backend(backend, pos.device) == "torch":
        sizes: dict[str, int] = {}
        check_tensor(pos, "pos", ["B", "V", 4], dtypes=_FLOATS, sizes=sizes)
        _check_tri(tri, sizes["V"])
        return rasterize_fragments(pos, tri, (int(resolution[0]), int(resolution[1])))
    return rast_to_fragments(rasterize(pos, tri, resolution, backend=backend))  # pragma: no cover


def interpolate_fragments(
    attr: torch.Tensor, frags: Fragments, tri: torch.Tensor, *, channels_first: bool = False
) -> torch.Tensor:
    """Interpolate per-vertex attributes at the fragments (0 where no fragment).

    Args:
        attr: float [V, C] or [B, V, C] (B may be 1).
        frags: from :func:`rasterize_to_fragments`.
        tri: the triangles that were rasterized.
        channels_first: return [B, C, H, W] instead of [B, H, W, C].

    Returns:
        float [B, H, W, C] (or [B, C, H, W]); a permuted view of a [C, B, H, W] buffer.
    """
    if attr.ndim == 2:
        attr = attr[None]
    B, H, W = frags.shape
    V, C = attr.shape[1], attr.shape[2]
    vi = tri.long().index_select(0, frags.tri_id)  # [N, 3]
    if attr.shape[0] != 1:
        vi = vi + (frags.batch * V)[:, None]
    # Component-major gather ([C, B*V] along dim 1, corners first): fast forward and backward on CPU.
    a = attr.permute(2, 0, 1).reshape(C, -1).index_select(1, vi.T.reshape(-1)).view(C, 3, -1)
    a0, a1, a2 = a.unbind(1)  # [C, N] each
    vals = a2 + frags.u * (a0 - a2) + frags.v * (a1 - a2)
    out = vals.new_zeros(C, B * H * W).index_copy_(1, frags.pixel, vals)  # in place: no clone of the zeros
    out = out.view(C, B, H, W)
    return out.permute(1, 0, 2, 3) if channels_first else out.permute(1, 2, 3, 0)


def interpolate(
    attr: torch.Tensor,
    rast: torch.Tensor,
    tri: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, None]:
    """Interpolate per-vertex attributes over the rasterized pixels (nvdiffrast's ``interpolate``).

    Args:
        attr: float [V, C] (shared by the batch) or [B, V, C] (B may be 1 to broadcast).
        rast: float [B, H, W, 4] from :func:`rasterize`.
        tri: int32/int64 [F, 3], the triangles given to :func:`rasterize`.
        backend: as in :func:`rasterize`.

    Returns:
        (out float [B, H, W, C], None): attributes at each pixel centre, 0 on empty pixels; the second
        element mirrors nvdiffrast's (unused) image-space derivatives.
    """
    check_tensor(rast, "rast", ["B", "H", "W", 4], dtypes=_FLOATS)
    if attr.ndim == 2:
        attr = attr[None]
    check_tensor(attr, "attr", [None, "V", "C"], dtypes=_FLOATS)
    _check_tri(tri, attr.shape[1])
    B, H, W, _ = rast.shape
    if attr.shape[0] not in (1, B):
        raise InputError(f"attr has batch {attr.shape[0]} but rast has batch {B}")
    be = resolve_backend(backend, rast.device)
    if be == "nvdiffrast":  # pragma: no cover - needs CUDA
        import nvdiffrast.torch as dr

        a = attr if attr.shape[0] == B else attr.expand(B, -1, -1)
        return dr.interpolate(a.float().contiguous(), rast, tri.to(torch.int32).contiguous())[0], None

    return interpolate_fragments(attr, rast_to_fragments(rast), tri), None
