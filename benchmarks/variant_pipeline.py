"""One DFR variant through the demo's rig: fit-dfr (``DFRConfig`` overrides) -> train-rignet -> evaluate.

For sweeps on a lent GPU machine, where the tool returns only small files: the DFR, the rig and the
evaluation stay in OUT, and OUT/summary.json (a few KB) holds the DFR's metrics, the stage times and the
evaluation's metrics. Several variants run side by side as separate processes (gpu_session.sh, stage
``variants``); on a GPU each rig step is bound by launch overhead, so give each process its own threads.

Usage::

    python benchmarks/variant_pipeline.py SAMPLES OUT [--device cuda] [--threads 3] \\
        [--rig-steps 2400] [--pairs 500] [key=value ...]

``key=value`` are :class:`stylerig.training.dfr.DFRConfig` fields (``photo_rows=0``, ``seed=1``,
``batch=64``) or ``prior.<group>=weight``. The rig uses the demo's settings
(:class:`stylerig.demo.DemoConfig`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from stylerig.demo import DemoConfig
from stylerig.training.dfr import DFRConfig, fit_dfr


def dfr_config(overrides: list[str]) -> DFRConfig:
    """DFRConfig with ``key=value`` overrides (values as Python literals; ``prior.<group>=w``)."""
    cfg = DFRConfig()
    priors, fields = dict(cfg.prior_weights), {}
    for item in overrides:
        key, value = item.split("=", 1)
        if key.startswith("prior."):
            priors[key[len("prior.") :]] = float(value)
        else:
            fields[key] = ast.literal_eval(value)
    return dataclasses.replace(cfg, prior_weights=priors, **fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples")
    ap.add_argument("out")
    ap.add_argument("overrides", nargs="*", help="DFRConfig key=value")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--rig-steps", type=int, default=DemoConfig().rig_steps)
    ap.add_argument("--pairs", type=int, default=DemoConfig().eval_pairs)
    args = ap.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dfr_config(args.overrides)
    demo = DemoConfig()
    t0 = time.perf_counter()
    r = fit_dfr(args.samples, out / "dfr", config=cfg, device=args.device)
    t1 = time.perf_counter()
    dfr = str(out / "dfr" / "dfr.safetensors")
    cli = [sys.executable, "-m", "stylerig_cli"]
    rig = cli + [
        "train-rignet",
        "--data",
        args.samples,
        "--dfr",
        dfr,
        "--mode",
        "all",
        "--out",
        str(out / "rig"),
    ]
    rig += [
        "--steps",
        str(args.rig_steps),
        "--batch",
        str(demo.rig_batch),
        "--subspace",
        str(demo.rig_subspace),
    ]
    rig += [
        "--hidden",
        str(demo.rig_hidden),
        "--group-weight",
        demo.rig_group_weights,
        "--arch",
        demo.rig_arch,
    ]
    rig += [
        "--param-weight",
        str(demo.rig_param_weight),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    rig += ["--split"] if demo.rig_split else []
    with open(out / "rig.log", "w") as log:
        subprocess.run(rig, check=True, stdout=log, stderr=subprocess.STDOUT)
    t2 = time.perf_counter()
    ev = cli + [
        "evaluate",
        "--rig",
        str(out / "rig" / "rig.safetensors"),
        "--dfr",
        dfr,
        "--data",
        args.samples,
    ]
    ev += ["--out", str(out / "eval"), "--threads", str(args.threads), "--n-pairs", str(args.pairs)]
    with open(out / "eval.log", "w") as log:
        subprocess.run(ev, check=True, stdout=log, stderr=subprocess.STDOUT)
    t3 = time.perf_counter()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    keys = (
        "rotation_median_deg_yaw",
        "psnr_mask_db",
        "expression_rmse",
        "illumination_rmse",
        "train_seconds",
    )
    summary = {
        "overrides": args.overrides,
        "dfr": {k: r.metrics.get(k) for k in keys},
        "seconds": {"dfr": round(t1 - t0, 1), "rig": round(t2 - t1, 1), "evaluate": round(t3 - t2, 1)},
        "metrics": metrics,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    e, i = metrics["expression"], metrics["illumination"]
    print(json.dumps({"out": str(out), "expression": e["err_ratio"], "illumination": i["err_ratio"]}))


if __name__ == "__main__":
    main()
