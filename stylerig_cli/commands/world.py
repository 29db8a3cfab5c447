"""``stylerig world build``: train (or continue training) the built-in world's generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stylerig_cli.app import app, console

world_app = typer.Typer(
    help="The built-in synthetic world (work in progress: not yet the default).", no_args_is_help=True
)
app.add_typer(world_app, name="world")


@world_app.command("build")
def build(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", help="Training folder; resumed when it holds a checkpoint."
        ),
    ] = Path("runs/world"),
    minutes: Annotated[
        float | None,
        typer.Option(min=0.1, metavar="M", help="Total wall-time budget (counts earlier parts)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Total step budget (counts earlier parts).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from the checkpoint in DIR.")
    ] = True,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the weights and the data stream.")] = 0,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (may change between parts).")] = 2e-3,
    feature_weight: Annotated[
        float, typer.Option(min=0.0, help="Extra loss weight near the brows, eyes, nose and mouth.")
    ] = 10.0,
    decay_start: Annotated[
        int, typer.Option(min=0, metavar="STEP", help="From this step on, lr x --decay-factor (0: never).")
    ] = 0,
    decay_factor: Annotated[
        float, typer.Option(min=0.0, help="Learning-rate factor after --decay-start.")
    ] = 0.25,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads.")] = 2,
) -> None:
    """Train the world generator by regression onto the world's own renders (resumable; run it in parts).

    Each part stops at --minutes or --steps (totals over all parts) and leaves a checkpoint, the current
    generator and a log of held-out PSNR in DIR. See docs/world-convergence.md for what to expect.
    """
    import torch

    from stylerig.errors import InputError
    from stylerig.worlds.train import TrainConfig, train_world_generator

    if minutes is None and steps is None:
        raise InputError(
            "give --minutes or --steps", hint="e.g. --minutes 30; the run resumes where it stopped"
        )
    torch.set_num_threads(threads)
    cfg = TrainConfig(
        lr=lr,
        feature_weight=feature_weight,
        decay_start=decay_start,
        decay_factor=decay_factor,
        threads=threads,
    )
    train_world_generator(out, steps, minutes=minutes, resume=resume, seed=seed, config=cfg)
    console.print(f"generator: {out / 'generator.safetensors'}\nlog: {out / 'log.jsonl'}")
