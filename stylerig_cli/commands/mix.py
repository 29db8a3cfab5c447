"""``stylerig mix``: transfer pose / expression / light from source faces to target faces (Figs. 5, 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console
from stylerig_cli.options import DFR_OF_RIG, RUN_DEVICE, rig_option


@app.command()
def mix(
    rig: Annotated[
        list[Path],
        rig_option("rig.safetensors (or its folder); repeat to combine rigs of different groups."),
    ],
    source: Annotated[
        str, typer.Option(metavar="SEEDS", help="Source seeds, e.g. 1,2,5-7 (rows).", show_default=False)
    ],
    target: Annotated[str, typer.Option(metavar="SEEDS", help="Target seeds (columns).", show_default=False)],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="GRID.png",
            help="The figure (a .json with the numbers is written beside it).",
            show_default=False,
        ),
    ],
    params: Annotated[
        str,
        typer.Option(
            "--params", metavar="pose,expression,illumination", help="What to take from the source."
        ),
    ] = "pose",
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Add StyleGAN's style mixing of the same pairs (coarse / middle / fine ws copied), side by side.",
        ),
    ] = False,
    dfr: Annotated[Path | None, DFR_OF_RIG] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator", "-g", metavar="PATH", help="Generator (default: the rig's).", show_default=False
        ),
    ] = None,
    truncation: Annotated[float, typer.Option(metavar="PSI", help="Truncation psi of the seeds.")] = 1.0,
    device: Annotated[str, RUN_DEVICE] = "cpu",
) -> None:
    """Each target face given each source face's parameters: sources down the left, targets across the top."""
    from stylerig.devices import resolve_device
    from stylerig.editing import load_editor, parse_groups, parse_seeds, run_mix, write_mix

    groups = parse_groups(params)
    sources, targets = parse_seeds(source), parse_seeds(target)
    editor = load_editor(rig, dfr=dfr, generator=generator, device=resolve_device(device))
    result = run_mix(editor, sources, targets, groups, baseline=baseline, truncation=truncation)
    args = {
        "rig": [str(r) for r in rig],
        "source": sources,
        "target": targets,
        "params": list(groups),
        "baseline": baseline,
        "dfr": None if dfr is None else str(dfr),
        "generator": None if generator is None else str(generator),
        "truncation": truncation,
        "out": str(out),
    }
    files = write_mix(result, editor, out, arguments=args)
    for n in editor.notes:
        console.print(f"[yellow]note:[/] {escape(n)}", highlight=False)
    if result.slots:
        split = ", ".join(f"{k} ws {v[0]}-{v[-1]}" for k, v in result.slots.items())
        console.print(f"style-mixing baseline: {split}", highlight=False)
    console.print(
        f"{len(sources)} x {len(targets)} pairs in {result.seconds['total']:.1f} s; wrote "
        f"{escape(files['figure'])}, {escape(files['json'])}",
        highlight=False,
    )
