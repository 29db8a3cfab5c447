"""Rotations, rigid transform, perspective camera and projection (pure functions + one dataclass).

Conventions (also in ``docs/conventions.md``):

* World = model space after the rigid transform ``x_world = R(yaw, pitch, roll) @ x_model + t``:
  x towards the subject's left (image right), y up, z towards the camera; decimetres.
* ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` acting on column vectors. With the right-hand rule, positive
  **yaw** turns the nose towards +x (image right), positive **pitch** tips the nose down, positive
  **roll** lifts the subject's left side (the head tilts counter-clockwise in the image).
  Angles are radians inside ``p``; degrees at every interface a person touches.
* The camera sits on the +z axis at ``distance`` looking at the origin (towards -z), like
  Deep3DFaceRecon (distance 10 dm, focal 1015 px at 224 px, so a field of view of 12.6 deg across the
  width). The focal length is stored resolution-free, in NDC units: ``focal = f_px / (W / 2)``; pixels
  are square, so a non-square image sees more or less vertically.
* Projection produces nvdiffrast/OpenGL clip space with the **y axis flipped**, so raster row 0 is the
  *top* of the image and images need no flipping: pixel ``(x, y)`` has x right, y down, origin at the
  top-left corner of the top-left pixel, pixel centres at half-integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Camera",
    "clip_to_pixels",
    "project",
    "rigid_transform",
    "rotation_matrix",
]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on the +z axis looking at the origin.

    Attributes:
        focal: focal length in NDC units, ``f_px / (W / 2)``; default 1015 / 112 (Deep3DFaceRecon's
            1015 px at 224 px), i.e. a 12.6 deg field of view.
        distance: camera-to-origin distance, decimetres.
        near, far: clipping planes, decimetres from the camera (depth range mapped to z/w in [-1, 1]).
    """

    focal: float = 1015.0 / 112.0
    distance: float = 10.0
    near: float = 5.0
    far: float = 15.0

    def focal_px(self, width: int) -> float:
        """Focal length in pixels for an image ``width`` pixels wide."""
        return self.focal * width / 2.0

    @property
    def fov_deg(self) -> float:
        """Full field of view in degrees."""
        return math.degrees(2.0 * math.atan(1.0 / self.focal))


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from (yaw, pitch, roll).

    Args:
        angles: float [B, 3] = (yaw, pitch, roll) in radians.

    Returns:
        float [B, 3, 3] ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` for column vectors (same dtype/device).
    """
    yaw, pitch, roll = angles.unbind(-1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def rigid_transform(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model space -> world space: ``R @ x + t``.

    Args:
        points: float [B, V, 3] model space (decimetres).
        rotation: float [B, 3] (yaw, pitch, roll) radians, or [B, 3, 3] matrices.
        translation: float [B, 3] decimetres.

    Returns:
        float [B, V, 3] world space.
    """
    rot = rotation if rotation.ndim == 3 else rotation_matrix(rotation)
    return points @ rot.transpose(1, 2) + translation[:, None, :]


def project(points: torch.Tensor, camera: Camera = Camera(), aspect: float = 1.0) -> torch.Tensor:
    """World space -> clip space (OpenGL, y flipped so raster row 0 is the image top).

    Args:
        points: float [B, V, 3] world space, decimetres.
        camera: the camera (its focal length is relative to the image *width*).
        aspect: image width / height, so that pixels stay square on non-square images.

    Returns:
        float [B, V, 4] clip-space positions; ``w`` = distance in front of the camera (decimetres).
    """
    x, y, z = points.unbind(-1)
    w = camera.distance - z
    n, f = camera.near, camera.far
    zc = (f + n) / (f - n) * w - 2.0 * f * n / (f - n)
    return torch.stack([camera.focal * x, -camera.focal * aspect * y, zc, w], dim=-1)


def clip_to_pixels(clip: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Clip space -> pixel coordinates.

    Args:
        clip: float [B, V, 4] from :func:`project`.
        resolution: (H, W).

    Returns:
        float [B, V, 2] = (x right, y down) in pixels, origin at the top-left corner of the top-left
        pixel (pixel centres at half-integers).
    """
    h, w = resolution
    inv = 1.0 / clip[..., 3]
    px = (clip[..., 0] * inv + 1.0) * (0.5 * w)
    py = (clip[..., 1] * inv + 1.0) * (0.5 * h)
    return torch.stack([px, py], dim=-1)
