"""``stylerig fit-dfr``: train DFR (W+ code -> face parameters) on a sample set (stylerig.training.dfr)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig.presets import PAPER_DFR, WORLD_DFR
from stylerig_cli.app import app, console
from stylerig_cli.commands._training import print_preset, report_run, run_with_progress

_W, _P = WORLD_DFR, PAPER_DFR  # the presets' values, as the help states them


@app.command("fit-dfr")
def fit_dfr(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            metavar="DIR",
            help="Sample set written by `stylerig sample` (needs landmarks).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Output folder (dfr.safetensors, metrics.json, figure3.png, logs).",
            show_default=False,
        ),
    ],
    preset: Annotated[
        str,
        typer.Option(
            metavar="auto|world|paper",
            help="Default settings: world (what the built-in world's rigs need: --photo-rows "
            f"{_W['photo_rows']} --light-prior-weight {_W['light_prior_weight']:g} --confine "
            f"{','.join(_W['confine'])}), paper (the paper's DFR with {_P['photo_rows']} photometric rows per "
            "batch; --light-prior auto still confines the light on a world set) or auto (world for a set "
            "sampled from the built-in world, else paper). Options given explicitly win.",
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(min=1, metavar="N", help="Optimizer steps in total.")] = 2000,
    batch: Annotated[
        int, typer.Option(min=1, metavar="B", help="Samples per step (over all torchrun processes together).")
    ] = 32,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, metavar="LR", help="Peak learning rate of Adam (cosine decay).")
    ] = 1e-3,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to train.")] = "auto",
    renderer: Annotated[
        str,
        typer.Option(
            metavar="auto|torch|nvdiffrast", help="Rasterizer backend of the differentiable renderer."
        ),
    ] = "auto",
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Continue from DIR/checkpoint.safetensors when present."),
    ] = True,
    face_model: Annotated[
        str | None,
        typer.Option(
            "--face-model",
            metavar="PATH",
            help="Face model to fit (Basel .mat/.h5, stylerig .safetensors). Default: the built-in world's.",
        ),
    ] = None,
    light_prior: Annotated[
        str,
        typer.Option(
            metavar="auto|world|none|FILE.npz",
            help="Statistical light prior that confines the light to plausible SH lights: `world` (the "
            "built-in world's light statistics; what `auto` picks for a world set), `none` (27 free SH "
            "coefficients, as in the paper; `auto` for other sets), or an .npz with `mean` [27] and "
            "`cov` [27, 27] (e.g. fitted to the Basel Illumination Prior).",
        ),
    ] = "auto",
    light_dims: Annotated[
        int, typer.Option(min=1, max=27, metavar="K", help="Principal directions of the light prior kept.")
    ] = 4,
    light_prior_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="W",
            help="Weight of a Gaussian prior on the light along the light model's directions, per squared "
            "sd of the light prior (as the shape and albedo priors; not in the paper). 0: off. Default: the "
            f"preset's (world {_W['light_prior_weight']:g}, paper {_P['light_prior_weight']:g}).",
            show_default=False,
        ),
    ] = None,
    confine: Annotated[
        str | None,
        typer.Option(
            "--confine",
            metavar="GROUPS|none",
            help="Coefficient groups (identity, expression, reflectance; comma-separated) held to the "
            "components the built-in world's faces use (not in the paper; a world set only). On the demo's "
            "set 'identity,expression,reflectance' brings the rig's expression error 0.44 -> 0.34. none: off. "
            "Default: the preset's (world: those three; paper: none).",
            show_default=False,
        ),
    ] = None,
    photo_rows: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Rows of each batch rendered for the photometric term (0: all). All rows fit better and "
            "read the light better (built-in world: PSNR 30.6 -> 31.1 dB, vertical light 0.53 -> 0.69) in "
            "about twice the time (docs/rignet.md, session 13). Default: the preset's "
            f"(world {_W['photo_rows']}, paper {_P['photo_rows']}).",
            show_default=False,
        ),
    ] = None,
    landmark_fit_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="W",
            help="Weight of the term that pulls F's shape, expression and pose towards a least-squares fit "
            "to each training image's landmarks (Levenberg-Marquardt, before training; not in the paper). "
            "0: the paper's purely self-supervised DFR.",
        ),
    ] = 0.0,
    landmark_fit_prior: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="P",
            help="Prior weight of those fits per squared sd of shape and expression. Default: 1e-6 when the "
            "set's landmarks are exact (the built-in world's), 1e-3 for a detector's.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, metavar="S", help="Seeds the weights, the data order and the split.")
    ] = 0,
    threads: Annotated[
        int | None,
        typer.Option(min=1, metavar="T", help="CPU threads per process (default: torch's choice)."),
    ] = None,
) -> None:
    """Train DFR, the network from W+ codes to the 257 face parameters, self-supervised through the renderer.

    Defaults come from --preset (auto: the world recipe on a set of the built-in world, else the paper's
    DFR). Prints and writes held-out metrics (rotation error, landmark RMSE, masked PSNR). Resumable; Ctrl-C
    saves a checkpoint. Data-parallel with `torchrun --nproc_per_node K -m stylerig_cli fit-dfr ...`.
    """
    import torch

    from stylerig.presets import dfr_config
    from stylerig.training.dfr import fit_dfr as run

    if threads is not None:
        torch.set_num_threads(threads)
    groups = None
    if confine is not None:
        text = confine.strip().lower()
        groups = () if text in ("", "none") else tuple(g.strip() for g in text.split(",") if g.strip())
    cfg, preset_used = dfr_config(
        data,
        preset=preset,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        light_prior=light_prior,
        light_dims=light_dims,
        light_prior_weight=light_prior_weight,
        photo_rows=photo_rows,
        confine=groups,
        landmark_fit_weight=landmark_fit_weight,
        landmark_fit_prior=landmark_fit_prior,
    )
    args = {
        "data": str(data),
        "out": str(out),
        "preset": preset,
        "preset_used": preset_used,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "device": device,
        "renderer": renderer,
        "resume": resume,
        "face_model": face_model,
        "light_prior": light_prior,
        "light_dims": light_dims,
        "light_prior_weight": cfg.light_prior_weight,
        "photo_rows": cfg.photo_rows,
        "confine": ",".join(cfg.confine) or "none",
        "landmark_fit_weight": landmark_fit_weight,
        "landmark_fit_prior": landmark_fit_prior,
        "seed": seed,
        "threads": threads,
    }
    print_preset(
        preset,
        preset_used,
        f"--photo-rows {cfg.photo_rows} --light-prior-weight {cfg.light_prior_weight:g} "
        f"--confine {','.join(cfg.confine) or 'none'}",
    )
    result = run_with_progress(
        "fit-dfr",
        ("loss", "land_rmse_pct", "photo_mse"),
        lambda bar: run(
            data,
            out,
            config=cfg,
            device=device,
            renderer_backend=renderer,
            face_model=face_model,
            resume=resume,
            progress=bar,
            arguments=args,
        ),
    )
    if not report_run(result, steps, out):
        return
    t = result.train
    m = result.metrics
    lines = [
        f"trained {t.step} steps in {t.elapsed_s / 60:.2f} min (whole command {result.seconds / 60:.2f} min)"
    ]
    lines.append(f"held-out rows: {m.get('n')}")
    if "rotation_median_deg_yaw" in m:
        lines.append(
            "median |rotation error| yaw / pitch / roll: "
            f"{m['rotation_median_deg_yaw']:.2f} / {m['rotation_median_deg_pitch']:.2f} / {m['rotation_median_deg_roll']:.2f} deg"
        )
    if "landmark_rmse_pct" in m:
        lines.append(f"landmark RMSE: {m['landmark_rmse_pct']:.2f} % of the width")
    lines.append(
        f"PSNR inside the face mask: {m['psnr_mask_db']:.2f} dB (median {m['psnr_mask_db_median']:.2f})"
    )
    for key, v in (m.get("targets") or {}).items():
        verdict = "[green]met[/]" if v["met"] else "[red]missed[/]"
        if not v.get("measured", True):
            verdict = "[yellow]not measured[/] (the set has no ground truth for it)"
        lines.append(f"  target {key} {v['target']}: {verdict}")
    lines.append(f"wrote {escape(str(out))}/dfr.safetensors, metrics.json, figure3.png")
    for line in lines:
        console.print(line, highlight=False)
