"""GPU checks in one run: nvdiffrast parity with the torch rasterizer, CUDA and half-precision paths,
throughput of rendering and of the generator. Prints one JSON object (and writes it to ``--json``).

Needs a CUDA device; nvdiffrast is optional (its rows say ``"skipped"`` without it).

* ``parity_face_<res>``: the world's face model and 16 of its seeds' true parameters, rendered by the
  face renderer with the torch rasterizer on the CPU (the reference), the torch rasterizer on CUDA and
  nvdiffrast on CUDA. Per pair: the share of pixels where the face masks agree, the largest and mean
  absolute image difference where both cover the pixel, and per parameter group the cosine between the
  gradients of one fixed random image-space loss (``sum(image * R)``).
* ``parity_raster_standin``: the 35,709-vertex / 70,789-triangle BFM stand-in of ``bench_render.py`` at
  224x224, batch 8: triangle-id agreement and the largest (u, v, z/w) difference where the ids agree.
* ``render_<backend>_<res>_b<B>``: face renderer forward and forward+backward (to all 257 parameters),
  milliseconds per batch and images per second (CUDA events, median of 20 after 5 warm-ups).
* ``generator_world_b<B>_<dtype>``: the shipped world generator (128x128) at float32 / float16 /
  bfloat16, images per second, and the largest difference to float32 in [-1, 1] image units.
* ``generator_ffhq1024_b<B>_<dtype>``: a random-weight StyleGAN2 of FFHQ-1024 shape (config F: channel
  base 32768, channel max 512, 8 mapping layers), the size of a real pickle.

Usage: ``python benchmarks/bench_gpu.py [--json FILE] [--quick]`` (``--device cpu --quick`` is a smoke run of
the script itself: host clocks instead of CUDA events, every "GPU" row on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stylerig import params  # noqa: E402
from stylerig.render import FaceRenderer, nvdiffrast_available  # noqa: E402
from stylerig.render.ops import interpolate, rasterize  # noqa: E402

DEV = torch.device("cuda")


def cuda_time(fn, repeats: int = 20, warmup: int = 5) -> float:
    """Median milliseconds of ``fn()`` on the current CUDA stream (events around each call)."""
    for _ in range(warmup):
        fn()
    if DEV.type != "cuda":
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _render_grads(renderer: FaceRenderer, p: torch.Tensor, weight: torch.Tensor):
    q = p.detach().clone().requires_grad_(True)
    out = renderer(q)
    (out.image * weight).sum().backward()
    return out.image.detach().cpu(), out.mask.detach().cpu(), q.grad.detach().cpu()


def _compare(a, b) -> dict[str, float]:
    img_a, mask_a, g_a = a
    img_b, mask_b, g_b = b
    both = (mask_a * mask_b).bool().expand_as(img_a)
    d = (img_a - img_b).abs()[both]
    rec = {
        "mask_agreement": float((mask_a == mask_b).float().mean()),
        "image_max_abs_diff_on_face": float(d.max()),
        "image_mean_abs_diff_on_face": float(d.mean()),
    }
    for name, ga in params.split(g_a).items():
        gb = params.split(g_b)[name]
        rec[f"grad_cos_{name}"] = float(
            torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0)
        )
    return rec


def parity_face(world, res: int, n: int = 16) -> dict:
    p = world.params(list(range(n))).float()
    torch.manual_seed(0)
    weight = torch.randn(n, 3, res, res)
    fm = copy.deepcopy(world.face_model).cpu()
    ref = _render_grads(FaceRenderer(fm, res, backend="torch"), p, weight)
    fm_c = copy.deepcopy(world.face_model).to(DEV)
    p_c, w_c = p.to(DEV), weight.to(DEV)
    cuda_torch = _render_grads(FaceRenderer(fm_c, res, backend="torch").to(DEV), p_c, w_c)
    out = {"torch_cuda_vs_torch_cpu": _compare(cuda_torch, ref)}
    if nvdiffrast_available() and DEV.type == "cuda":
        nv = _render_grads(FaceRenderer(fm_c, res, backend="nvdiffrast").to(DEV), p_c, w_c)
        out["nvdiffrast_vs_torch_cpu"] = _compare(nv, ref)
        out["nvdiffrast_vs_torch_cuda"] = _compare(nv, cuda_torch)
    else:
        out["nvdiffrast"] = "skipped: not installed"
    return out


def parity_raster_standin() -> dict:

    from stylerig.render import camera as cam

    if not nvdiffrast_available() or DEV.type != "cuda":
        return {"skipped": "nvdiffrast not installed or no CUDA"}
    B, res = 8, 224
    torch.manual_seed(1)
    world, tri = _posed_standin((torch.rand(B, 3) - 0.5) * torch.tensor([1.2, 0.5, 0.3]))
    pos = cam.project(world).contiguous()
    tri = tri.int()
    ours = rasterize(pos, tri, (res, res), backend="torch")
    ref = rasterize(pos, tri, (res, res), backend="nvdiffrast")
    same = ours[..., 3] == ref[..., 3]
    covered = (ours[..., 3] > 0) | (ref[..., 3] > 0)
    d = (ours - ref)[same & covered][:, :3].abs()
    # Gradients to the clip-space positions of one random loss on interpolated attributes, counted only
    # on the pixels where both chose the same triangle (there the two compute the same function).
    torch.manual_seed(4)
    attr = torch.rand(1, pos.shape[1], 3, device=DEV)
    weight = torch.randn(B, res, res, 3, device=DEV) * (same & covered).unsqueeze(-1)
    grads = {}
    for be in ("torch", "nvdiffrast"):
        q = pos.detach().clone().requires_grad_(True)
        img, _ = interpolate(attr, rasterize(q, tri, (res, res), backend=be), tri, backend=be)
        (img * weight).sum().backward()
        grads[be] = q.grad.flatten()
    g_t, g_n = grads["torch"], grads["nvdiffrast"]
    return {
        "id_agreement_all_pixels": float(same.float().mean()),
        "id_agreement_covered_pixels": float(same[covered].float().mean()),
        "uvz_max_abs_diff_where_ids_agree": float(d.max()),
        "uvz_mean_abs_diff_where_ids_agree": float(d.mean()),
        "pos_grad_cos_where_ids_agree": float(torch.nn.functional.cosine_similarity(g_t, g_n, dim=0)),
        "pos_grad_rel_err_where_ids_agree": float((g_t - g_n).norm() / g_n.norm().clamp_min(1e-30)),
    }


def render_speed(world, backend: str, res: int, batch: int) -> dict:
    fm = copy.deepcopy(world.face_model).to(DEV)
    r = FaceRenderer(fm, res, backend=backend).to(DEV)
    p = world.params(list(range(batch))).float().to(DEV)

    def fwd():
        with torch.no_grad():
            r(p)

    def fwd_bwd():
        q = p.detach().requires_grad_(True)
        r(q).image.square().mean().backward()

    f, fb = cuda_time(fwd), cuda_time(fwd_bwd)
    return {
        "forward_ms": round(f, 3),
        "forward_backward_ms": round(fb, 3),
        "forward_backward_images_per_s": round(batch / fb * 1e3, 1),
    }


@functools.cache
def _standin() -> tuple[torch.Tensor, torch.Tensor]:
    """``bench_render.face_standin()``, built once (its triangulation takes seconds)."""
    from bench_render import face_standin

    return face_standin()


def _posed_standin(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in in the head poses ``angles`` float [B, 3] (yaw, pitch, roll; radians): world-space
    vertices float [B, V, 3] and triangles int64 [F, 3], both on DEV."""
    from stylerig.render import camera as cam

    v, tri = _standin()
    B = angles.shape[0]
    world = cam.rigid_transform(v.expand(B, -1, -1), angles, torch.zeros(B, 3))
    return world.to(DEV), tri.to(DEV)


