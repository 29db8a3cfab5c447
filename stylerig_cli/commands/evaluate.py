"""``stylerig evaluate``: measure rigs' edits on the generator's images (stylerig.evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console
from stylerig_cli.options import DFR_OF_RIG, rig_option


@app.command()
def evaluate(
    rig: Annotated[
        list[Path],
        rig_option("rig.safetensors (or its folder); repeat for several."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Output folder (metrics.json, metrics.md, run.json).",
            show_default=False,
        ),
    ],
    dfr: Annotated[Path | None, DFR_OF_RIG] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            metavar="DIR",
            help="Sample set (default: the first rig's): the built-in world's, or one drawn from --generator.",
            show_default=False,
        ),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            "-g",
            metavar="PATH",
            help="Generator checkpoint (.pkl, .pt, .safetensors): its images are read with detected landmarks "
            "and an image fit (default: the built-in world and its own estimator).",
            show_default=False,
        ),
    ] = None,
    n_pairs: Annotated[int, typer.Option(min=1, metavar="N", help="Held-out pairs per edit.")] = 500,
    estimator: Annotated[
        str,
        typer.Option(
            metavar="auto|fast|fit", help="The world's estimator (fast: its CNN; fit: ~1.6 s/image)."
        ),
    ] = "auto",
    landmarks: Annotated[
        str,
        typer.Option(
            metavar="auto|face-alignment|dlib",
            help="Landmark detector for --generator (see `stylerig doctor`).",
        ),
    ] = "auto",
    face_model: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Face model the image fit uses with --generator (default: the DFR's).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="S",
            help="The held-out split and pairs (default: the first rig's training seed, so that the pairs "
            "are rows it did not train on).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, metavar="T", help="CPU threads (default: torch's choice).")
    ] = None,
) -> None:
    """Edit held-out codes towards other samples' parameters and read the generator's images with an
    independent estimator (the built-in world's own; for --generator, detected landmarks + an image fit,
    and dlib identity similarity when installed): pose error (binned by the requested change), expression /
    light error, drift of what must not change, the issue-6 targets."""
    import torch

    from stylerig.errors import InputError
    from stylerig.evaluate import evaluate as run
    from stylerig.evaluate import metrics_table

    if estimator not in ("auto", "fast", "fit"):
        raise InputError(f"unknown --estimator {estimator!r}", hint="use auto, fast or fit")
    if threads is not None:
        torch.set_num_threads(threads)
    args = {
        "rig": [str(r) for r in rig],
        "out": str(out),
        "dfr": None if dfr is None else str(dfr),
        "data": None if data is None else str(data),
        "generator": generator,
        "n_pairs": n_pairs,
        "estimator": estimator,
        "landmarks": landmarks,
        "face_model": face_model,
        "seed": seed,
        "threads": threads,
    }
    with console.status("evaluating") as status:
        result = run(
            rig,
            dfr,
            data,
            generator,
            n_pairs=n_pairs,
            out_dir=out,
            seed=seed,
            method=estimator,
            detector=landmarks,
            face_model=face_model,
            log=lambda m: status.update(escape(m)),
            arguments=args,
        )
    console.print(escape(metrics_table(result.metrics)), highlight=False)
    console.print(
        f"wrote {escape(str(out))}/metrics.json, metrics.md in {result.seconds:.1f} s", highlight=False
    )
