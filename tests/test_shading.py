"""Vertex normals and SH shading against straightforward references; float64 gradcheck."""

from __future__ import annotations

import math

import torch

from stylerig.render.shading import (
    AMBIENT,
    _sh_shade_autograd,
    _vertex_normals_autograd,
    sh_basis,
    sh_shade,
    vertex_normals,
)


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


def _with_isolated_vertex(tiny_face):
    """The tiny face's triangles over its vertices plus one vertex no triangle uses (its normal is 0)."""
    v = tiny_face.mean_shape[None].double() + 0.01 * torch.randn(
        2, tiny_face.num_vertices, 3, dtype=torch.float64
    )
    return torch.cat([v, torch.randn(2, 1, 3, dtype=torch.float64)], 1), tiny_face.triangles


def test_vertex_normals_custom_backward_matches_plain_autograd(tiny_face):
    """The fused _VertexNormals Function against the plain-autograd reference: values and gradients."""
    v, tri = _with_isolated_vertex(tiny_face)
    v = v.requires_grad_(True)
    n, ref = vertex_normals(v, tri), _vertex_normals_autograd(v, tri)
    torch.testing.assert_close(n, ref, atol=1e-12, rtol=0)
    assert n[:, -1].abs().max() == 0
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(n, v, grad)[0]
    want = torch.autograd.grad(ref, v, grad)[0]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # float32 as well (the training dtype), with a permuted (non-contiguous) input.
    v32 = v.detach().float().permute(1, 0, 2).contiguous().permute(1, 0, 2).requires_grad_(True)
    grad32 = grad.float()
    got32 = torch.autograd.grad(vertex_normals(v32, tri), v32, grad32)[0]
    torch.testing.assert_close(got32.double(), want, atol=1e-4, rtol=1e-4)


def test_vertex_normals_gradcheck_batch_and_isolated_vertex(tiny_face):
    v, tri = _with_isolated_vertex(tiny_face)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, tri), (v.requires_grad_(True),))


def test_sh_shade_custom_backward_matches_plain_autograd(tiny_face):
    """The analytic _SHShade Function against the plain-autograd reference, on both normal layouts."""
    v = tiny_face.mean_shape[None].double().repeat(2, 1, 1)
    normals = (
        vertex_normals(v, tiny_face.triangles),  # component-major view (the renderer's path)
        torch.nn.functional.normalize(torch.randn(2, tiny_face.num_vertices, 3, dtype=torch.float64), dim=-1),
    )
    for n0 in normals:
        n = n0.detach().requires_grad_(True)
        a = torch.rand(2, tiny_face.num_vertices, 3, dtype=torch.float64, requires_grad=True)
        g = 0.3 * torch.randn(2, 27, dtype=torch.float64).requires_grad_(True)
        col, ref = sh_shade(a, n, g), _sh_shade_autograd(a, n, g)
        torch.testing.assert_close(col, ref, atol=1e-12, rtol=0)
        grad = torch.randn_like(ref)
        got = torch.autograd.grad(col, (a, n, g), grad)
        want = torch.autograd.grad(ref, (a, n, g), grad)
        for x, y in zip(got, want, strict=True):
            torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-10)
        # Only some inputs needing gradients.
        gg = torch.autograd.grad(sh_shade(a.detach(), n.detach(), g), g, grad)[0]
        torch.testing.assert_close(gg, want[2], atol=1e-10, rtol=1e-10)


def test_sh_shade_broadcast_albedo_takes_reference_path():
    n = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)
    a = torch.rand(1, 5, 3, dtype=torch.float64)
    g = torch.randn(2, 27, dtype=torch.float64)
    torch.testing.assert_close(sh_shade(a, n, g), sh_shade(a.expand(2, -1, -1).clone(), n, g))
