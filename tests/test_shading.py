"""Vertex normals and SH shading against straightforward references; float64 gradcheck."""

from __future__ import annotations

import math

import torch

from stylerig.render.shading import AMBIENT, sh_basis, sh_shade, vertex_normals


def reference_normals(v: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = v[:, tri[:, 0]], v[:, tri[:, 1]], v[:, tri[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    vn = torch.zeros_like(v)
    for k in range(3):
        vn = vn.index_add(1, tri[:, k], fn)
    return vn / vn.norm(dim=-1, keepdim=True)


def test_normals_match_reference_and_point_outwards(tiny_face):
    v = tiny_face.mean_shape[None].double() + 0.01 * torch.randn(
        2, tiny_face.num_vertices, 3, dtype=torch.float64
    )
    n = vertex_normals(v, tiny_face.triangles)
    torch.testing.assert_close(n, reference_normals(v, tiny_face.triangles), atol=1e-12, rtol=0)
    assert ((n * v).sum(-1) > 0).float().mean() > 0.95  # a sphere: outward = along the position


def test_normals_gradcheck_and_topology_cache_invalidation(tiny_face):
    v = (
        tiny_face.mean_shape[None].double()
        + 0.01 * torch.randn(1, tiny_face.num_vertices, 3, dtype=torch.float64)
    ).requires_grad_(True)
    tri = tiny_face.triangles.clone()
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, tri), (v,))
    flipped = tri[:, [0, 2, 1]].contiguous()
    tri.copy_(flipped)  # in-place edit: the cached topology must not be reused
    torch.testing.assert_close(vertex_normals(v, tri), -reference_normals(v, tiny_face.triangles))


def test_sh_basis_matches_deep3dfacerecon_formula():
    n = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    x, y, z = n.unbind(-1)
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
    c0, c1, c2 = (
        1 / math.sqrt(4 * math.pi),
        math.sqrt(3) / math.sqrt(4 * math.pi),
        3 * math.sqrt(5) / math.sqrt(12 * math.pi),
    )
    expect = torch.stack(
        [
            torch.full_like(x, a0 * c0),
            -a1 * c1 * y,
            a1 * c1 * z,
            -a1 * c1 * x,
            a2 * c2 * x * y,
            -a2 * c2 * y * z,
            0.5 * a2 * c2 / math.sqrt(3) * (3 * z**2 - 1),
            -a2 * c2 * x * z,
            0.5 * a2 * c2 * (x**2 - y**2),
        ],
        -1,
    )
    torch.testing.assert_close(sh_basis(n), expect)
    torch.testing.assert_close(sh_basis(n.T, dim=0), expect.T)


def test_sh_shade_ambient_default_and_directional_light():
    n = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]])
    albedo = torch.full((1, 3, 3), 0.5)
    col = sh_shade(albedo, n, torch.zeros(1, 27))
    # p = 0: uniform ambient light, colour = albedo * AMBIENT * a0 c0 = albedo * 0.8 * sqrt(pi) / 2.
    torch.testing.assert_close(col, torch.full_like(col, 0.5 * AMBIENT * math.sqrt(math.pi) / 2))
    light = torch.zeros(1, 27)
    light.view(3, 9)[:, 3] = -0.3  # band-1 x term: -a1 c1 x * (-0.3) brightens +x
    col = sh_shade(albedo, n, light)
    assert (col[0, 1] > col[0, 0]).all() and (col[0, 0] > col[0, 2]).all()


def test_sh_shade_gradcheck():
    n = torch.nn.functional.normalize(torch.randn(2, 7, 3, dtype=torch.float64), dim=-1).requires_grad_(True)
    a = torch.rand(2, 7, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 27, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sh_shade, (a, n, g))


def test_topology_cache_never_serves_another_mesh(tiny_face):
    """Freed triangle tensors must not hand their cached topology to a new mesh at the same address."""
    v = tiny_face.mean_shape[None].double()
    good = tiny_face.triangles
    for _ in range(20):
        shuffled = good[torch.randperm(good.shape[0])][:, [0, 2, 1]].clone()  # flipped winding
        torch.testing.assert_close(
            vertex_normals(v, shuffled), -reference_normals(v, good), atol=1e-12, rtol=0
        )
        del shuffled
