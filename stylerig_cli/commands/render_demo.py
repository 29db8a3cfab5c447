"""``stylerig render-demo``: render the face model along each of its parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stylerig_cli.app import app, console


@app.command("render-demo")
def render_demo(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "runs/render-demo"
    ),
    face_model: Annotated[
        str | None,
        typer.Option(
            "--face-model",
            metavar="PATH",
            help="Face model: BFM_model_front.mat, 01_MorphableModel.mat (+ its companions), a Basel 2017 .h5, "
            "or a converted .safetensors. Default: the built-in procedural model.",
        ),
    ] = None,
    resolution: Annotated[int, typer.Option(min=16, max=1024, help="Size of each cell in pixels.")] = 160,
    columns: Annotated[int, typer.Option(min=2, max=15, help="Values per parameter row.")] = 7,
    renderer: Annotated[
        str, typer.Option(metavar="auto|torch|nvdiffrast", help="Rasterizer backend.")
    ] = "auto",
    device: Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to render.")] = "auto",
) -> None:
    """Render the face model swept along pose, expression, identity, albedo and light to a labelled PNG grid."""
    from stylerig.devices import resolve_device
    from stylerig.face import load_face_model
    from stylerig.render.sweep import run_render_demo

    dev = resolve_device(device)
    summary = run_render_demo(
        out,
        load_face_model(face_model),
        resolution=resolution,
        columns=columns,
        backend=renderer,
        device=dev,
    )
    console.print(
        f"rendered {summary['images']} images in {summary['seconds']} s\n"
        f"  grid: {summary['sweep']}\n  mean face: {summary['mean']}\n  record: {Path(out) / 'run.json'}"
    )
