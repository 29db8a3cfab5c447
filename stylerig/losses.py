"""The losses of DFR and RigNet: the render loss (photometric + landmarks) and the statistical prior.

``L_render(I, p) = L_photo(I, p) + land_weight * L_land(I, p)`` (StyleRig eq. 2, ``method.md`` §2), with
the normalisations chosen so that every number means something a person can read:

* **photometric** ``L_photo``: the mean squared difference between the image ``I`` and the render
  ``R(p)`` over the pixels of the rendered **face mask** ``M`` and the 3 channels, in the images' [-1, 1]
  units. So ``10 log10(4 / L_photo)`` is the masked PSNR (peak-to-peak 2) of the reconstruction: 0.01 is
  26 dB. ``M`` (:func:`face_mask`) is the rendered mesh's coverage times the face model's interpolated
  skin mask: the paper's M is the coverage of the Basel *face* mesh, which ends at the hairline, ears
  and chin; a head-and-neck model (the built-in one) also covers scalp, ears, eyes and neck, which
  hair, collars and shirts hide in portraits (on the built-in world the true parameters reach 21 dB
  over the whole head but 29 dB over the skin). The mask carries no gradient (the face's outline moves
  through the landmark term).
* **landmarks** ``L_land``: the mean over the 68 points of the squared distance between the image's
  landmarks and the projected model landmarks, in units of the image **width**. So
  ``100 sqrt(L_land)`` is the landmark RMSE in percent of the width: 1e-4 is 1 %.
* **prior** ``E_reg`` (:func:`prior_loss`): ``sum_g w_g * ||x_g||^2`` over the identity, expression
  and reflectance coefficients (in standard deviations: the negative log-density of the model's own
  Gaussian, up to a factor and a constant).

Default weights and why (tuned on the built-in world with ``stylerig fit-dfr``, :mod:`stylerig.training.dfr`):

* :data:`LAND_WEIGHT` = 100: a landmark RMSE of 1 % of the width then costs as much as a photometric
  MSE of 0.01 (26 dB). The landmarks pin the pose and the face's outline (the photometric term alone has
  flat spots where the face is uniformly lit skin); the photometric term fixes albedo and light and
  refines the shape.
* :data:`PRIOR_WEIGHTS` = 1e-4 per squared standard deviation in every group: moving one coefficient by
  1 sd moves the landmarks by ~1-2 % of the width (a landmark cost of 0.01-0.04) or the skin colour by
  ~0.05-0.1 (a photometric cost of 0.003-0.01), so the prior shrinks what the images show by a few
  percent at most, while it keeps what they barely show (the many components a face model has beyond
  the few a face uses) near the mean, and makes a face of absurd size (identity tens of sd) expensive:
  without it the depth-versus-size ambiguity of a narrow camera lets a network push the head out of
  the view frustum, where the photometric term vanishes.

No function here does I/O; all tensors stay on the device and dtype they come in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import InputError
from stylerig.render.face_renderer import FaceRenderer, RenderOutput

__all__ = [
    "LAND_WEIGHT",
    "PRIOR_GROUPS",
    "PRIOR_WEIGHTS",
    "RenderLoss",
    "face_mask",
    "landmark_loss",
    "photometric_loss",
    "light_prior_loss",
    "prior_loss",
    "psnr_from_mse",
    "render_loss",
]

#: Default weight of the landmark term (see the module docstring).
LAND_WEIGHT: float = 100.0
#: The parameter groups the statistical prior regularises.
PRIOR_GROUPS: tuple[str, ...] = ("identity", "expression", "reflectance")
#: Default prior weights per group, per squared standard deviation (see the module docstring).
PRIOR_WEIGHTS: dict[str, float] = {"identity": 1e-4, "expression": 1e-4, "reflectance": 1e-4}


@dataclass(frozen=True)
class RenderLoss:
    """The render loss of a batch, per sample (so callers can weight, mask or log the parts).

    Attributes:
        total: float [B] = ``photo + land_weight * land``.
        photo: float [B] photometric MSE inside the face mask (:func:`face_mask`), in [-1, 1] units
            (0 when no images were given or ``photo_weight`` was 0: nothing was rendered).
        land: float [B] mean squared landmark distance in units of the image width.
        render: the :class:`~stylerig.render.RenderOutput` (None when only landmarks were needed).
    """

    total: torch.Tensor
    photo: torch.Tensor
    land: torch.Tensor
    render: RenderOutput | None

    def mean(self) -> torch.Tensor:
        """The batch mean of ``total`` (a scalar to ``backward()``)."""
        return self.total.mean()


def face_mask(render: RenderOutput) -> torch.Tensor:
    """The photometric face mask of a render: coverage x interpolated skin mask, detached.

    Args:
        render: a :class:`~stylerig.render.RenderOutput`.

    Returns:
        float [B, 1, H, W] in [0, 1] (1 on the facial skin, soft at the skin region's border, 0 off the
        mesh; for a model whose skin mask is all True, the plain coverage mask).
    """
    return (render.mask * render.skin.clamp(0.0, 1.0)).detach()


def photometric_loss(rendered: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean squared error per sample.

    Args:
        rendered: float [B, 3, H, W] in [-1, 1] (the render ``R(p)``).
        images: float [B, 3, H, W] in [-1, 1] (the target ``I``), same dtype and device.
        mask: float [B, 1, H, W] in [0, 1] (1 = pixel counts); not differentiated.

    Returns:
        float [B]: ``sum(M (I - R)^2) / (3 sum(M))`` (0 for an empty mask), in [-1, 1] units squared.
    """
    se = (rendered - images).square().sum(1, keepdim=True)  # [B, 1, H, W]
    m = mask.detach()
    return (se * m).flatten(1).sum(1) / (3.0 * m.flatten(1).sum(1).clamp_min(1.0))


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, width: float) -> torch.Tensor:
    """Mean squared landmark distance per sample, in units of the image width.

    Args:
        predicted: float [B, 68, 2] pixels (x right, y down).
        target: float [B, 68, 2] pixels, same convention, dtype and device.
        width: image width in pixels.

    Returns:
        float [B]: ``mean_k |predicted_k - target_k|^2 / width^2`` (``100 sqrt(.)`` = RMSE in % of width).
    """
    return (predicted - target).square().sum(-1).mean(-1) / float(width) ** 2


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of a mean squared error in [-1, 1] units (peak-to-peak 2): ``10 log10(4 / mse)``."""
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


def render_loss(
    renderer: FaceRenderer,
    p: torch.Tensor,
    images: torch.Tensor | None,
    landmarks: torch.Tensor | None,
    *,
    land_weight: float = LAND_WEIGHT,
    photo_weight: float = 1.0,
) -> RenderLoss:
    """``L_render(I, p)`` per sample: masked photometric term + ``land_weight`` x landmark term.

    RigNet reuses this unchanged: its ``L_edit`` and ``L_consist`` are this loss on mixed parameter
    vectors (:func:`stylerig.params.replace`).

    Args:
        renderer: the :class:`~stylerig.render.FaceRenderer` (its resolution must be the images').
        p: float [B, 257] face parameters (:mod:`stylerig.params`), on the renderer's device and dtype.
        images: float [B, 3, H, W] in [-1, 1], the target images ``I``; or None for a landmark-only loss
            (then ``photo`` is 0 and nothing is rasterized).
        landmarks: float [B, 68, 2] target landmarks of ``I`` in pixels of the images (x right, y down,
            pixel centres at +0.5); or None for a photometric-only loss.
        land_weight: weight of the landmark term (default :data:`LAND_WEIGHT`).
        photo_weight: weight of the photometric term; 0 skips the rasterizer (a cheap landmark-only
            loss, ~100x faster on a CPU).

    Returns:
        :class:`RenderLoss` with per-sample ``total``, ``photo``, ``land`` and the render.

    Raises:
        InputError: shapes that do not match the renderer or each other, or neither target given.
    """
    sizes: dict[str, int] = {}
    check_tensor(p, "p", ["B", params.NUM_PARAMS], sizes=sizes)
    H, W = renderer.resolution
    if images is None and landmarks is None:
        raise InputError("render_loss needs images, landmarks or both")
    use_photo = images is not None and photo_weight != 0.0
    use_land = landmarks is not None and land_weight != 0.0
    if images is not None:
        check_tensor(images, "images", ["B", 3, H, W], sizes=sizes)
    if landmarks is not None:
        check_tensor(landmarks, "landmarks", ["B", 68, 2], sizes=sizes)
    zero = p.new_zeros(p.shape[0])
    out: RenderOutput | None = None
    if use_photo:
        out = renderer(p)
        photo = photometric_loss(out.image, images, face_mask(out))  # type: ignore[arg-type]
        pred_lm = out.landmarks
    else:
        photo = zero
        pred_lm = renderer.landmarks(p) if use_land else None
    land = landmark_loss(pred_lm, landmarks, W) if use_land else zero  # type: ignore[arg-type]
    total = photo_weight * photo + land_weight * land
    return RenderLoss(total=total, photo=photo, land=land, render=out)


def prior_loss(p: torch.Tensor, weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """The statistical prior ``E_reg`` per sample: ``sum_g w_g * sum_k x_gk^2``.

    Args:
        p: float [B, 257] face parameters; the identity, expression and reflectance coefficients are in
            standard deviations of the face model.
        weights: group -> weight, a subset of :data:`PRIOR_GROUPS` (default :data:`PRIOR_WEIGHTS`;
            a group left out is not regularised).

    Returns:
        float [B], dimensionless (one coefficient at 1 sd costs its group's weight).
    """
    check_tensor(p, "p", [None, params.NUM_PARAMS])
    weights = PRIOR_WEIGHTS if weights is None else weights
    unknown = sorted(set(weights) - set(PRIOR_GROUPS))
    if unknown:
        raise InputError(f"prior weights for unknown group(s) {unknown}; expected {', '.join(PRIOR_GROUPS)}")
    total = p.new_zeros(p.shape[0])
    for group, w in weights.items():
        if w:
            total = total + float(w) * params.get(p, group).square().sum(-1)
    return total


def light_prior_loss(
    p: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, spread: torch.Tensor
) -> torch.Tensor:
    """A Gaussian prior on the light inside a light model: ``sum_k (b_kᵀ (L - mean) / s_k)^2`` per sample.

    The light counterpart of :func:`prior_loss` (one coefficient at 1 sd costs 1 before the weight). Not
    in the paper: DFR's light model (:mod:`stylerig.dfr`) confines the light to a subspace, and this
    prior says how far along each of its directions plausible lights go. On the built-in world it keeps
    F from reading a dark skin as light from above (``docs/rignet.md``, session 13).

    Args:
        p: float [B, 257] face parameters (illumination: 27 SH coefficients).
        mean: float [27] the prior's mean light. basis: float [27, k] the model's directions.
        spread: float [k] the prior's standard deviation along each (:func:`stylerig.dfr.light_spread`).

    Returns:
        float [B], dimensionless.
    """
    check_tensor(p, "p", [None, params.NUM_PARAMS])
    c = (params.get(p, "illumination") - mean.to(p)) @ basis.to(p)
    return (c / spread.to(p)).square().sum(-1)
