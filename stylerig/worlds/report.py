"""What the built-in world can show about itself: fidelity, estimator accuracy, entanglement, mixing.

:func:`world_report` measures, on held-out seeds (never seen in training: training z come from a torch
RNG, these from ``z_from_seeds``):

* **fidelity** -- PSNR between ``world.generator(z)`` and ``world.render(p, scene)`` inside the face mask
  (and over the whole image), [-1, 1] units with peak-to-peak 2;
* **estimator** -- ``world.estimate`` on *generator* images against the truth: |rotation error| per
  angle (degrees), expression / illumination RMSE (coefficient units), the same on the world's own
  renders for reference;
* **entanglement** -- for pairs of seeds that differ in one factor group only (pose, expression,
  illumination, identity, reflectance), (a) the participation ratio of the change of w over its 512
  coordinates (how many coordinates carry it: 1 would be a hand-wired coordinate), and (b) how much the
  image changes when only W+ slot i takes the changed code (RMS over pixels, per slot): the map of which
  slots each group lives in;
* **mixing** -- style-mixed codes (up to 5 codes, as ``stylerig sample --mix-max 5``) against unmixed
  ones: how well the world's face model explains them (the estimator's fit PSNR in its own face mask).

Outputs (:func:`write_world_report`): ``report.json``, ``fidelity.png`` (targets / generator / |diff|),
``ws_sensitivity.png`` + ``ws_sensitivity.csv``, ``mixing.png``, ``run.json``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES, factors_to_world
from stylerig.worlds.world import World

__all__ = ["FACTOR_GROUPS", "REPORT_SEEDS", "entanglement", "fidelity", "world_report", "write_world_report"]

#: First held-out seed of the report (the training log uses 1 000 000 ... 1 000 127).
REPORT_SEEDS = 2_000_000
#: The ``command`` the report's ``run.json`` records.
RUN_COMMAND = "world report"


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    se = (a - b).pow(2)
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.expand_as(se)
        mse = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def fidelity(world: World, seeds: Sequence[int]) -> dict[str, Any]:
    """Generator vs the world's render of the truth, per seed.

    Returns:
        ``{"psnr_face": [B] list, "psnr_all": [B] list, "mean_psnr_face", "mean_psnr_all",
        "images": (targets, generated, masks)}`` -- images [B, 3, 128, 128] in [-1, 1], masks [B, 1, H, W].
    """
    target, mask = world.render_seeds(seeds)
    gen = world.images(seeds)
    face = _psnr(gen, target, mask)
    whole = _psnr(gen, target)
    return {
        "psnr_face": face.tolist(),
        "psnr_all": whole.tolist(),
        "mean_psnr_face": float(face.mean()),
        "median_psnr_face": float(face.median()),
        "min_psnr_face": float(face.min()),
        "mean_psnr_all": float(whole.mean()),
        "images": (target, gen, mask),
    }


def _param_errors(est: torch.Tensor, true: torch.Tensor) -> dict[str, Any]:
    rot = (params.get(est, "rotation") - params.get(true, "rotation")).abs() * (180.0 / math.pi)
    med = rot.median(0).values
    p90 = rot.quantile(0.9, dim=0)
    return {
        "median_abs_rotation_err_deg": dict(zip(("yaw", "pitch", "roll"), med.tolist(), strict=True)),
        "p90_abs_rotation_err_deg": dict(zip(("yaw", "pitch", "roll"), p90.tolist(), strict=True)),
        "expression_rmse": float(
            (params.get(est, "expression") - params.get(true, "expression")).pow(2).mean().sqrt()
        ),
        "illumination_rmse": float(
            (params.get(est, "illumination") - params.get(true, "illumination")).pow(2).mean().sqrt()
        ),
        "expression_rms_true": float(params.get(true, "expression").pow(2).mean().sqrt()),
        "illumination_rms_true": float(params.get(true, "illumination").pow(2).mean().sqrt()),
    }


def estimator_accuracy(world: World, seeds: Sequence[int]) -> dict[str, Any]:
    """``world.estimate`` on generator images and on the world's renders of the same seeds, against truth."""
    true = world.params(seeds)
    t0 = time.perf_counter()
    est_gen = world.estimate(world.images(seeds))
    seconds = time.perf_counter() - t0
    est_render = world.estimate(world.render_seeds(seeds)[0])
    return {
        "n": len(seeds),
        "generator_images": _param_errors(est_gen, true),
        "world_renders": _param_errors(est_render, true),
        "seconds_per_image": seconds / len(seeds),
    }


