"""``stylerig edit``: edit one face's head pose, expression or light with trained rigs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console, err_console
from stylerig_cli.options import DFR_OF_RIG, RUN_DEVICE, rig_option


def _angle(name: str, delta: bool = False) -> object:
    what = (
        f"Change of {name} in degrees (added to the face's own)." if delta else f"Target {name} in degrees."
    )
    flag = f"--delta-{name}" if delta else f"--{name}"
    return typer.Option(flag, metavar="DEG", help=what, show_default=False)


@app.command()
def edit(
    rig: Annotated[
        list[Path],
        rig_option(
            "rig.safetensors of `stylerig train-rignet` (or its folder); repeat to combine rigs of "
            "different groups (applied in the order given)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="A folder (edited.png, comparison.png, edited_ws.npy, edit.json, run.json), or a .png file "
            "(the other files beside it, named after it).",
            show_default=False,
        ),
    ],
    seed: Annotated[
        int | None, typer.Option(min=0, metavar="S", help="Edit the face of this seed.", show_default=False)
    ] = None,
    latent: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.npy", help="Edit this W+ code ([num_ws, w_dim], or one w).", show_default=False
        ),
    ] = None,
    yaw: Annotated[float | None, _angle("yaw")] = None,
    pitch: Annotated[float | None, _angle("pitch")] = None,
    roll: Annotated[float | None, _angle("roll")] = None,
    delta_yaw: Annotated[float | None, _angle("yaw", True)] = None,
    delta_pitch: Annotated[float | None, _angle("pitch", True)] = None,
    delta_roll: Annotated[float | None, _angle("roll", True)] = None,
    expression: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|FILE",
            help="neutral, smile, laugh, open-mouth, surprise, eyes-closed, brows-up (built-in face model), "
            "or a .npy/.json of 64 coefficients.",
            show_default=False,
        ),
    ] = None,
    expr: Annotated[
        list[str] | None,
        typer.Option(
            metavar="I=V",
            help="Set one expression coefficient (index 0-63 or a component name such as smile) in sd; repeatable.",
            show_default=False,
        ),
    ] = None,
    light: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|FILE",
            help="ambient, front, left, right, top, dim, bright, warm, cool, or a .npy/.json of 27 SH values.",
            show_default=False,
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            metavar="NAME=START:STOP:N",
            help="Sweep one value over N frames (yaw/pitch/roll/light-azimuth in degrees, or an expression "
            "component): writes a labelled strip and an animated GIF.",
            show_default=False,
        ),
    ] = None,
    dfr: Annotated[Path | None, DFR_OF_RIG] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            "-g",
            metavar="PATH",
            help="Generator (default: the rig's sample set's, else the built-in world).",
            show_default=False,
        ),
    ] = None,
    truncation: Annotated[float, typer.Option(metavar="PSI", help="Truncation psi for --seed.")] = 1.0,
    world_estimate: Annotated[
        bool,
        typer.Option(
            "--world-estimate",
            help="Also read the images with the built-in world's independent estimator (~2 s per image).",
        ),
    ] = False,
    device: Annotated[str, RUN_DEVICE] = "cpu",
) -> None:
    """Edit a face: ŵ = RigNet(w, target), with the target = the face's own parameters (from the DFR)
    changed as asked. Angles in degrees."""
    from stylerig.devices import resolve_device
    from stylerig.editing import (
        EditRequest,
        load_editor,
        parse_assignments,
        parse_sweep,
        run_edit,
        write_edit,
    )
    from stylerig.errors import InputError
    from stylerig.outputs import claim_output_dir

    # Refuse another command's folder before any work (write_edit checks again before writing).
    claim_output_dir(out.parent if out.suffix.lower() == ".png" else out, "edit")
    if (seed is None) == (latent is None):
        raise InputError("give exactly one of --seed and --latent", hint="e.g. --seed 3")
    angles = {k: v for k, v in (("yaw", yaw), ("pitch", pitch), ("roll", roll)) if v is not None}
    deltas = {
        k: v for k, v in (("yaw", delta_yaw), ("pitch", delta_pitch), ("roll", delta_roll)) if v is not None
    }
    expr_values = {k: float(v) for k, v in parse_assignments(expr or [], "--expr").items()} if expr else {}
    request = EditRequest(angles=angles, deltas=deltas, expression=expression, expr=expr_values, light=light)
    sw = parse_sweep(sweep) if sweep else None
    editor = load_editor(rig, dfr=dfr, generator=generator, device=resolve_device(device))
    result = run_edit(
        editor,
        seed=seed,
        latent=latent,
        request=request,
        sweep=sw,
        truncation=truncation,
        world_estimate=world_estimate,
    )
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    for n in editor.notes:
        console.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    if not request.groups() and sw is None:
        console.print(
            "[yellow]note:[/] nothing to change was asked: the edit reproduces the face", highlight=False
        )
    source = {"seed": seed, "truncation": truncation} if seed is not None else {"latent": str(latent)}
    args = {
        "rig": [str(r) for r in rig],
        "seed": seed,
        "latent": None if latent is None else str(latent),
        "request": request.as_dict(),
        "sweep": sweep,
        "dfr": None if dfr is None else str(dfr),
        "generator": None if generator is None else str(generator),
        "truncation": truncation,
        "world_estimate": world_estimate,
        "out": str(out),
    }
    files = write_edit(result, editor, out, request=request, sweep=sw, source=source, arguments=args)
    rot = [result.p_before[0], result.p_target[0], result.p_after[0]]
    import math

    from stylerig import params

    def deg(p: object) -> str:
        r = params.get(p, "rotation")  # type: ignore[arg-type]
        return "/".join(f"{math.degrees(float(v)):+.1f}" for v in r)

    if sw is None:
        console.print(
            f"yaw/pitch/roll (DFR, deg): before {deg(rot[0])}, target {deg(rot[1])}, after {deg(rot[2])}",
            highlight=False,
        )
    console.print(
        f"edited in {result.seconds['total']:.1f} s; wrote {escape(', '.join(sorted(set(files.values()))))}",
        highlight=False,
    )
