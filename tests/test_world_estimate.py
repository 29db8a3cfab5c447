"""The built-in world's independent estimator (analysis-by-synthesis image -> p)."""

from __future__ import annotations

import math

import pytest
import torch

from stylerig import params
from stylerig.errors import InputError
from stylerig.face import load_face_model
from stylerig.render import FaceRenderer
from stylerig.worlds import factors_to_world, render_portrait, sample_factors
from stylerig.worlds.estimate import EstimateResult, estimate_factors, estimate_params

# Small settings (the defaults are larger): 3 restarts x 24 coarse steps at 64 px + 36 fine steps.
SMALL = {"steps": 60, "restarts": 3}
#: Pose tolerance of the small fit on clean renders, degrees per angle (measured: <= 0.6 deg).
POSE_TOL_DEG = 1.5


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer(load_face_model(), 128, backend="torch")


@pytest.fixture(scope="module")
def truth_and_fit(renderer: FaceRenderer) -> tuple[torch.Tensor, torch.Tensor, EstimateResult]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        z = sample_factors([2_000_100, 2_000_101, 2_000_102])
        p, scene = factors_to_world(z)
        with torch.no_grad():
            images = render_portrait(renderer, p, scene)[0]
        return p, images, estimate_factors(images, renderer=renderer, **SMALL)
    finally:
        torch.set_num_threads(threads)


def test_fit_recovers_pose_of_renders(truth_and_fit) -> None:
    p_true, _, res = truth_and_fit
    assert res.factors.shape == (3, 38) and res.p.shape == (3, params.NUM_PARAMS) and res.loss.shape == (3,)
    assert torch.allclose(res.p, factors_to_world(res.factors)[0])
    err = (params.get(res.p, "rotation") - params.get(p_true, "rotation")).abs() * 180.0 / math.pi
    print("pose error (deg)", err.tolist())
    assert err.max() < POSE_TOL_DEG, err
    assert (res.loss < 0.05).all(), res.loss


def test_result_is_deterministic(truth_and_fit, renderer: FaceRenderer) -> None:
    _, images, _ = truth_and_fit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = {"steps": 10, "restarts": 2, "renderer": renderer}
        a = estimate_factors(images[:1], **kw)
        b = estimate_factors(images[:1], **kw)
        c = estimate_params(images[:1], **kw)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.factors, b.factors) and torch.equal(a.loss, b.loss) and torch.equal(a.p, c)


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(2, 3, 64, 64),
        torch.zeros(3, 128, 128),
        torch.zeros(1, 1, 128, 128),
        torch.full((1, 3, 128, 128), float("nan")),
        torch.zeros(1, 3, 128, 128, dtype=torch.int64),
        [[0.0]],
    ],
)
def test_bad_images_raise(images) -> None:
    with pytest.raises(InputError):
        estimate_factors(images, steps=1, restarts=1)


def test_bad_settings_raise() -> None:
    images = torch.zeros(1, 3, 128, 128)
    for kw in (
        {"steps": 0},
        {"restarts": 0},
        {"lr": -1.0},
        {"coarse_resolution": 48},
        {"coarse_fraction": 2.0},
    ):
        with pytest.raises(InputError):
            estimate_factors(images, **kw)
