"""The built-in world's portrait: the face model's render composited into a simple scene.

:func:`render_portrait` draws, back to front, with batched torch ops only (no loop over the batch):

1. **background**: a smooth linear gradient (mean colour, brightness change, axis angle from the scene);
2. **hair**: a soft 2D silhouette behind the head -- two half super-ellipses around the projected skull
   centre (rotating with the head's roll, following yaw and pitch through the projection), its size from
   ``hair_volume``, how far it falls from ``hair_length``; coloured with the face model's scalp albedo
   and shaded by p's SH light through pseudo-normals of a dome;
3. **face**: :class:`~stylerig.render.FaceRenderer` (the head and neck mesh) over 1-2;
4. **shirt / shoulders**: a soft 2D torso in front of the lower neck: a round neckline anchored at the
   projected base of the neck (so it follows the head's yaw and roll), shoulders sloping away from it
   and tilted by half the head's roll, coloured ``scene["shirt"]`` and shaded by the same light.

The returned face mask is the renderer's mask where the shirt does not cover it (the neck below the
collar is hidden), so it equals ``FaceRenderer``'s mask on the whole head; landmarks are the
renderer's (68 projected landmark vertices, never occluded by the scene).
"""

from __future__ import annotations

import torch

from stylerig import params
from stylerig.render import camera as cam
from stylerig.render.face_renderer import FaceRenderer
from stylerig.render.shading import AMBIENT, sh_basis

__all__ = ["HAIR_ANCHOR", "NECK_ANCHOR", "render_portrait"]

#: Model-space (decimetres) centre of the skull, around which the hair silhouette is drawn.
HAIR_ANCHOR = (0.0, 0.35, -0.25)
#: Half-width and half-height of the skull around :data:`HAIR_ANCHOR` (decimetres).
_SKULL_HALF_WIDTH = 0.87
_SKULL_HALF_HEIGHT = 0.92
#: Model-space point at the base of the neck where the shirt's neckline is anchored.
NECK_ANCHOR = (0.0, -1.05, -0.36)
_NECK_HALF_WIDTH = 0.5  # decimetres: half-width of the neckline
_EDGE_PX = 0.6  # softness of the 2D silhouettes' edges, pixels


def _irradiance(normals: torch.Tensor, illumination: torch.Tensor) -> torch.Tensor:
    """SH irradiance [B, 3, H, W] at pseudo-normals [B, H, W, 3] under p's light [B, 27] (+ ambient)."""
    B = normals.shape[0]
    gamma = illumination.reshape(B, 3, 9).clone()
    gamma[:, :, 0] = gamma[:, :, 0] + AMBIENT
    basis = sh_basis(normals)  # [B, H, W, 9]
    return torch.einsum("bhwk,bck->bchw", basis, gamma)


def _dome_normals(a: torch.Tensor, b: torch.Tensor, bulge: float = 1.0) -> torch.Tensor:
    """Unit pseudo-normals [B, H, W, 3] of a dome over normalised coordinates (a right, b down)."""
    r = 1.0 - a * a - b * b
    # sqrt only where positive (also in the backward pass: its gradient at 0 would be infinite -> NaN).
    nz = torch.where(r > 0, torch.where(r > 0, r, 1.0).sqrt(), 0.0) * bulge + 0.15
    n = torch.stack([a, -b, nz], -1)
    return n / n.norm(dim=-1, keepdim=True)