@torch.no_grad()
def entanglement(world: World, seeds: Sequence[int], delta: float = 1.0) -> dict[str, Any]:
    """How each parameter group is spread over w's coordinates and over the W+ slots.

    For each seed and group, the group's factors are moved by ``delta`` (sd units, random signs) and:

    * ``participation[g]`` -- mean participation ratio ``(sum dw^2)^2 / sum dw^4`` of the change dw of w
      (1 = one coordinate carries it, 512 = spread evenly);
    * ``slot_effect[g][i]`` -- mean RMS image change (in [-1, 1] units) when only W+ slot i takes the
      changed code.

    Returns:
        ``{"groups": [...], "num_ws": L, "participation": {g: float}, "slot_effect": {g: [L floats]}}``.
    """
    G = world.generator
    z = world.z(seeds)
    base_ws = G.mapping(z, None, truncation_psi=1)
    base = G.synthesis(base_ws, noise_mode="const")
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {
        "groups": list(FACTOR_GROUPS),
        "num_ws": int(G.num_ws),
        "participation": {},
        "slot_effect": {},
    }
    for g, names in FACTOR_GROUPS.items():
        idx = [FACTOR_NAMES.index(n) for n in names]
        z2 = z.clone()
        signs = torch.randint(0, 2, (z.shape[0], len(idx)), generator=gen).to(z) * 2 - 1
        z2[:, idx] += delta * signs
        ws2 = G.mapping(z2, None, truncation_psi=1)
        dw = ws2[:, 0] - base_ws[:, 0]
        pr = dw.pow(2).sum(1).pow(2) / dw.pow(4).sum(1).clamp_min(1e-30)
        out["participation"][g] = float(pr.mean())
        effects = []
        for i in range(G.num_ws):
            mixed = base_ws.clone()
            mixed[:, i] = ws2[:, i]
            img = G.synthesis(mixed, noise_mode="const")
            effects.append(float((img - base).pow(2).flatten(1).mean(1).sqrt().mean()))
        out["slot_effect"][g] = effects
    return out


@torch.no_grad()
def mixing_check(world: World, seeds: Sequence[int], mix_max: int = 5) -> dict[str, Any]:
    """Style-mixed codes still show faces: the estimator's fit PSNR (inside the fitted face mask) on
    mixed codes vs unmixed codes of the same seeds, and the images (for a grid)."""
    from stylerig.gan import sample_ws
    from stylerig.worlds.estimate import estimate_factors

    G = world.generator
    ws_mixed = sample_ws(G, list(seeds), mix_max=mix_max, truncation_psi=1.0)
    ws_plain = sample_ws(G, list(seeds), mix_max=1, truncation_psi=1.0)
    n_codes = [int((ws_mixed[b] - ws_mixed[b, :1]).abs().amax(-1).gt(0).sum() > 0) for b in range(len(seeds))]
    res = {}
    images = {}
    for name, ws in (("unmixed", ws_plain), ("mixed", ws_mixed)):
        img = G.synthesis(ws, noise_mode="const")
        with torch.enable_grad():
            fit = estimate_factors(img)
        p, scene = factors_to_world(fit.factors)
        rec, mask = world.render(p, scene)
        res[name] = {
            "fit_psnr_face": float(_psnr(rec, img, mask).mean()),
            "fit_psnr_all": float(_psnr(rec, img).mean()),
        }
        images[name] = img
    res["mixed_rows"] = int(sum(n_codes))
    res["n"] = len(seeds)
    res["images"] = images
    return res


