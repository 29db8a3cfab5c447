"""``FaceRenderer``: face parameters p [B, 257] -> image, face mask, 2D landmarks (and what losses need).

The layers, each a pure function elsewhere in :mod:`stylerig.render`:
morphable model (shape, albedo) -> vertex normals -> SH shading per vertex -> rigid transform ->
projection to clip space -> rasterize -> interpolate colours -> composite over the background.
Landmarks are the projected landmark vertices (no rasterizer involved).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import InputError
from stylerig.face.model import MorphableModel
from stylerig.render import camera as cam
from stylerig.render.ops import Backend, interpolate_fragments, rasterize_to_fragments, resolve_backend
from stylerig.render.shading import sh_shade, vertex_normals

__all__ = ["FaceRenderer", "RenderOutput"]


@dataclass(frozen=True)
class RenderOutput:
    """Everything one render of a batch produces (all tensors on the renderer's device).

    Attributes:
        image: float [B, 3, H, W] in [-1, 1] (the StyleGAN image range): ``2 * colour - 1`` on the face,
            the background elsewhere. Linear RGB, not clamped (so gradients survive over-exposure).
        mask: float [B, 1, H, W], 1 where the face mesh covers the pixel centre, else 0 (no gradient).
        skin: float [B, 1, H, W] in [0, 1], the model's skin mask interpolated over the face, 0 elsewhere.
        landmarks: float [B, 68, 2] pixel coordinates (x right, y down, origin at the top-left corner of
            the top-left pixel), iBUG order.
        vertices: float [B, V, 3] world space (decimetres).
        clip: float [B, V, 4] clip space.
        normals: float [B, V, 3] unit world-space vertex normals.
        colors: float [B, V, 3] shaded vertex colours, linear RGB.
    """

    image: torch.Tensor
    mask: torch.Tensor
    skin: torch.Tensor
    landmarks: torch.Tensor
    vertices: torch.Tensor
    clip: torch.Tensor
    normals: torch.Tensor
    colors: torch.Tensor

    def detach(self) -> RenderOutput:
        """A copy with every tensor detached from the autograd graph."""
        return RenderOutput(**{f.name: getattr(self, f.name).detach() for f in fields(self)})


def _check_like(x: torch.Tensor, name: str, ref: torch.Tensor) -> None:
    """``x`` must share ``ref``'s dtype and device (the renderer does not move or cast silently)."""
    if x.dtype != ref.dtype or x.device != ref.device:
        raise InputError(
            f"{name} is {str(x.dtype).replace('torch.', '')} on {x.device}, but the renderer holds "
            f"{str(ref.dtype).replace('torch.', '')} on {ref.device}",
            hint=f"move one to the other: renderer.to({name}.device, {name}.dtype) or {name}.to(...)",
        )


def _resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    h, w = (int(r) for r in resolution)
    if h <= 0 or w <= 0:
        raise InputError(f"resolution must be positive, got {(h, w)}")
    return h, w


class FaceRenderer(nn.Module):
    """Differentiable renderer of a :class:`~stylerig.face.MorphableModel` in the 257 layout.

    Args:
        face_model: the morphable model (a submodule: it moves with ``.to()``).
        resolution: output size, an int (square) or (H, W) pixels.
        camera: the camera (:class:`~stylerig.render.camera.Camera`); its focal length is resolution-free,
            so the same p frames the face identically at every resolution.
        backend: rasterizer backend, ``"auto"`` | ``"torch"`` | ``"nvdiffrast"``.

    Example:
        >>> from stylerig import params
        >>> from stylerig.face import load_face_model  # doctest: +SKIP
        >>> out = FaceRenderer(load_face_model(), 128)(params.zeros(1))  # doctest: +SKIP
        >>> out.image.shape  # doctest: +SKIP
        torch.Size([1, 3, 128, 128])
    """

    def __init__(
        self,
        face_model: MorphableModel,
        resolution: int | tuple[int, int] = 224,
        camera: cam.Camera = cam.Camera(),
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.face_model = face_model
        self.resolution = _resolution(resolution)
        self._aspect = self.resolution[1] / self.resolution[0]  # W / H: keeps pixels square
        self.camera = camera
        # Fail early on a misspelt backend or a missing nvdiffrast; the device is checked at render time.
        resolve_backend(backend, torch.device("cuda" if backend == "nvdiffrast" else "cpu"))
        self.backend: Backend = backend
        self.register_buffer("_tri32", face_model.triangles.to(torch.int32), persistent=False)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, backend={self.backend!r}, camera={self.camera}"

    def _check(self, p: torch.Tensor) -> torch.Tensor:
        check_tensor(p, "p", [None, params.NUM_PARAMS], dtypes=(torch.float32, torch.float64), finite=True)
        _check_like(p, "p", self.face_model.mean_shape)
        return p

    def geometry(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space vertices and clip-space positions of ``p`` [B, 257] -> ([B, V, 3], [B, V, 4])."""
        g = params.split(self._check(p))
        verts = self.face_model.shape(g["identity"], g["expression"])
        world = cam.rigid_transform(verts, g["rotation"], g["translation"])
        return world, cam.project(world, self.camera, self._aspect)

    def landmarks(self, p: torch.Tensor) -> torch.Tensor:
        """Projected landmarks only (cheap: touches 68 vertices, no rasterization).

        Args:
            p: float [B, 257].

        Returns:
            float [B, 68, 2] pixels (x right, y down), differentiable in p.
        """
        g = params.split(self._check(p))
        fm = self.face_model
        lm = fm.landmarks
        rows = (lm[:, None] * 3 + torch.arange(3, device=lm.device)).reshape(-1)  # rows of the [3V, K] bases
        offs = g["identity"] @ fm.id_basis[rows].T + g["expression"] @ fm.exp_basis[rows].T
        verts = fm.mean_shape[lm] + offs.view(-1, lm.numel(), 3)
        world = cam.rigid_transform(verts, g["rotation"], g["translation"])
        return cam.clip_to_pixels(cam.project(world, self.camera, self._aspect), self.resolution)

    def forward(self, p: torch.Tensor, background: torch.Tensor | None = None) -> RenderOutput:
        """Render ``p``.

        Args:
            p: float [B, 257] face parameters (:mod:`stylerig.params`; rotation in radians).
            background: optional float [B or 1, 3, H, W] in [-1, 1] behind the face; default -1 (black).

        Returns:
            :class:`RenderOutput`.
        """
        g = params.split(self._check(p))
        fm = self.face_model
        verts = fm.shape(g["identity"], g["expression"])
        albedo = fm.albedo(g["reflectance"])
        rot = cam.rotation_matrix(g["rotation"])
        world = cam.rigid_transform(verts, rot, g["translation"])
        normals = vertex_normals(world, fm.triangles)
        colors = sh_shade(albedo, normals, g["illumination"])
        clip = cam.project(world, self.camera, self._aspect)

        H, W = self.resolution
        B = p.shape[0]
        frags = rasterize_to_fragments(clip, self._tri32, (H, W), backend=self.backend)
        skin = fm.skin_mask.to(colors.dtype)[None, :, None].expand(B, -1, 1)
        # Built channel-major ([4, B, V], returned as a [B, V, 4] view): what interpolate_fragments reads
        # without a copy (colors already is such a view).
        attrs = torch.cat([(colors * 2.0 - 1.0).permute(2, 0, 1), skin.permute(2, 0, 1)]).permute(1, 2, 0)
        out = interpolate_fragments(attrs, frags, fm.triangles)  # [B, H, W, 4]
        mask = torch.zeros(B * H * W, dtype=colors.dtype, device=colors.device)
        mask.index_fill_(0, frags.pixel, 1.0)
        mask = mask.view(B, 1, H, W)
        out = out.permute(0, 3, 1, 2)  # [B, 4, H, W]
        image = out[:, :3]
        if background is None:
            image = image + (mask - 1.0)  # face pixels keep their colour; empty pixels become -1
        else:
            check_tensor(
                background, "background", [None, 3, H, W], dtypes=(torch.float32, torch.float64), finite=True
            )
            if background.shape[0] not in (1, B):
                raise InputError(f"background has batch {background.shape[0]} but p has batch {B}")
            _check_like(background, "background", p)
            image = image * mask + background * (1.0 - mask)
        landmarks = cam.clip_to_pixels(clip[:, fm.landmarks], (H, W))
        return RenderOutput(
            image=image,
            mask=mask,
            skin=out[:, 3:],
            landmarks=landmarks,
            vertices=world,
            clip=clip,
            normals=normals,
            colors=colors,
        )
