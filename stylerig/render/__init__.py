"""Differentiable rendering: camera, nvdiffrast-shaped rasterize/interpolate, SH shading, FaceRenderer.

Layers (each usable on its own): :mod:`~stylerig.render.camera` (rotations, projection),
:mod:`~stylerig.render.ops` (``rasterize``, ``interpolate``; torch or nvdiffrast backend),
:mod:`~stylerig.render.shading` (normals, spherical harmonics), and
:class:`~stylerig.render.face_renderer.FaceRenderer` which composes them.
"""

from __future__ import annotations

from stylerig.render.camera import Camera, clip_to_pixels, project, rigid_transform, rotation_matrix
from stylerig.render.face_renderer import FaceRenderer, RenderOutput
from stylerig.render.ops import (
    Fragments,
    interpolate,
    interpolate_fragments,
    nvdiffrast_available,
    rasterize,
    rasterize_to_fragments,
)
from stylerig.render.shading import AMBIENT, sh_basis, sh_shade, vertex_normals

__all__ = [
    "AMBIENT",
    "Camera",
    "FaceRenderer",
    "Fragments",
    "RenderOutput",
    "clip_to_pixels",
    "interpolate",
    "interpolate_fragments",
    "nvdiffrast_available",
    "project",
    "rasterize",
    "rasterize_to_fragments",
    "rigid_transform",
    "rotation_matrix",
    "sh_basis",
    "sh_shade",
    "vertex_normals",
]
