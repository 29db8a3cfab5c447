"""``stylerig analyze``: the paper's Figure 4 (slot changes per edit) and Figure 6 (F(w) statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console
from stylerig_cli.options import DFR_OF_RIG, RUN_DEVICE, rig_option


@app.command()
def analyze(
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", metavar="DIR", help="Sample set written by `stylerig sample`.", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.", show_default=False)
    ],
    rig: Annotated[
        list[Path] | None,
        rig_option("Rig(s) to analyse, one curve each (repeat)."),
    ] = None,
    dfr: Annotated[Path | None, DFR_OF_RIG] = None,
    pairs: Annotated[int, typer.Option(min=1, metavar="N", help="Mixing results for Figure 4.")] = 2500,
    max_samples: Annotated[
        int, typer.Option(min=2, metavar="N", help="Rows for Figure 6 (a seeded subset of larger sets).")
    ] = 20000,
    seed: Annotated[int, typer.Option(min=0, metavar="S", help="Seeds the pairs and the subset.")] = 0,
    device: Annotated[str, RUN_DEVICE] = "cpu",
) -> None:
    """Figure 4: mean and spread of ||ŵ_i - w_i|| per ws slot; Figure 6: mean and variance of F(w) per
    parameter (rotation, expression, illumination). PNG + CSV + JSON."""
    from stylerig.analysis import run_analysis
    from stylerig.devices import resolve_device

    args = {
        "data": str(data),
        "out": str(out),
        "rig": [str(r) for r in rig or []],
        "dfr": None if dfr is None else str(dfr),
        "pairs": pairs,
        "max_samples": max_samples,
        "seed": seed,
    }
    result = run_analysis(
        rig or [],
        data,
        out,
        dfr=dfr,
        pairs=pairs,
        max_samples=max_samples,
        seed=seed,
        device=resolve_device(device),
        arguments=args,
    )
    for label, s in result.curves.items():
        top = sorted(range(len(s["mean"])), key=lambda i: -s["mean"][i])[:3]
        console.print(f"  {escape(label)}: largest change in ws {', '.join(map(str, top))}", highlight=False)
    console.print(
        f"{result.n_pairs} mixing results, {result.n_samples} samples in {result.seconds['total']:.1f} s; "
        f"wrote {escape(str(out))}",
        highlight=False,
    )
