"""``stylerig world build``: train (or continue training) the built-in world's generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stylerig_cli.app import app, console

world_app = typer.Typer(
    help="The built-in synthetic world: rebuild its generator, measure it.", no_args_is_help=True
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
    edge_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="Weight of an L1 on neighbouring-pixel differences (0: off, the shipped recipe)."
        ),
    ] = 0.0,
    decay_start: Annotated[
        int, typer.Option(min=0, metavar="STEP", help="From this step on, lr x --decay-factor (0: never).")
    ] = 0,
    decay_factor: Annotated[
        float, typer.Option(min=0.0, help="Learning-rate factor after --decay-start.")
    ] = 0.25,
    decay2_start: Annotated[
        int,
        typer.Option(
            "--decay2-start",
            min=0,
            metavar="STEP",
            help="From this step on, lr x --decay-factor² (0: never).",
        ),
    ] = 0,
    prior_version: Annotated[
        int | None,
        typer.Option(
            "--prior-version",
            min=1,
            max=3,
            help="The world prior the targets come from (default: the shipped world's, 3; 2: ambient light "
            "free; 1: the first world's, whose small expressions no generator drew).",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Start a fresh run from this generator.safetensors (a warm start, e.g. the first stage's).",
        ),
    ] = None,
    normalize_z: Annotated[
        bool,
        typer.Option(
            "--normalize-z/--no-normalize-z",
            help="Whether the mapping network scales z to unit second moment first, as StyleGAN2 does. "
            "The world's truth depends on |z|, which a normalised z hides: the recipe's last stage switches "
            "it off (a warm start may change it; a resume may not).",
        ),
    ] = True,
    critic: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="An estimator.safetensors (trained on renders) whose reading of the generated images is "
            "pulled towards their factors: an imitative loss. Repeat it for an ensemble (the mean of each "
            "network's loss). Use other networks than the one that measures the world.",
        ),
    ] = None,
    critic_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of the critic's mean squared factor error (z units).")
    ] = 1.0,
    critic_groups: Annotated[
        str,
        typer.Option(
            metavar="G,G",
            help="What the critic's loss covers: factor groups (pose, expression, illumination, identity, ...) "
            "or single factors (light_elevation, ...); factors the prior ignores are left out.",
        ),
    ] = "pose",
    critic_factor_weights: Annotated[
        str,
        typer.Option(
            metavar="NAME=W,...",
            help="Multiply these factors' squared errors in the critic's loss (e.g. yaw=20); each must be "
            "one of --critic-groups.",
        ),
    ] = "",
    eval_every: Annotated[
        int,
        typer.Option(
            min=0, metavar="STEPS", help="Held-out PSNR logged every STEPS steps (0: only at the end)."
        ),
    ] = 100,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, metavar="STEPS", help="Checkpoint every STEPS steps (0: only at the end).")
    ] = 200,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads.")] = 2,
    device: Annotated[
        str,
        typer.Option(
            metavar="auto|cpu|cuda[:N]",
            help="Where to train (may change at a resume; the data stream is the same on every device).",
        ),
    ] = "cpu",
) -> None:
    """Train the world generator by regression onto the world's own renders (resumable; run it in parts).

    Each part stops at --minutes or --steps (totals over all parts) and leaves a checkpoint, the current
    generator and a log of held-out PSNR in DIR. See docs/world-convergence.md for what to expect.
    """
    import torch

    from stylerig.errors import InputError
    from stylerig.worlds.prior import PRIOR_VERSION
    from stylerig.worlds.train import TrainConfig, train_world_generator

    if minutes is None and steps is None:
        raise InputError(
            "give --minutes or --steps", hint="e.g. --minutes 30; the run resumes where it stopped"
        )
    if not critic and (critic_groups != "pose" or critic_weight != 1.0 or critic_factor_weights):
        given = (
            "--critic-groups"
            if critic_groups != "pose"
            else "--critic-weight"
            if critic_weight != 1.0
            else "--critic-factor-weights"
        )
        raise InputError(
            f"{given} only applies with --critic, which is not given",
            hint="pass --critic ESTIMATOR.safetensors, or leave out the critic's options",
        )
    comma = [str(c) for c in critic or [] if "," in str(c)]
    if comma:  # the setting joins the files with commas
        raise InputError(
            f"--critic {comma[0]}: a critic's path may not contain a comma",
            hint="rename or link the file to a path without commas",
        )
    torch.set_num_threads(threads)
    cfg = TrainConfig(
        lr=lr,
        feature_weight=feature_weight,
        edge_weight=edge_weight,
        decay_start=decay_start,
        decay_factor=decay_factor,
        decay2_start=decay2_start,
        threads=threads,
        prior_version=PRIOR_VERSION if prior_version is None else prior_version,
        init=str(init) if init is not None else "",
        normalize_z=normalize_z,
        critic=",".join(str(c) for c in critic or []),
        critic_weight=critic_weight if critic else 0.0,
        critic_groups=critic_groups,
        critic_factor_weights=critic_factor_weights,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        device=device,
    )
    train_world_generator(out, steps, minutes=minutes, resume=resume, seed=seed, config=cfg)
    console.print(f"generator: {out / 'generator.safetensors'}\nlog: {out / 'log.jsonl'}")


@world_app.command("report")
def report(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "runs/world-report"
    ),
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            "-g",
            metavar="PATH",
            help="A world generator from `stylerig world build` (default: the shipped one).",
        ),
    ] = None,
    n_fidelity: Annotated[int, typer.Option(min=1, help="Held-out seeds for the fidelity PSNR.")] = 256,
    n_estimator: Annotated[
        int, typer.Option(min=1, help="Held-out generator images for the estimator's accuracy.")
    ] = 256,
    n_entangle: Annotated[int, typer.Option(min=1, help="Seeds for the entanglement map.")] = 64,
    n_mixing: Annotated[int, typer.Option(min=1, help="Seeds for the style-mixing check.")] = 16,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads.")] = 2,
) -> None:
    """Measure a world: generator fidelity, estimator accuracy, ws entanglement, style mixing.

    Writes report.json, fidelity.png, ws_sensitivity.png/.csv, mixing.png and run.json into DIR.
    """
    import torch

    from stylerig.worlds import load_world
    from stylerig.worlds.report import write_world_report

    torch.set_num_threads(threads)
    world = load_world(generator)
    rep = write_world_report(
        world,
        out,
        n_fidelity=n_fidelity,
        n_estimator=n_estimator,
        n_entangle=n_entangle,
        n_mixing=n_mixing,
        progress=lambda s: console.print(f"[dim]{s}[/dim]"),
    )
    fid, est = rep["fidelity"], rep["estimator"]["generator_images"]
    rot = est["median_abs_rotation_err_deg"]
    console.print(
        f"fidelity: face PSNR {fid['mean_psnr_face']:.2f} dB (mean of {n_fidelity}; median "
        f"{fid['median_psnr_face']:.2f}, min {fid['min_psnr_face']:.2f}), whole image {fid['mean_psnr_all']:.2f} dB\n"
        f"estimator on generator images: median |rotation error| yaw {rot['yaw']:.2f} deg, pitch "
        f"{rot['pitch']:.2f} deg, roll {rot['roll']:.2f} deg; expression RMSE {est['expression_rmse']:.3f}, "
        f"illumination RMSE {est['illumination_rmse']:.3f}\n"
        f"entanglement: participation ratio of dw "
        + ", ".join(f"{g} {v:.0f}" for g, v in rep["entanglement"]["participation"].items())
        + " (of 512)\n"
        f"mixing: estimator fit PSNR {rep['mixing']['mixed']['fit_psnr_face']:.2f} dB on mixed codes vs "
        f"{rep['mixing']['unmixed']['fit_psnr_face']:.2f} dB unmixed\n"
        f"wrote {out}"
    )