def render_portrait(
    renderer: FaceRenderer, p: torch.Tensor, scene: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render the world's portrait of face parameters ``p`` in ``scene``.

    Args:
        renderer: a :class:`FaceRenderer` of the world's face model (128x128 in the world).
        p: float [B, 257] face parameters.
        scene: the scene dict of :func:`stylerig.worlds.prior.factors_to_world` (tensors [B, n]).

    Returns:
        ``(image [B, 3, H, W] clamped to [-1, 1], face mask [B, 1, H, W] (0/1), landmarks [B, 68, 2] pixels)``.
    """
    H, W = renderer.resolution
    B = p.shape[0]
    dev, dt = p.device, p.dtype
    fm = renderer.face_model
    g = params.split(p)
    rot = cam.rotation_matrix(g["rotation"])
    roll = g["rotation"][:, 2]

    # Pixel centres (x right, y down).
    ys = (torch.arange(H, device=dev, dtype=dt) + 0.5).view(1, H, 1)
    xs = (torch.arange(W, device=dev, dtype=dt) + 0.5).view(1, 1, W)

    # Projected anchors and the local scale (pixels per decimetre at the head's depth).
    anchors = torch.tensor([HAIR_ANCHOR, NECK_ANCHOR], device=dev, dtype=dt).expand(B, -1, -1)
    world = cam.rigid_transform(anchors, rot, g["translation"])
    px = cam.clip_to_pixels(cam.project(world, renderer.camera), (H, W))  # [B, 2, 2]
    ppd = renderer.camera.focal * W / 2.0 / (renderer.camera.distance - world[:, 0, 2])  # [B]

    def local(cx, cy, angle):  # pixel offsets in a frame rotated by ``angle`` (counter-clockwise)
        c, s = torch.cos(angle).view(B, 1, 1), torch.sin(angle).view(B, 1, 1)
        dx, dy = xs - cx.view(B, 1, 1), ys - cy.view(B, 1, 1)
        return c * dx - s * dy, s * dx + c * dy

    # 1. Background gradient.
    ang = scene["bg_gradient_angle"].view(B, 1, 1)
    axis = -((ys / H - 0.5) * torch.cos(ang) + (xs / W - 0.5) * torch.sin(ang))  # + towards the top
    image = scene["background"].view(B, 3, 1, 1) + (scene["bg_gradient"].view(B, 1, 1) * axis)[:, None]

    # 2. Hair silhouette behind the head.
    vol = scene["hair_volume"].view(B, 1, 1)
    length = scene["hair_length"].view(B, 1, 1)
    a, b = local(px[:, 0, 0], px[:, 0, 1], roll)
    rx = ppd.view(B, 1, 1) * _SKULL_HALF_WIDTH * (1.0 + 0.2 * vol)
    ry_top = ppd.view(B, 1, 1) * _SKULL_HALF_HEIGHT * (1.03 + 0.2 * vol)
    ry_bot = rx * (0.45 + 1.5 * length)
    an = a / rx
    bn = torch.where(b < 0, b / ry_top, b / ry_bot)
    expo = torch.where(b < 0, torch.full_like(bn, 2.0), torch.full_like(bn, 3.0))
    r = (an.abs() ** expo + bn.abs() ** expo).clamp_min(1e-12) ** (1.0 / expo)
    hair_alpha = torch.sigmoid((1.0 - r) * rx.clamp_max(ry_top) / _EDGE_PX)[:, None]
    crown = int(fm.mean_shape[:, 1].argmax())
    rows = torch.arange(3 * crown, 3 * crown + 3, device=dev)
    hair_albedo = fm.mean_albedo[crown].to(dt) + g["reflectance"] @ fm.alb_basis[rows].T.to(dt)  # [B, 3]
    hair_n = _dome_normals(an.clamp(-1, 1), bn.clamp(-1, 1))
    strands = 1.0 + 0.06 * torch.sin(a * 1.3 + 2.0 * torch.sin(b * 0.15))[:, None]
    hair = hair_albedo.view(B, 3, 1, 1) * _irradiance(hair_n, g["illumination"]) * strands * 2.0 - 1.0
    image = image + hair_alpha * (hair - image)

    # 3. The face model.
    out = renderer(p, background=image)
    image = out.image

    # 4. Shirt and shoulders in front of the lower neck.
    u, v = local(px[:, 1, 0], px[:, 1, 1], 0.5 * roll)
    ppd1 = ppd.view(B, 1, 1)
    wn = _NECK_HALF_WIDTH * ppd1
    neckline = 0.32 * ppd1 * (1.0 - (u / wn) ** 2).clamp_min(0.0)
    slope = 0.25 * torch.nn.functional.softplus((u.abs() - wn) / 3.0) * 3.0
    top = neckline + slope  # shirt edge below the anchor, pixels (+ = lower)
    half = scene["shoulder_width"].view(B, 1, 1) * W / 2.0
    shirt_alpha = (torch.sigmoid((v - top) / _EDGE_PX) * torch.sigmoid((half - u.abs()) / _EDGE_PX))[:, None]
    un = (u / half).clamp(-1, 1)
    vn = ((v - top) / (0.6 * half)).clamp(0, 1) - 0.6
    shirt_n = _dome_normals(un, vn * 0.5, bulge=1.2)
    shirt = scene["shirt"].view(B, 3, 1, 1) * _irradiance(shirt_n, g["illumination"]) * 2.0 - 1.0
    image = (image + shirt_alpha * (shirt - image)).clamp(-1.0, 1.0)
    mask = out.mask * (shirt_alpha < 0.5).to(dt)
    return image, mask, out.landmarks
