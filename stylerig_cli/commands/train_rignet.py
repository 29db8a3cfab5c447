"""``stylerig train-rignet``: train a rig (W+ code, target parameters -> edited code) with a frozen DFR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig.presets import PAPER_RIG, WORLD_RIG, WORLD_RIG_ALL
from stylerig_cli.app import app, console
from stylerig_cli.commands._training import print_preset, report_run, run_with_progress

_MODES = ("pose", "expression", "illumination", "all")
_ARCHS = ("rignet", "steering", "delta")
_W, _WA, _P = WORLD_RIG, WORLD_RIG_ALL, PAPER_RIG  # the presets' values, as the help states them


@app.command("train-rignet")
def train_rignet(
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", metavar="DIR", help="Sample set written by `stylerig sample`.", show_default=False
        ),
    ],
    dfr: Annotated[
        Path,
        typer.Option(
            "--dfr",
            metavar="DFR",
            help="dfr.safetensors of `stylerig fit-dfr` (or its folder).",
            show_default=False,
        ),
    ],
    mode: Annotated[
        str,
        typer.Option(metavar="|".join(_MODES), help="What the rig controls.", show_default=False),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Output folder (rig.safetensors, metrics.json, logs).",
            show_default=False,
        ),
    ],
    preset: Annotated[
        str,
        typer.Option(
            metavar="auto|world|paper",
            help="Default settings: world (what reaches the accuracy targets on the built-in world: "
            f"--arch {_W['arch']} --subspace {_W['subspace']} --hidden {_W['hidden']} --param-weight "
            f"{_W['param_weight']:g} --steps {_W['steps']} --batch {_W['batch']}, and for mode all --split "
            f"--group-weight {_WA['group_weights']}), paper (the paper's linear RigNet, {_P['steps']} steps "
            f"of {_P['batch']} pairs) or auto (world for a set sampled from the built-in world, else paper). "
            "Options given explicitly win.",
        ),
    ] = "auto",
    no_rec: Annotated[bool, typer.Option("--no-rec", help="Ablation: drop L_rec.")] = False,
    no_edit: Annotated[bool, typer.Option("--no-edit", help="Ablation: drop L_edit.")] = False,
    no_consist: Annotated[bool, typer.Option("--no-consist", help="Ablation: drop L_consist.")] = False,
    rec_weight: Annotated[float, typer.Option(min=0.0, metavar="W", help="Weight of L_rec.")] = 1.0,
    edit_weight: Annotated[float, typer.Option(min=0.0, metavar="W", help="Weight of L_edit.")] = 1.0,
    consist_weight: Annotated[float, typer.Option(min=0.0, metavar="W", help="Weight of L_consist.")] = 1.0,
    param_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="W",
            help="Weight of L_param: the edit and consistency conditions on F's parameters directly (in F's "
            "output scale), besides the renderer's; not in the paper. 0: off. Default: the preset's "
            f"(world {_W['param_weight']:g}, paper {_P['param_weight']:g}).",
            show_default=False,
        ),
    ] = None,
    param_scale: Annotated[
        str,
        typer.Option(
            metavar="dfr|data",
            help="L_param's unit per value: dfr (F's output scale: 1 for coefficients, 0.3 for rotation and "
            "light) or data (the spread of F(w) over the training rows, the unit the measurements use).",
        ),
    ] = "dfr",
    group_weight: Annotated[
        str | None,
        typer.Option(
            metavar="G=W,...",
            help="Mode all: per-group weights of L_edit and L_consist, e.g. expression=10,illumination=3 "
            "(a smile costs far less render loss than a turn of the head; unnamed groups weigh 1). "
            f"Default: the preset's (world: {_WA['group_weights']} for mode all; paper: none).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            metavar="|".join(_ARCHS),
            help="rignet (paper), steering (baseline: sees only Δp, not w) or delta (RigNet reading Δp; "
            "no change is exactly no edit; give it --hidden so the edit depends on w). Default: the "
            f"preset's (world {_W['arch']}, paper {_P['arch']}).",
            show_default=False,
        ),
    ] = None,
    tied: Annotated[
        str,
        typer.Option(
            metavar="auto|yes|no",
            help="One residual for every ws slot (auto: when the set's codes have identical slots).",
        ),
    ] = "auto",
    subspace: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="K",
            help="Restrict each slot's edit to the codes' top K principal directions (0: off). Default: the "
            f"preset's (world {_W['subspace']}, paper {_P['subspace']}).",
            show_default=False,
        ),
    ] = None,
    hidden: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="H",
            help="Hidden width of each decoder (0: the paper's linear RigNet). Default: the preset's (world "
            f"{_W['hidden']}, paper {_P['hidden']}).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        bool | None,
        typer.Option(
            "--split/--no-split",
            help="Mode all: one decoder per group (pose, expression, light), each reading its own targets. "
            "Default: the preset's (world: split for mode all; paper: one decoder).",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help=f"Optimizer steps in total. Default: the preset's (world {_W['steps']}, paper {_P['steps']}).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="B",
            help="Pairs (w, v) per step, over all torchrun processes. Default: the preset's "
            f"(world {_W['batch']}, paper {_P['batch']}).",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, metavar="LR", help="Peak learning rate of Adam (cosine).")
    ] = 1e-3,
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to train.")] = "auto",
    renderer: Annotated[
        str, typer.Option(metavar="auto|torch|nvdiffrast", help="Rasterizer backend of the renderer.")
    ] = "auto",
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Continue from DIR/checkpoint.safetensors when present."),
    ] = True,
    seed: Annotated[
        int, typer.Option(min=0, metavar="S", help="Seeds the weights, the pairs and the split.")
    ] = 0,
    threads: Annotated[
        int | None,
        typer.Option(min=1, metavar="T", help="CPU threads per process (default: torch's choice)."),
    ] = None,
) -> None:
    """Train RigNet: L_rec + L_edit + L_consist in both directions, through the frozen DFR and the renderer.

    Defaults come from --preset (auto: the world recipe on a set of the built-in world, else the paper's
    RigNet); the preset used is printed and recorded in run.json. No generator runs: images and landmarks
    come from the sample set. Resumable; Ctrl-C saves a checkpoint. Prints held-out edit accuracy measured
    with the DFR.
    """
    import torch

    from stylerig.errors import InputError
    from stylerig.presets import rig_config
    from stylerig.training.rignet import train_rignet as run

    if mode not in _MODES:
        raise InputError(f"unknown --mode {mode!r}", hint=f"use one of {', '.join(_MODES)}")
    if arch is not None and arch not in _ARCHS:
        raise InputError(f"unknown --arch {arch!r}", hint=f"use one of {', '.join(_ARCHS)}")
    if tied not in ("auto", "yes", "no"):
        raise InputError(f"unknown --tied {tied!r}", hint="use auto, yes or no")
    if threads is not None:
        torch.set_num_threads(threads)
    cfg, preset_used = rig_config(
        data,
        mode,
        preset=preset,
        arch=arch,
        tied=tied,
        subspace=subspace,
        hidden=hidden,
        split=split,
        rec=not no_rec,
        edit=not no_edit,
        consist=not no_consist,
        rec_weight=rec_weight,
        edit_weight=edit_weight,
        consist_weight=consist_weight,
        param_weight=param_weight,
        param_scale=param_scale,
        group_weights=group_weight,
        batch=batch,
        steps=steps,
        lr=lr,
        seed=seed,
    )
    cfg.check()  # terms all off or all weighing 0, stray group weights -> InputError before any work
    args = {
        "data": str(data),
        "dfr": str(dfr),
        "mode": mode,
        "out": str(out),
        "preset": preset,
        "preset_used": preset_used,
        "no_rec": no_rec,
        "no_edit": no_edit,
        "no_consist": no_consist,
        "rec_weight": rec_weight,
        "edit_weight": edit_weight,
        "consist_weight": consist_weight,
        "param_weight": cfg.param_weight,
        "param_scale": param_scale,
        "group_weight": cfg.group_weights,
        "arch": cfg.arch,
        "tied": tied,
        "subspace": cfg.subspace,
        "hidden": cfg.hidden,
        "split": cfg.split,
        "steps": cfg.steps,
        "batch": cfg.batch,
        "lr": lr,
        "device": device,
        "renderer": renderer,
        "resume": resume,
        "seed": seed,
        "threads": threads,
    }
    print_preset(
        preset,
        preset_used,
        f"--arch {cfg.arch} --subspace {cfg.subspace} --hidden {cfg.hidden} --{'' if cfg.split else 'no-'}split "
        f"--param-weight {cfg.param_weight:g} --group-weight '{cfg.group_weights}' --steps {cfg.steps} "
        f"--batch {cfg.batch}",
    )
    result = run_with_progress(
        "train-rignet",
        ("loss", "rec", "edit", "consist"),
        lambda bar: run(
            data,
            dfr,
            out,
            config=cfg,
            device=device,
            renderer_backend=renderer,
            resume=resume,
            progress=bar,
            arguments=args,
        ),
    )
    if not report_run(result, cfg.steps, out):
        return
    t = result.train
    m = result.metrics
    console.print(
        f"trained {t.step} steps in {t.elapsed_s / 60:.2f} min ({result.samples_per_s:.1f} edits/s; "
        f"whole command {result.seconds / 60:.2f} min)",
        highlight=False,
    )
    console.print(f"held-out pairs (measured with the DFR): {int(m.get('n', 0))}", highlight=False)
    for key in sorted(m):
        if key.endswith(("_err_ratio", "_drift_ratio", "_median_err_deg", "_transfer_ratio")):
            console.print(f"  {key}: {m[key]:.3f}", highlight=False)
    console.print(f"wrote {escape(str(out))}/rig.safetensors, metrics.json", highlight=False)