def world_report(
    world: World,
    *,
    n_fidelity: int = 256,
    n_estimator: int = 256,
    n_entangle: int = 64,
    n_mixing: int = 16,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """All four measurements (see the module docstring) on consecutive seeds from :data:`REPORT_SEEDS`."""
    say = progress or (lambda s: None)
    seeds = list(range(REPORT_SEEDS, REPORT_SEEDS + max(n_fidelity, n_estimator, n_entangle, n_mixing)))
    say(f"fidelity on {n_fidelity} held-out seeds")
    fid = fidelity(world, seeds[:n_fidelity])
    say(f"estimator on {n_estimator} generator images")
    est = estimator_accuracy(world, seeds[:n_estimator])
    say(f"entanglement on {n_entangle} seeds")
    ent = entanglement(world, seeds[:n_entangle])
    say(f"style mixing on {n_mixing} seeds")
    mix = mixing_check(world, seeds[:n_mixing])
    return {"seeds_from": REPORT_SEEDS, "fidelity": fid, "estimator": est, "entanglement": ent, "mixing": mix}


def _ws_plot(ent: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ent["groups"]
    mat = np.array([ent["slot_effect"][g] for g in groups])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1.2]})
    ax = axes[0]
    im = ax.imshow(mat / mat.max(1, keepdims=True), aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(range(len(groups)), [f"{g}" for g in groups])
    ax.set_xticks(range(mat.shape[1]))
    ax.set_xlabel("W+ slot i (4x4: 0-1, 8x8: 1-3, 16x16: 3-5, ..., 128x128: 9-11)")
    ax.set_title("image change when only slot i takes the changed code\n(row-normalised; numbers in the CSV)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax = axes[1]
    pr = [ent["participation"][g] for g in groups]
    ax.barh(range(len(groups)), pr, color="tab:blue")
    ax.set_yticks(range(len(groups)), groups)
    ax.invert_yaxis()
    ax.set_xlabel("participation ratio of the change of w\n(of 512 coordinates; 1 = hand-wired)")
    for i, v in enumerate(pr):
        ax.text(v, i, f" {v:.0f}", va="center")
    fig.tight_layout()
    import io

    from stylerig.outputs import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_world_report(world: World, out_dir: str | os.PathLike[str], **kw: Any) -> dict[str, Any]:
    """Run :func:`world_report` and write its files into ``out_dir``; returns the JSON-able summary.

    The files land together (:func:`stylerig.outputs.staged_outputs`): an error part-way (a full disk)
    leaves an earlier report in ``out_dir`` whole.

    Raises:
        InputError: ``out_dir`` holds another command's outputs (checked before anything is computed).
        AssetError: the files cannot be written.
    """
    from stylerig.outputs import (
        atomic_write,
        claim_output_dir,
        save_png,
        staged_outputs,
        write_json,
        write_run_json,
    )
    from stylerig.viz import labelled_grid, to_uint8

    out = claim_output_dir(out_dir, RUN_COMMAND)
    rep = world_report(world, **kw)
    target, gen, mask = rep["fidelity"].pop("images")
    k = min(8, target.shape[0])
    diff = ((gen[:k] - target[:k]).abs() * 2.0 - 1.0).clamp(-1, 1)
    rows = [list(to_uint8(x)) for x in (target[:k], gen[:k], diff)]
    ims = rep["mixing"].pop("images")
    ent = rep["entanglement"]
    with staged_outputs(out) as stage:
        save_png(
            stage / "fidelity.png",
            labelled_grid(
                rows,
                row_labels=["world render", "generator", "|difference| x2"],
                col_labels=[f"seed {REPORT_SEEDS + i}" for i in range(k)],
            ),
        )
        m = min(8, ims["mixed"].shape[0])
        save_png(
            stage / "mixing.png",
            labelled_grid(
                [list(to_uint8(ims["unmixed"][:m])), list(to_uint8(ims["mixed"][:m]))],
                row_labels=["unmixed", "mixed (<=5 codes)"],
                col_labels=[f"seed {REPORT_SEEDS + i}" for i in range(m)],
            ),
        )
        _ws_plot(ent, stage / "ws_sensitivity.png")
        lines = ["group,participation_ratio," + ",".join(f"slot_{i}" for i in range(ent["num_ws"]))]
        for g in ent["groups"]:
            vals = ",".join(f"{v:.5f}" for v in ent["slot_effect"][g])
            lines.append(f"{g},{ent['participation'][g]:.2f},{vals}")
        atomic_write(stage / "ws_sensitivity.csv", ("\n".join(lines) + "\n").encode())
        write_json(stage / "report.json", rep)
        arguments = {k: v for k, v in kw.items() if k != "progress"}  # a callback, not a setting
        from stylerig.worlds.estimator import describe_estimators

        write_run_json(
            stage,
            command=RUN_COMMAND,
            arguments=arguments,
            seed=REPORT_SEEDS,
            assets={"world": world.name, "estimators": describe_estimators()},
        )
    return rep
