"""Renderer benchmark: a BFM-sized face stand-in at 224x224, batch 8, 2 CPU threads. Prints JSON.

Measures (median over repeats, per image):
* ``raster_interp_fwd_ms``: rasterize + interpolate (3 channels), forward only, on the renderer's path
  (``rasterize_to_fragments`` + ``interpolate_fragments``, what ``FaceRenderer`` runs);
* ``full_fwd_bwd_ms``: vertex normals + SH shading + rasterize + interpolate + L2 loss, forward and
  backward to vertex positions, albedo and light, on the same path;
* ``api_*``: the same through the nvdiffrast-shaped ``rasterize`` / ``interpolate`` (a dense ``rast``
  tensor in between);
* ``naive_dense_fwd_ms``: a naive dense rasterizer (every pixel against every triangle, in chunks) of
  the same mesh, one image, forward only -- the design the fast path replaces (timed on a band of 16
  rows and extrapolated: the full image takes minutes);
* ``peak_rss_mb``: the process's peak resident memory (includes torch itself), measured before the
  naive rasterizer runs;
* ``world_rig_step``: the workload of one ``train-rignet`` step on the built-in world -- its face mesh
  (5,742 vertices, 11,472 triangles) at 128x128, batch 48 (4 pairs x 2 directions x 3 groups x edit and
  consistency renders), parameters of world seeds -- whole images per step, not per image:
  ``raster_fwd_ms`` (the z-buffer and fragments alone), ``render_fwd_ms`` (``FaceRenderer``) and
  ``render_fwd_bwd_ms`` (with a masked L2 loss, backward to p). ``--world-batch 0`` skips it.

Usage: ``python benchmarks/bench_render.py [--threads 2] [--batch 8] [--res 224] [--repeats 15]
[--world-batch 48]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import numpy as np
import torch

from stylerig.render import camera as cam
from stylerig.render.ops import interpolate, interpolate_fragments, rasterize, rasterize_to_fragments
from stylerig.render.shading import sh_shade, vertex_normals
from stylerig.runtime import tune_allocator

NUM_V, NUM_F = 35709, 70789


def face_standin(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A BFM-sized face cap: 35,709 vertices / 70,789 triangles, decimetres, facing +z.

    Jittered points in an ellipse (1.6 x 2.0 dm) on a bumpy half-ellipsoid, Delaunay-triangulated; the
    thinnest boundary slivers are dropped to reach the exact BFM triangle count.
    """
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    pts = []
    while sum(len(p) for p in pts) < NUM_V:
        q = rng.uniform(-1, 1, size=(NUM_V, 2))
        pts.append(q[(q**2).sum(1) < 1])
    q = np.concatenate(pts)[:NUM_V]
    tri = Delaunay(q).simplices
    # Drop the flattest triangles (hull slivers) down to the target count.
    a, b, c = q[tri[:, 0]], q[tri[:, 1]], q[tri[:, 2]]
    area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    if len(tri) > NUM_F:
        tri = tri[np.sort(np.argsort(area)[len(tri) - NUM_F :])]
    x, y = q[:, 0] * 0.8, q[:, 1] * 1.0
    r2 = np.clip(1 - q[:, 0] ** 2 - q[:, 1] ** 2, 0, 1)
    z = 0.6 * np.sqrt(r2) + 0.02 * np.sin(9 * x) * np.cos(7 * y)
    v = np.stack([x, y, z - 0.3], 1).astype(np.float32)
    # Counter-clockwise seen from +z (outside).
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    flip = np.cross(b - a, c - a)[:, 2] < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return torch.from_numpy(v), torch.from_numpy(tri.astype(np.int64))


