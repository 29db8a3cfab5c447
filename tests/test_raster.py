"""The torch rasterizer against brute force, perspective-correct barycentrics, gradients, input checks."""

from __future__ import annotations

import pytest
import torch

from stylerig.errors import InputError
from stylerig.render import camera as cam
from stylerig.render import raster_torch
from stylerig.render.ops import interpolate, rasterize
from stylerig.render.shading import sh_shade, vertex_normals


def brute_force(
    pos: torch.Tensor, tri: torch.Tensor, res: tuple[int, int], eps: float = 1e-5, eps_px: float | None = None
):
    """Dense float64 reference: every pixel centre against every triangle.

    Returns (ids int64 [B, H, W] with -1 = empty, depth float64 [B, H, W], ambiguous bool [B, H, W]).
    A pixel is ambiguous (an "exact tie" up to rounding) when a triangle has its centre within ``eps``
    of an edge (in barycentric units; in pixels when ``eps_px`` is given) and could be the nearest, or
    when the two nearest covering triangles are within ``eps`` in depth.
    """
    H, W = res
    p = pos.double()
    sx = (p[..., 0] / p[..., 3] + 1) * W / 2
    sy = (p[..., 1] / p[..., 3] + 1) * H / 2
    sz = p[..., 2] / p[..., 3]
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij"
    )
    cx, cy = xs.reshape(1, -1, 1), ys.reshape(1, -1, 1)
    X, Y, Z = sx[:, tri], sy[:, tri], sz[:, tri]  # [B, F, 3]
    X, Y, Z = (t.unsqueeze(1) for t in (X, Y, Z))  # [B, 1, F, 3]
    area = (X[..., 1] - X[..., 0]) * (Y[..., 2] - Y[..., 0]) - (Y[..., 1] - Y[..., 0]) * (
        X[..., 2] - X[..., 0]
    )
    b0 = ((X[..., 2] - X[..., 1]) * (cy - Y[..., 1]) - (Y[..., 2] - Y[..., 1]) * (cx - X[..., 1])) / area
    b1 = ((X[..., 0] - X[..., 2]) * (cy - Y[..., 2]) - (Y[..., 0] - Y[..., 2]) * (cx - X[..., 2])) / area
    b2 = 1 - b0 - b1
    d = b0 * Z[..., 0] + b1 * Z[..., 1] + b2 * Z[..., 2]
    if eps_px is None:
        bmin = torch.minimum(torch.minimum(b0, b1), b2)
    else:  # signed distances (pixels) to the three edges: b_i * |2 area| / |edge opposite vertex i|
        length = [
            torch.hypot(X[..., j] - X[..., k], Y[..., j] - Y[..., k]) for j, k in ((1, 2), (2, 0), (0, 1))
        ]
        dist = [b * area.abs() / n.clamp_min(1e-12) for b, n in zip((b0, b1, b2), length, strict=True)]
        bmin = torch.minimum(torch.minimum(dist[0], dist[1]), dist[2]) * (eps / eps_px)
    valid_depth = (d >= -1) & (d <= 1) & (area != 0)
    strict = (bmin > eps) & valid_depth
    loose = (bmin > -eps) & valid_depth
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    ds = torch.where(strict, d, inf)
    dl = torch.where(loose, d, inf)
    top2 = ds.topk(2, dim=-1, largest=False)
    best_d, best_id = top2.values[..., 0], top2.indices[..., 0]
    near_edge = loose & ~strict & (dl <= best_d.unsqueeze(-1) + eps)
    ambiguous = near_edge.any(-1) | ((top2.values[..., 1] - best_d) < eps)
    ids = torch.where(torch.isinf(best_d), torch.full_like(best_id, -1), best_id)
    B = pos.shape[0]
    return ids.view(B, H, W), best_d.view(B, H, W), ambiguous.view(B, H, W)


