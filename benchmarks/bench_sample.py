"""Benchmark: ``stylerig sample`` of 1,000 images at 64x64 from a tiny random generator (target < 60 s).

Network: 64x64, channel_base 1024, channel_max 64, z_dim = w_dim = 512, 8 mapping layers (the real
mapping network; a small synthesis), random weights, saved with ``save_generator``. Runs the real command
line (``python -m stylerig_cli sample ...``) in a subprocess with the given thread count, so the time
includes start-up, loading, drawing, assembling and hashing. Then reloads the set with numpy alone.

Usage::

    python benchmarks/bench_sample.py [--n 1000] [--threads 2] [--batch 32]

Prints one JSON object (also the machine load average, since the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stylerig.gan import Generator, save_generator


def build(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=64,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 1024, "channel_max": 64},
    )
    return save_generator(G.eval(), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gen = build(Path(tmp) / "tiny64.safetensors")
        out = Path(tmp) / "set"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, "-m", "stylerig_cli", "sample", "--out", str(out), "--n", str(args.n)]
        cmd += ["--generator", str(gen), "--batch", str(args.batch), "--device", "cpu"]
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        ws, images = np.load(out / "ws.npy"), np.load(out / "images.npy")
        manifest = json.loads((out / "manifest.json").read_text())
    print(
        json.dumps(
            {
                "benchmark": "stylerig sample",
                "n": args.n,
                "resolution": 64,
                "threads": args.threads,
                "batch": args.batch,
                "seconds": round(seconds, 2),
                "images_per_second": round(args.n / seconds, 1),
                "under_a_minute": seconds < 60,
                "reloaded": {"ws": list(ws.shape), "images": list(images.shape), "n": manifest["n"]},
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "platform": platform.platform(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