def naive_dense(
    pos: torch.Tensor, tri: torch.Tensor, res: int, rows: range, chunk: int = 512
) -> torch.Tensor:
    """Every pixel centre of ``rows`` against every triangle (chunked over triangles).

    Returns the id map [len(rows), res] (-1 where empty). The whole image would be ``res / len(rows)``
    times the work of a band, so the benchmark times a band and extrapolates.
    """
    p = pos[0]
    s = (p[:, :2] / p[:, 3:] + 1) * (res / 2)
    z = p[:, 2] / p[:, 3]
    ys, xs = torch.meshgrid(torch.tensor(list(rows)) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    cx, cy = xs.reshape(-1, 1), ys.reshape(-1, 1)
    n_pix = cx.shape[0]
    best = torch.full((n_pix,), float("inf"))
    ids = torch.full((n_pix,), -1, dtype=torch.int64)
    for f0 in range(0, tri.shape[0], chunk):
        t = tri[f0 : f0 + chunk]
        X, Y, Z = s[t, 0], s[t, 1], z[t]
        area = (X[:, 1] - X[:, 0]) * (Y[:, 2] - Y[:, 0]) - (Y[:, 1] - Y[:, 0]) * (X[:, 2] - X[:, 0])
        b0 = ((X[:, 2] - X[:, 1]) * (cy - Y[:, 1]) - (Y[:, 2] - Y[:, 1]) * (cx - X[:, 1])) / area
        b1 = ((X[:, 0] - X[:, 2]) * (cy - Y[:, 2]) - (Y[:, 0] - Y[:, 2]) * (cx - X[:, 2])) / area
        b2 = 1 - b0 - b1
        d = b0 * Z[:, 0] + b1 * Z[:, 1] + b2 * Z[:, 2]
        d = torch.where((b0 >= 0) & (b1 >= 0) & (b2 >= 0), d, torch.inf)
        dm, am = d.min(1)
        better = dm < best
        best = torch.where(better, dm, best)
        ids = torch.where(better, am + f0, ids)
    return ids.view(len(rows), res)


def world_rig_step(batch: int, repeats: int) -> dict[str, float | int]:
    """Time the renders of one rig training step on the built-in world (see the module docstring)."""
    from stylerig.render import FaceRenderer
    from stylerig.worlds import load_world

    world = load_world()
    renderer = FaceRenderer(world.face_model, 128, backend="torch")
    p = world.params(range(10_000, 10_000 + batch)).requires_grad_(True)
    with torch.no_grad():
        target = world.images(range(20_000, 20_000 + batch))
        clip = renderer.geometry(p)[1]
    tri = world.face_model.triangles.to(torch.int32)

    def raster():
        with torch.no_grad():
            return rasterize_to_fragments(clip, tri, (128, 128), backend="torch")

    def fwd():
        with torch.no_grad():
            return renderer(p)

    def fwd_bwd():
        out = renderer(p)
        ((out.image - target) ** 2 * out.mask).mean().backward()

    return {
        "mesh": {
            "vertices": int(world.face_model.mean_shape.shape[0]),
            "triangles": int(tri.shape[0]),
        },
        "resolution": 128,
        "batch": batch,
        "covered_pixels": int(raster().pixel.numel()),
        "raster_fwd_ms": round(_time(raster, repeats) * 1e3, 1),
        "render_fwd_ms": round(_time(fwd, repeats) * 1e3, 1),
        "render_fwd_bwd_ms": round(_time(fwd_bwd, repeats) * 1e3, 1),
    }


def _time(fn, repeats: int) -> float:
    for _ in range(3):  # warm-up (allocator, thread pool)
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--world-batch", type=int, default=48, help="batch of the world workload (0: skip it)")
    ap.add_argument(
        "--default-allocator",
        action="store_true",
        help="skip stylerig.runtime.tune_allocator() (as the CLI runs)",
    )
    args = ap.parse_args()
    tuned = False if args.default_allocator else tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    verts, tri = face_standin()
    B, R = args.batch, args.res
    angles = torch.deg2rad(torch.empty(B, 3).uniform_(-20, 20)) * torch.tensor([1.0, 0.5, 0.3])
    world = cam.rigid_transform(verts.expand(B, -1, -1), angles, torch.zeros(B, 3))
    pos = cam.project(world).contiguous()
    tri32 = tri.to(torch.int32)
    albedo = torch.full((B, NUM_V, 3), 0.6)
    light = torch.zeros(B, 27)
    target = torch.rand(B, R, R, 3)

    def fwd_api():
        # The nvdiffrast-shaped public API: dense rast tensor in between.
        with torch.no_grad():
            rast = rasterize(pos, tri32, (R, R), backend="torch")
            return interpolate(albedo, rast, tri, backend="torch")[0]

    def fwd():
        # The renderer's path (FaceRenderer): sparse fragments in between.
        with torch.no_grad():
            frags = rasterize_to_fragments(pos, tri32, (R, R), backend="torch")
            return interpolate_fragments(albedo, frags, tri)

    world_g = world.clone().requires_grad_(True)
    albedo_g = albedo.clone().requires_grad_(True)
    light_g = light.clone().requires_grad_(True)

    def fwd_bwd(api: bool = False):
        n = vertex_normals(world_g, tri)
        col = sh_shade(albedo_g, n, light_g)
        clip = cam.project(world_g)
        if api:
            img, _ = interpolate(col, rasterize(clip, tri32, (R, R), backend="torch"), tri, backend="torch")
        else:
            img = interpolate_fragments(
                col, rasterize_to_fragments(clip, tri32, (R, R), backend="torch"), tri
            )
        loss = ((img - target) ** 2).mean()
        loss.backward()

    fwd()
    coverage = float((rasterize(pos, tri32, (R, R))[..., 3] > 0).float().mean())
    t_fwd = _time(fwd, args.repeats) / B
    t_full = _time(fwd_bwd, args.repeats) / B
    t_fwd_api = _time(fwd_api, args.repeats) / B
    t_full_api = _time(lambda: fwd_bwd(api=True), args.repeats) / B
    result = {
        "benchmark": "render",
        "mesh": {"vertices": int(verts.shape[0]), "triangles": int(tri.shape[0])},
        "resolution": R,
        "batch": B,
        "threads": args.threads,
        "allocator_tuned": tuned,
        "coverage": round(coverage, 3),
        "raster_interp_fwd_ms": round(t_fwd * 1e3, 2),
        "full_fwd_bwd_ms": round(t_full * 1e3, 2),
        "api_raster_interp_fwd_ms": round(t_fwd_api * 1e3, 2),
        "api_full_fwd_bwd_ms": round(t_full_api * 1e3, 2),
        "targets_ms": {"raster_interp_fwd": 8.0, "full_fwd_bwd": 10.0, "llvmpipe_reference_fwd": 11.0},
    }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not args.skip_naive:
        band = range(R // 2 - 8, R // 2 + 8)  # 16 rows through the face
        p1 = pos[:1]
        t0 = time.perf_counter()
        ids = naive_dense(p1, tri, R, band)
        t_band = time.perf_counter() - t0
        result["naive_dense_fwd_ms"] = round(t_band * R / len(band) * 1e3, 1)
        result["naive_dense_note"] = f"timed on {len(band)} rows, extrapolated to {R}"
        fast = rasterize(p1, tri32, (R, R), backend="torch")[0, band.start : band.stop, :, 3].long() - 1
        result["naive_vs_fast_id_agreement"] = round(float((fast == ids).float().mean()), 5)
        result["speedup_vs_naive"] = round(result["naive_dense_fwd_ms"] / (t_fwd * 1e3), 1)
    if args.world_batch > 0:
        result["world_rig_step"] = world_rig_step(args.world_batch, args.repeats)
    result["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor(),
    }

    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