def standin_speed(backend: str, batch: int, res: int = 224) -> dict:
    """The BFM-sized stand-in through normals + SH shading + rasterize + interpolate + L2, as
    ``bench_render.py``'s ``full_fwd_bwd`` (the cost of a real Basel face at 224x224)."""

    from stylerig.render import camera as cam
    from stylerig.render.shading import sh_shade, vertex_normals

    torch.manual_seed(3)
    world, tri = _posed_standin(
        torch.deg2rad(torch.empty(batch, 3).uniform_(-20, 20)) * torch.tensor([1.0, 0.5, 0.3])
    )
    tri32 = tri.int()
    world.requires_grad_(True)
    albedo = torch.full((batch, world.shape[1], 3), 0.6, device=DEV, requires_grad=True)
    light = torch.zeros(batch, 27, device=DEV, requires_grad=True)
    target = torch.rand(batch, res, res, 3, device=DEV)

    def fwd_bwd():
        col = sh_shade(albedo, vertex_normals(world, tri), light)
        img, _ = interpolate(col, rasterize(cam.project(world), tri32, (res, res), backend=backend), tri,
                             backend=backend)  # fmt: skip
        ((img - target) ** 2).mean().backward()

    ms = cuda_time(fwd_bwd)
    return {"full_fwd_bwd_ms_per_image": round(ms / batch, 4), "images_per_s": round(batch / ms * 1e3, 1)}


