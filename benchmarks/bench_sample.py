"""Benchmark: ``stylerig sample`` of 1,000 images at 64x64 from a tiny random generator (target < 60 s).

Network: 64x64, channel_base 1024, channel_max 64, z_dim = w_dim = 512, 8 mapping layers (the real
mapping network; a small synthesis), random weights, saved with ``save_generator``. Runs the real command
line (``python -m stylerig_cli sample ...``) in a subprocess with the given thread count, so the time
includes start-up, loading, drawing, assembling and hashing. Then reloads the set with numpy alone.

Usage::

    python benchmarks/bench_sample.py [--n 1000] [--threads 2] [--batch 32]
    python benchmarks/bench_sample.py --generator world --n 2000 --precisions float32,bfloat16

``--generator world`` times the built-in world instead (128x128; issue 4: 2,000 samples in under 2
minutes on 2 cores). ``--precisions`` runs the command once per precision, in the same run, and compares
each set's images with the first one's (uint8 levels). Prints one JSON object (also the machine load
average, since the machine may be shared).
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


def run_sample(out: Path, gen: Path | None, args: argparse.Namespace, precision: str) -> float:
    """Run ``stylerig sample`` in a subprocess; returns its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "stylerig_cli", "sample", "--out", str(out), "--n", str(args.n)]
    cmd += ["--batch", str(args.batch), "--device", args.device, "--precision", precision]
    cmd += ["--threads", str(args.threads)] + ([] if gen is None else ["--generator", str(gen)])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument(
        "--generator", choices=("tiny", "world"), default="tiny", help="tiny 64x64 or the world's"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--precisions",
        default="float32",
        help="comma list, each run in turn (e.g. float32,bfloat16,float32: the first run also warms the "
        "caches); images and times are compared with the first",
    )
    args = ap.parse_args()
    precisions = args.precisions.split(",")
    runs: dict[str, dict[str, object]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        gen = build(Path(tmp) / "tiny64.safetensors") if args.generator == "tiny" else None
        first: np.ndarray | None = None
        for i, precision in enumerate(precisions):
            label = precision if precision not in runs else f"{precision}#{i + 1}"  # a repeat, e.g. warm-up
            out = Path(tmp) / f"set-{i}"
            seconds = run_sample(out, gen, args, precision)
            ws, images = np.load(out / "ws.npy"), np.load(out / "images.npy")
            manifest = json.loads((out / "manifest.json").read_text())
            row: dict[str, object] = {
                "seconds": round(seconds, 2),
                "images_per_second": round(args.n / seconds, 1),
                "reloaded": {"ws": list(ws.shape), "images": list(images.shape), "n": manifest["n"]},
            }
            if first is None:
                first = images.astype(np.int16)
            else:
                diff = np.abs(images.astype(np.int16) - first)
                row["uint8_diff_to_first"] = {"max": int(diff.max()), "mean": round(float(diff.mean()), 3)}
                row["speedup_over_first"] = round(float(runs[precisions[0]]["seconds"]) / seconds, 2)  # type: ignore[arg-type]
            runs[label] = row
    resolution = 64 if args.generator == "tiny" else 128
    print(
        json.dumps(
            {
                "benchmark": "stylerig sample",
                "generator": args.generator,
                "n": args.n,
                "resolution": resolution,
                "threads": args.threads,
                "batch": args.batch,
                "device": args.device,
                "runs": runs,
                "seconds": runs[precisions[0]]["seconds"],
                "under_a_minute": float(runs[precisions[0]]["seconds"]) < 60,  # type: ignore[arg-type]
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
