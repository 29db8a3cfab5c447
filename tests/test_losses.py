"""stylerig.losses: the render loss (photometric + landmarks) and the prior, on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from stylerig import params
from stylerig.errors import InputError
from stylerig.losses import (
    PRIOR_WEIGHTS,
    face_mask,
    landmark_loss,
    photometric_loss,
    prior_loss,
    psnr_from_mse,
    render_loss,
)
from stylerig.render import FaceRenderer


def test_photometric_loss_is_the_masked_mse_per_sample() -> None:
    rendered = torch.zeros(2, 3, 4, 4)
    images = torch.full((2, 3, 4, 4), 0.2)
    images[1, 0] = 0.5  # sample 1: channel 0 off by 0.5, the others by 0.2
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1.0  # half the pixels count
    images[:, :, 2:] = 9.0  # outside the mask: ignored
    loss = photometric_loss(rendered, images, mask)
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(0.04)
    assert loss[1].item() == pytest.approx((0.25 + 0.04 + 0.04) / 3)
    assert photometric_loss(rendered, images, torch.zeros(2, 1, 4, 4)).tolist() == [0.0, 0.0]


def test_psnr_of_mse() -> None:
    assert psnr_from_mse(torch.tensor(0.01)).item() == pytest.approx(
        10 * math.log10(400), abs=1e-4
    )  # 26.02 dB
    assert psnr_from_mse(torch.tensor(4.0)).item() == pytest.approx(0.0, abs=1e-6)


def test_landmark_loss_is_in_units_of_the_width() -> None:
    target = torch.rand(3, 68, 2) * 128
    shifted = target + torch.tensor([1.28, 0.0])  # 1 % of a 128-pixel width
    loss = landmark_loss(shifted, target, 128)
    assert loss.shape == (3,)
    torch.testing.assert_close(100 * loss.sqrt(), torch.ones(3))  # RMSE 1 % of the width


def test_prior_loss_weights_sums_of_squares() -> None:
    p = params.zeros(2)
    p[0, params.LAYOUT["identity"]][:4] = 1.0  # 4 sd^2 of identity
    p[1, params.LAYOUT["expression"]][0] = 2.0  # 4 sd^2 of expression
    p[:, params.LAYOUT["rotation"]] = 5.0  # never regularised
    loss = prior_loss(p, {"identity": 0.5, "expression": 0.25})
    torch.testing.assert_close(loss, torch.tensor([2.0, 1.0]))
    want = torch.tensor([4 * PRIOR_WEIGHTS["identity"], 4 * PRIOR_WEIGHTS["expression"]])
    torch.testing.assert_close(prior_loss(p), want)
    with pytest.raises(InputError):
        prior_loss(p, {"rotation": 1.0})


def test_render_loss_is_zero_at_the_truth_and_grows_away(tiny_face) -> None:
    renderer = FaceRenderer(tiny_face, 24, backend="torch")
    p = params.zeros(2)
    p[:, params.LAYOUT["translation"]] = torch.tensor([0.0, 0.0, -2.0])
    p[1, params.LAYOUT["rotation"]] = torch.tensor([0.2, -0.1, 0.05])
    with torch.no_grad():
        truth = renderer(p)
    rl = render_loss(renderer, p, truth.image, truth.landmarks, land_weight=100.0)
    assert rl.total.shape == rl.photo.shape == rl.land.shape == (2,)
    assert rl.total.abs().max().item() < 1e-10
    assert rl.render is not None and rl.render.image.shape == (2, 3, 24, 24)

    moved = p.clone()
    moved[:, params.LAYOUT["translation"].start] += 0.1  # 0.1 dm sideways
    moved.requires_grad_(True)
    rl = render_loss(renderer, moved, truth.image, truth.landmarks, land_weight=100.0)
    assert (rl.land > 0).all() and (rl.photo > 0).all()
    torch.testing.assert_close(rl.total, rl.photo + 100.0 * rl.land)
    rl.mean().backward()
    assert moved.grad is not None and moved.grad[:, params.LAYOUT["translation"].start].abs().min() > 0


def test_render_loss_landmarks_only_skips_the_rasterizer(tiny_face) -> None:
    renderer = FaceRenderer(tiny_face, 24, backend="torch")
    p = params.zeros(1)
    p[:, params.LAYOUT["translation"]] = torch.tensor([0.0, 0.0, -2.0])
    target = renderer.landmarks(p) + 0.24  # 1 % of the width in x and y
    rl = render_loss(renderer, p, None, target)
    assert rl.render is None and rl.photo.item() == 0.0
    assert rl.land.item() == pytest.approx(2 * 0.01**2, rel=1e-4)


def test_face_mask_is_coverage_times_skin(tiny_face) -> None:
    renderer = FaceRenderer(tiny_face, 24, backend="torch")
    p = params.zeros(1)
    p[:, params.LAYOUT["translation"]] = torch.tensor([0.0, 0.0, -2.0])
    out = renderer(p)
    m = face_mask(out)
    assert m.shape == (1, 1, 24, 24) and not m.requires_grad
    assert (m <= out.mask).all() and m.sum() > 0 and m.sum() < out.mask.sum()  # the back half is not skin


def test_render_loss_rejects_bad_shapes(tiny_face) -> None:
    renderer = FaceRenderer(tiny_face, 24, backend="torch")
    p = params.zeros(2)
    with pytest.raises(InputError):
        render_loss(renderer, p, torch.zeros(2, 3, 16, 16), None)  # not the renderer's size
    with pytest.raises(InputError):
        render_loss(renderer, p, None, torch.zeros(3, 68, 2))  # batch mismatch
    with pytest.raises(InputError):
        render_loss(renderer, p, None, None)