@contextlib.contextmanager
def _modconv_order(fused: bool | None):
    """Force the evaluation order of every modulated convolution (None: the library's choice).

    The library picks the fused order (per-sample weights, one grouped convolution) for batch 1 and for
    reduced precision, the unfused one (a plain batched convolution) otherwise. NVIDIA's code runs
    float16 unfused. On the H200 float16 was slower than float32 (docs/gpu.md): the ``*_unfused`` rows
    time the other order.
    """
    from stylerig.gan import networks

    if fused is None:
        yield
        return
    original = networks.modulated_conv2d
    networks.modulated_conv2d = functools.partial(original, fused=fused)
    try:
        yield
    finally:
        networks.modulated_conv2d = original


def generator_speed(G, batch: int, z_dim: int, repeats: int) -> dict:
    G = copy.deepcopy(G).to(DEV).eval()
    torch.manual_seed(2)
    z = torch.randn(batch, z_dim, device=DEV)
    out = {}
    with torch.no_grad():
        ref = G(z, noise_mode="const")
        for name, dt, fused in (
            ("float32", torch.float32, None),
            ("float16", torch.float16, None),
            ("bfloat16", torch.bfloat16, None),
            ("float16_unfused", torch.float16, False),
            ("bfloat16_unfused", torch.bfloat16, False),
        ):
            with _modconv_order(fused):
                ms = cuda_time(lambda dt=dt: G(z, noise_mode="const", dtype=dt), repeats=repeats, warmup=2)
                img = G(z, noise_mode="const", dtype=dt)
            out[name] = {
                "ms_per_batch": round(ms, 2),
                "images_per_s": round(batch / ms * 1e3, 1),
                "max_abs_diff_to_float32": float((img - ref).abs().max()),
                "finite": bool(torch.isfinite(img).all()),
            }
    return out


def ffhq1024() -> torch.nn.Module:
    from stylerig.gan import Generator

    torch.manual_seed(0)
    return Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=1024,
        img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "conv_clamp": 256},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="also write the JSON here")
    ap.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only smoke-tests the script")
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device")
    from stylerig.worlds import load_world

    t0 = time.perf_counter()
    world = load_world()
    res: dict = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(DEV) if DEV.type == "cuda" else "cpu (smoke run)",
        "nvdiffrast": nvdiffrast_available(),
    }

    def run(key, fn, *a):
        try:
            res[key] = fn(*a)
        except Exception as e:  # one failing row must not hide the others
            res[key] = {"error": f"{type(e).__name__}: {e}"}
        print(key, json.dumps(res[key]), flush=True)

    for r in (128,) if args.quick else (128, 224):
        run(f"parity_face_{r}", parity_face, world, r)
    run("parity_raster_standin", parity_raster_standin)
    backends = ["torch"] + (["nvdiffrast"] if nvdiffrast_available() and DEV.type == "cuda" else [])
    for be in backends:
        for r, b in ((128, 64), (224, 64)) if not args.quick else ((128, 16),):
            run(f"render_{be}_{r}_b{b}", render_speed, world, be, r, b)
    for be in backends:
        run(f"standin224_{be}_b32", standin_speed, be, 32 if not args.quick else 2)
    for b in (64, 256) if not args.quick else (16,):
        run(f"generator_world_b{b}", generator_speed, world.generator, b, world.generator.z_dim, 10)
    if not args.quick:
        run("generator_ffhq1024_b8", generator_speed, ffhq1024(), 8, 512, 5)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
