"""Benchmark: StyleGAN2 generator forward on CPU, ours against the plain reference implementation.

Network: 256x256, channel_base 16384, channel_max 512, 8 mapping layers, z_dim = w_dim = 512, random
weights (the FFHQ-256 config-F shape). For each batch size it times ``G(z, noise_mode="const")`` of
:class:`stylerig.gan.networks.Generator` and of ``benchmarks/reference_stylegan2.py`` (one sample at a
time, explicit zero insertion, no fusions) loaded from the same state dict, alternating the two, and
reports the median wall time, images per second, and the largest absolute difference of the images.

Usage::

    python benchmarks/bench_generator.py [--threads 2] [--repeats 5] [--batches 1 4]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_stylegan2 import ReferenceGenerator  # noqa: E402

from stylerig.gan.networks import Generator  # noqa: E402

RESOLUTION = 256
CHANNEL_BASE = 16384
CHANNEL_MAX = 512
MAPPING_LAYERS = 8
DIM = 512


def build(seed: int = 0) -> Generator:
    """The benchmark network, with every tensor random (noise strengths and biases too)."""
    torch.manual_seed(seed)
    G = Generator(
        z_dim=DIM,
        c_dim=0,
        w_dim=DIM,
        img_resolution=RESOLUTION,
        img_channels=3,
        mapping_kwargs={"num_layers": MAPPING_LAYERS},
        synthesis_kwargs={"channel_base": CHANNEL_BASE, "channel_max": CHANNEL_MAX},
    ).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.normal_(0.0, 0.3)
            elif name.endswith(".bias") and "affine" not in name and "mapping" not in name:
                p.normal_(0.0, 0.1)
        G.mapping.w_avg.normal_()
    return G


def _time(fn, z: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(z)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per batch size and implementation")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    G = build()
    ref = ReferenceGenerator(G.state_dict(), RESOLUTION, MAPPING_LAYERS)

    def ours(z: torch.Tensor) -> torch.Tensor:
        return G(z, noise_mode="const")

    def reference(z: torch.Tensor) -> torch.Tensor:
        return ref(z, noise_mode="const")

    results = []
    with torch.inference_mode():
        for batch in args.batches:
            z = torch.randn(batch, DIM, generator=torch.Generator().manual_seed(batch))
            img = ours(z)  # also the warm-up runs
            diff = (img - reference(z)).abs().max().item()
            t_ours, t_ref = [], []
            for _ in range(args.repeats):
                t_ours.append(_time(ours, z))
                t_ref.append(_time(reference, z))
            m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
            results.append(
                {
                    "batch": batch,
                    "ours_s": round(m_ours, 4),
                    "reference_s": round(m_ref, 4),
                    "ours_img_per_s": round(batch / m_ours, 3),
                    "reference_img_per_s": round(batch / m_ref, 3),
                    "speedup": round(m_ref / m_ours, 3),
                    "max_abs_diff": diff,
                    "max_abs_image": round(img.abs().max().item(), 3),
                    "ours_runs_s": [round(t, 4) for t in t_ours],
                    "reference_runs_s": [round(t, 4) for t in t_ref],
                }
            )
    out = {
        "benchmark": "stylegan2 generator forward (noise_mode const)",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "resolution": RESOLUTION,
        "channel_base": CHANNEL_BASE,
        "channel_max": CHANNEL_MAX,
        "mapping_layers": MAPPING_LAYERS,
        "repeats": args.repeats,
        "statistic": "median",
        "results": results,
        "ours_at_least_as_fast": all(r["speedup"] >= 1.0 for r in results),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
