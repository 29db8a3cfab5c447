"""``stylerig convert``: turn a downloaded generator checkpoint into the project's own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from stylerig_cli.app import app, console


@app.command()
def convert(
    src: Annotated[
        Path,
        typer.Argument(
            metavar="IN",
            help="Generator checkpoint: NVIDIA stylegan2-ada-pytorch .pkl, rosinality stylegan2-pytorch .pt, "
            "or a stylerig .safetensors. Read without running any code from it.",
            show_default=False,
        ),
    ],
    dst: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="Output file, conventionally *.safetensors (tensors + JSON config, no pickle).",
            show_default=False,
        ),
    ],
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Convert a StyleGAN2 generator checkpoint to stylerig's safetensors format."""
    from stylerig.gan import convert as convert_generator

    G = convert_generator(src, dst, overwrite=force)
    console.print(
        f"wrote [bold]{escape(str(dst))}[/]: {G.img_resolution}x{G.img_resolution} generator, "
        f"z_dim {G.z_dim}, w_dim {G.w_dim}, num_ws {G.num_ws}",
        highlight=False,
    )