def random_scene(
    B: int, F: int, big: int, seed: int, near: float = 1.0, far: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """F random small/medium triangles plus ``big`` large ones, overlapping, in perspective (depths 1.25-4.75
    from the camera; a ``near``/``far`` inside that range clips some triangles in depth)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(B, F, 1, 3, generator=g) * 2 - 1
    size = torch.rand(B, F, 1, 1, generator=g) * 0.5 + 0.02
    size[:, :big] = 2.5  # larger than the screen
    offsets = (torch.rand(B, F, 3, 3, generator=g) * 2 - 1) * torch.tensor([1.0, 1.0, 0.3])
    world = (centres + size * offsets).reshape(B, 3 * F, 3)
    pos = cam.project(world, cam.Camera(focal=2.0, distance=3.0, near=near, far=far))
    tri = torch.arange(3 * F).view(F, 3)
    return pos, tri


@pytest.mark.parametrize("res", [(32, 32), (24, 40)])
@pytest.mark.parametrize("seed", [0, 1])
def test_id_map_matches_brute_force(res, seed):
    pos, tri = random_scene(B=2, F=100, big=3, seed=seed)
    rast = rasterize(pos, tri.int(), res, backend="torch")
    ids = rast[..., 3].long() - 1
    ref_ids, ref_d, amb = brute_force(pos, tri, res)
    assert (ref_ids >= 0).float().mean() > 0.4  # meaningful coverage
    assert amb.float().mean() < 0.05  # ties are rare, so the comparison is meaningful
    mismatch = (ids != ref_ids) & ~amb
    assert int(mismatch.sum()) == 0
    agree = (ids == ref_ids) & (ids >= 0)
    torch.testing.assert_close(rast[..., 2][agree].double(), ref_d[agree], atol=2e-5, rtol=0)
    assert (rast[ids < 0] == 0).all()  # empty pixels are all zero, as in nvdiffrast


def test_triangles_crossing_the_near_and_far_planes_are_clipped_per_pixel():
    """Triangles partly outside -1 <= z/w <= 1 keep only their pixels inside the range (the fast grids skip
    the per-pixel depth test for triangles entirely inside it, so this routes through the tested path)."""
    pos, tri = random_scene(B=2, F=100, big=10, seed=4, near=2.5, far=3.5)
    zw = pos[..., 2] / pos[..., 3]
    corner = zw[:, tri].abs() > 1  # [B, F, 3]
    straddles = corner.any(-1) & ~corner.all(-1)  # [B, F]
    rast = rasterize(pos, tri.int(), (32, 32), backend="torch")
    ids = rast[..., 3].long() - 1
    ref_ids, _, amb = brute_force(pos, tri, (32, 32))
    won = torch.gather(straddles, 1, ref_ids.clamp(min=0).view(2, -1)) & (ref_ids.view(2, -1) >= 0)
    assert int(won.sum()) > 300  # many pixels belong to a clipped triangle: the comparison is meaningful
    assert int(((ids != ref_ids) & ~amb).sum()) == 0


def test_large_boxes_chunked_equal_unchunked(monkeypatch):
    pos, tri = random_scene(B=2, F=20, big=5, seed=3)
    ref = rasterize(pos, tri, (48, 48), backend="torch")
    monkeypatch.setattr(raster_torch, "_CHUNK", 97)  # force many chunks, split mid-triangle
    out = rasterize(pos, tri, (48, 48), backend="torch")
    assert torch.equal(out, ref)


def test_huge_triangle_bounded_memory(monkeypatch):
    """A triangle far larger than the screen is clipped to the screen box; chunks bound memory."""
    pos = torch.tensor([[[-50.0, -50.0, 0.0, 1.0], [50.0, -50.0, 0.0, 1.0], [0.0, 60.0, 0.0, 1.0]]])
    monkeypatch.setattr(raster_torch, "_CHUNK", 1000)
    rast = rasterize(pos, torch.tensor([[0, 1, 2]]), (64, 64), backend="torch")
    assert (rast[..., 3] == 1).all()


def test_barycentrics_are_perspective_correct():
    """Interpolating view-space positions gives the point where the pixel ray meets the triangle."""
    camera = cam.Camera(focal=1.5, distance=4.0, near=0.5, far=10.0)
    world = torch.tensor([[[-1.0, -1.0, 1.5], [1.5, -0.5, -2.0], [0.0, 1.5, 0.0]]], dtype=torch.float64)
    pos = cam.project(world, camera)
    H = W = 32
    rast = rasterize(pos, torch.tensor([[0, 1, 2]]), (H, W), backend="torch")
    hit, _ = interpolate(world, rast, torch.tensor([[0, 1, 2]]), backend="torch")
    cov = rast[0, ..., 3] > 0
    assert cov.sum() > 100
    # The ray through pixel (x, y) centre: direction from the camera at (0, 0, d).
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij"
    )
    ndc_x = xs / W * 2 - 1
    ndc_y = -(ys / H * 2 - 1)  # projection flips y
    d = torch.stack([ndc_x / camera.focal, ndc_y / camera.focal, -torch.ones_like(ndc_x)], -1).double()
    o = torch.tensor([0.0, 0.0, camera.distance], dtype=torch.float64)
    v0, v1, v2 = world[0]
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    t = ((v0 - o) @ n) / (d @ n)
    expect = o + t[..., None] * d
    torch.testing.assert_close(hit[0][cov], expect[cov], atol=1e-9, rtol=1e-9)
    # Screen-linear interpolation (what a missing perspective correction gives) is far off here,
    # so the check has teeth: interpolate with the projected (x/w, y/w) as attribute instead.
    screen = pos[..., :2] / pos[..., 3:]
    lin, _ = interpolate(screen, rast, torch.tensor([[0, 1, 2]]), backend="torch")
    ndc = torch.stack([ndc_x, -ndc_y], -1)
    assert (lin[0][cov] - ndc[cov]).abs().max() > 1e-3


def test_gradcheck_raster_interpolate_shading():
    """float64 gradients of SH-shaded, rasterized, interpolated colour w.r.t. geometry, albedo and light."""
    g = torch.Generator().manual_seed(5)
    # A small bumpy grid facing the camera.
    n = 4
    ys, xs = torch.meshgrid(torch.linspace(-0.6, 0.6, n), torch.linspace(-0.6, 0.6, n), indexing="ij")
    zs = 0.1 * torch.rand(n, n, generator=g)
    xs = xs + 0.07 * torch.rand(n, n, generator=g)  # keep pixel centres off the edges
    ys = ys + 0.07 * torch.rand(n, n, generator=g)
    verts = torch.stack([xs, ys, zs], -1).reshape(1, -1, 3).double()
    quads = [
        (i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j)
        for i in range(n - 1)
        for j in range(n - 1)
    ]
    tri = torch.tensor([[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads])
    camera = cam.Camera(focal=4.0, distance=3.0, near=1.0, far=6.0)
    albedo = torch.rand(1, n * n, 3, generator=g, dtype=torch.float64)
    light = 0.3 * torch.randn(1, 27, generator=g, dtype=torch.float64)
    rast0 = rasterize(cam.project(verts, camera), tri, (12, 12), backend="torch")

    def render(v, a, lgt):
        normals = vertex_normals(v, tri)
        col = sh_shade(a, normals, lgt)
        rast = rasterize(cam.project(v, camera), tri, (12, 12), backend="torch")
        assert torch.equal(rast[..., 3], rast0[..., 3])  # coverage fixed under the tiny perturbations
        return interpolate(col, rast, tri, backend="torch")[0]

    inputs = (verts.clone().requires_grad_(True), albedo.requires_grad_(True), light.requires_grad_(True))
    assert (rast0[..., 3] > 0).sum() > 50
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_camera():
    angles = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    pts = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    f = lambda a, x, tt: cam.clip_to_pixels(cam.project(cam.rigid_transform(x, a, tt)), (64, 48))  # noqa: E731
    assert torch.autograd.gradcheck(f, (angles, pts, t))


def test_interpolate_broadcast_and_empty():
    pos, tri = random_scene(B=2, F=10, big=0, seed=1)
    rast = rasterize(pos, tri, (16, 16), backend="torch")
    attr = torch.ones(pos.shape[1], 2)
    out_shared, da = interpolate(attr, rast, tri, backend="torch")
    out_batched, _ = interpolate(attr.expand(2, -1, -1), rast, tri, backend="torch")
    assert da is None
    cov = rast[..., 3] > 0
    torch.testing.assert_close(out_shared[cov], torch.ones_like(out_shared[cov]))
    assert (out_shared[~cov] == 0).all()
    torch.testing.assert_close(out_shared, out_batched)


@pytest.mark.parametrize(
    "pos, tri, res, msg",
    [
        (torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), (8, 8), "pos must have shape"),
        (torch.zeros(1, 3, 4, dtype=torch.int32), torch.tensor([[0, 1, 2]]), (8, 8), "dtype"),
        (torch.zeros(1, 3, 4), torch.tensor([[0, 1, 3]]), (8, 8), "outside"),
        (torch.zeros(1, 3, 4), torch.tensor([[0.0, 1.0, 2.0]]), (8, 8), "dtype"),
        (torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), (0, 8), "resolution"),
    ],
)
def test_bad_input_raises_input_error(pos, tri, res, msg):
    with pytest.raises(InputError, match=msg):
        rasterize(pos, tri, res, backend="torch")


def test_nvdiffrast_backend_refused_on_cpu():
    from stylerig.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError):
        rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), (8, 8), backend="nvdiffrast")


def test_brute_force_pixel_tolerance_flags_the_pixels_near_edges():
    # One triangle, pixel centres at x + 0.5: its left edge x = 4.03 passes 0.03 px from the centres
    # of column 3 (x = 3.5 is 0.53 away) and column 4 (4.5 is 0.47 away).
    # (A second, far triangle: the reference takes the two nearest.)
    corners = [[4.03, 0.0], [20.0, 0.0], [4.03, 30.0], [28.0, 28.0], [31.0, 28.0], [28.0, 31.0]]
    pos = torch.tensor([[[x / 16.0 - 1.0, y / 16.0 - 1.0, 0.0, 1.0] for x, y in corners]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ids, _, amb = brute_force(pos, tri, (32, 32), eps_px=0.5)
    assert amb[0, 10, 4] and not amb[0, 10, 3] and not amb[0, 10, 8]
    ids, _, amb = brute_force(pos, tri, (32, 32), eps_px=0.4)
    assert not amb[0, 10, 4] and ids[0, 10, 4] == 0 and ids[0, 10, 3] == -1


#: nvdiffrast (cudaraster) snaps vertices to 1/16 pixel (``CR_SUBPIXEL_LOG2 = 4``) before its coverage
#: test: an edge moves by up to 1/32 px in x and y, so a pixel centre closer than that to an edge can be
#: given to the neighbouring triangle. The first run on a GPU (H200, docs/gpu.md) found 0.63 % of this
#: scene's pixels so; on a 70,789-triangle face mesh at 224 px, 5 % of the covered ones.
NVDIFFRAST_SNAP_PX = 1.0 / 16.0


@pytest.mark.cuda
def test_matches_nvdiffrast_on_cuda():
    """Every pixel whose triangle the snapping cannot change has nvdiffrast's id, (u, v, z/w) and
    interpolated attributes; every disagreement is a pixel within 1/16 px of an edge (or a depth tie)."""
    pytest.importorskip("nvdiffrast.torch")
    pos, tri = random_scene(B=2, F=200, big=3, seed=7)
    _, _, ambiguous = brute_force(pos, tri, (64, 64), eps=1e-4, eps_px=NVDIFFRAST_SNAP_PX)
    pos, tri = pos.cuda().float().contiguous(), tri.cuda().int()
    ours = rasterize(pos, tri, (64, 64), backend="torch")
    ref = rasterize(pos, tri, (64, 64), backend="nvdiffrast")
    same = ours[..., 3] == ref[..., 3]
    ambiguous = ambiguous.cuda()
    assert ambiguous.float().mean() < 0.15  # most pixels are checked exactly
    assert bool(same[~ambiguous].all())
    torch.testing.assert_close(ours[same], ref[same], atol=1e-4, rtol=1e-4)
    attr = torch.rand(1, pos.shape[1], 3, device="cuda")
    a, _ = interpolate(attr, ours, tri, backend="torch")
    b, _ = interpolate(attr, ref, tri, backend="nvdiffrast")
    torch.testing.assert_close(a[same], b[same], atol=1e-4, rtol=1e-4)
