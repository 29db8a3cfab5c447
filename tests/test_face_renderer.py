"""FaceRenderer: shapes, conventions (pose signs, pixel frame), gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from stylerig import params
from stylerig.errors import InputError
from stylerig.render import Camera, FaceRenderer, rotation_matrix


def _p(batch=1, **groups):
    p = params.zeros(batch)
    for g, v in groups.items():
        p = params.replace(p, g, torch.as_tensor(v, dtype=torch.float32).expand(batch, -1))
    return p


def nose_pixel(renderer, p):
    """Pixel position of the front-most model vertex (the nose tip)."""
    fm = renderer.face_model
    tip = int(fm.mean_shape[:, 2].argmax())
    from stylerig.render.camera import clip_to_pixels

    return clip_to_pixels(renderer(p).clip[:, tip : tip + 1], renderer.resolution)[0, 0]


def test_outputs_shapes_and_ranges(tiny_face):
    r = FaceRenderer(tiny_face, resolution=(48, 64), backend="torch")
    out = r(_p(2))
    assert out.image.shape == (2, 3, 48, 64)
    assert out.mask.shape == out.skin.shape == (2, 1, 48, 64)
    assert out.landmarks.shape == (2, 68, 2)
    assert out.vertices.shape == (2, tiny_face.num_vertices, 3)
    face = out.mask.bool().expand_as(out.image)
    assert face.any() and (~face).any()
    assert (out.image[~face] == -1).all()  # black background
    assert out.image[face].min() > -1 and out.image[face].max() <= 1
    assert ((out.skin > 0) <= out.mask.bool()).all()
    assert all(not t.requires_grad for t in vars(out.detach()).values())


def test_landmarks_fast_path_equals_full_render(tiny_face):
    r = FaceRenderer(tiny_face, 64, backend="torch")
    p = torch.randn(3, 257) * 0.3
    torch.testing.assert_close(r.landmarks(p), r(p).landmarks)


def test_pixel_frame_and_centre(tiny_face):
    """The model origin projects to the image centre; +x world is image right, +y world is image up."""
    r = FaceRenderer(tiny_face, 64, backend="torch")
    from stylerig.render.camera import clip_to_pixels, project

    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]])
    px = clip_to_pixels(project(pts, r.camera), (64, 64))[0]
    torch.testing.assert_close(px[0], torch.tensor([32.0, 32.0]))
    f = r.camera.focal_px(64)
    torch.testing.assert_close(px[1], torch.tensor([32.0 + f * 0.1 / 10.0, 32.0]))
    torch.testing.assert_close(px[2], torch.tensor([32.0, 32.0 - f * 0.1 / 10.0]))
    assert math.isclose(Camera().fov_deg, 2 * math.degrees(math.atan(112 / 1015)), rel_tol=1e-9)


@pytest.mark.parametrize(
    "group, value, axis, sign",
    [
        ("rotation", [0.3, 0.0, 0.0], 0, +1),  # +yaw: nose to image right
        ("rotation", [0.0, 0.3, 0.0], 1, +1),  # +pitch: nose down
        ("translation", [0.1, 0.0, 0.0], 0, +1),  # +x: right
        ("translation", [0.0, 0.1, 0.0], 1, -1),  # +y: up
    ],
)
def test_pose_sign_conventions(tiny_face, group, value, axis, sign):
    r = FaceRenderer(tiny_face, 64, backend="torch")
    moved = nose_pixel(r, _p(**{group: value})) - nose_pixel(r, _p())
    assert sign * moved[axis] > 0.5
    assert abs(moved[1 - axis]) < abs(moved[axis]) / 3


def test_roll_tilts_counter_clockwise():
    R = rotation_matrix(torch.tensor([[0.0, 0.0, 0.2]]))[0]
    assert R[1, 0] > 0  # the subject's left (+x) goes up (+y)
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-6, rtol=0)


def test_gradients_reach_every_group(tiny_face):
    r = FaceRenderer(tiny_face, 48, backend="torch")
    p = (torch.randn(2, 257) * 0.1).requires_grad_(True)
    out = r(p)
    target = torch.rand_like(out.image) * 2 - 1
    loss = ((out.image - target) ** 2 * out.mask).mean() + (out.landmarks**2).mean() * 1e-4
    loss.backward()
    for g in params.GROUPS:
        used = tiny_face.num_components.get(g, params.SIZES[g])
        assert params.get(p.grad, g)[:, :used].abs().sum() > 0, g


def test_float64_and_module_moves(tiny_face):
    r = FaceRenderer(tiny_face, 32, backend="torch")
    with pytest.raises(InputError, match="float64"):
        r(params.zeros(1, dtype=torch.float64))  # no silent cast: one clear error
    with pytest.raises(InputError, match="float64"):
        r.landmarks(params.zeros(1, dtype=torch.float64))
    with pytest.raises(InputError):
        tiny_face(params.zeros(1, dtype=torch.float64))
    r = r.double()
    out = r(params.zeros(1, dtype=torch.float64))
    assert out.image.dtype == torch.float64 and r.face_model.mean_shape.dtype == torch.float64


def test_non_square_images_keep_square_pixels(tiny_face):
    r = FaceRenderer(tiny_face, (40, 80), backend="torch")
    from stylerig.render.camera import clip_to_pixels, project

    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]])
    px = clip_to_pixels(project(pts, r.camera, r._aspect), (40, 80))[0]
    dx = (px[1] - px[0]).abs().sum()
    dy = (px[2] - px[0]).abs().sum()
    torch.testing.assert_close(dx, dy)  # 0.1 dm is as many pixels across as down
    torch.testing.assert_close(px[0], torch.tensor([40.0, 20.0]))
    lm = r.landmarks(params.zeros(1))
    torch.testing.assert_close(lm, r(params.zeros(1)).landmarks)


def test_background_is_composited_and_checked(tiny_face):
    r = FaceRenderer(tiny_face, 32, backend="torch")
    p = params.zeros(2)
    bg = torch.full((1, 3, 32, 32), 0.25)
    out = r(p, background=bg)
    empty = out.mask.expand_as(out.image) == 0
    assert (out.image[empty] == 0.25).all()
    with pytest.raises(InputError, match="batch"):
        r(p, background=torch.zeros(3, 3, 32, 32))
    with pytest.raises(InputError, match="NaN"):
        r(p, background=torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="float64"):
        r(p, background=bg.double())


@pytest.mark.parametrize(
    "p, msg",
    [
        (torch.zeros(2, 256), "shape"),
        (torch.zeros(257), "shape"),
        (torch.full((1, 257), float("nan")), "NaN"),
        (torch.zeros(1, 257, dtype=torch.int64), "dtype"),
    ],
)
def test_bad_parameters(tiny_face, p, msg):
    r = FaceRenderer(tiny_face, 32, backend="torch")
    with pytest.raises(InputError, match=msg):
        r(p)
    with pytest.raises(InputError, match=msg):
        r.landmarks(p)
