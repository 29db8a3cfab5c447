"""``stylerig sample``: draw latents and images from a generator into a sample set (see stylerig.data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from stylerig_cli.app import app, console


@app.command()
def sample(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", help="Output folder of the sample set.", show_default=False
        ),
    ],
    n: Annotated[
        int,
        typer.Option(
            "--n",
            "-n",
            "--num-samples",
            min=1,
            metavar="N",
            help="Number of samples to draw (under torchrun use -n: torchrun reads --n as its own option).",
            show_default=False,
        ),
    ],
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            "-g",
            metavar="PATH",
            help="Generator checkpoint: NVIDIA stylegan2-ada-pytorch .pkl, rosinality .pt or stylerig "
            ".safetensors (read without running code from it). Default: the built-in world, which also "
            "writes the true params.npy and landmarks.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, metavar="S", help="First seed; sample i uses seed S + i (as generate.py).")
    ] = 0,
    truncation: Annotated[
        float, typer.Option("--truncation", metavar="PSI", help="Truncation psi (1 = none).")
    ] = 1.0,
    truncation_cutoff: Annotated[
        int | None,
        typer.Option(
            "--truncation-cutoff", min=0, metavar="L", help="Truncate only the first L ws (default: all)."
        ),
    ] = None,
    mix_max: Annotated[
        int | None,
        typer.Option(
            "--mix-max",
            min=1,
            metavar="K",
            help="Style-mix up to K codes per sample (paper: 5; 1 = no mixing). Default: 5, or 1 for the "
            "built-in world, whose ground truth exists only for unmixed codes.",
            show_default=False,
        ),
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            min=4,
            max=4096,
            metavar="R",
            help="Stored image size (antialiased resize). Default: the generator's own, at most 256.",
        ),
    ] = None,
    landmarks: Annotated[
        str,
        typer.Option(
            metavar="auto|world|face-alignment|dlib|none",
            help="68-point landmarks for landmarks.npy. auto: the world's exact ones for the built-in "
            "world, else face-alignment (when its weights are in place), else dlib, else none (noted). "
            "Images where a detector finds no face are dropped and counted in the manifest. "
            "`stylerig doctor` shows which detectors are ready.",
        ),
    ] = "auto",
    batch: Annotated[
        int, typer.Option(min=1, metavar="B", help="Samples per batch and per resumable chunk.")
    ] = 32,
    device: Annotated[
        str, typer.Option(metavar="auto|cpu|cuda[:N]", help="Where to run the generator.")
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            metavar="float32|float16|bfloat16",
            help="Compute precision of the synthesis network. float16: CUDA only (1.06-1.17x float32 on an "
            "H100, docs/gpu.md); bfloat16 runs on CPUs too (benchmarks/bench_sample.py). Images differ from "
            "float32 by a few levels at most; ws, params and landmarks are the same.",
        ),
    ] = "float32",
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace a different sample set already in DIR.")
    ] = False,
    rig: Annotated[
        list[Path] | None,
        typer.Option(
            "--rig",
            metavar="RIG",
            help="Conditional generation (paper §8.3): edit every drawn code with this rig (repeatable) to "
            "the --fix values before synthesis.",
            show_default=False,
        ),
    ] = None,
    fix: Annotated[
        list[str] | None,
        typer.Option(
            "--fix",
            metavar="K=V,...",
            help="Values every image gets (with --rig): yaw/pitch/roll in degrees, expression=NAME|FILE, "
            "light=NAME|FILE, or expression components (smile=1.5, expr3=0.4).",
            show_default=False,
        ),
    ] = None,
    dfr: Annotated[
        Path | None,
        typer.Option(
            "--dfr", metavar="DFR", help="With --rig: the DFR (default: the rig's own).", show_default=False
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, metavar="T", help="CPU threads per process (default: torch's choice)."),
    ] = None,
) -> None:
    """Write a sample set (W+ codes, images, manifest) for DFR and RigNet; resumable, torchrun-aware."""
    from stylerig.sampling import write_sample_set

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    edit = None
    if rig or fix:
        from stylerig.devices import resolve_device
        from stylerig.editing import conditional_edit

        edit = conditional_edit(rig or [], fix or [], dfr=dfr, device=resolve_device(device))

    with _ProgressBar() as bar:
        result = write_sample_set(
            out,
            generator,
            n,
            seed=seed,
            truncation=truncation,
            truncation_cutoff=truncation_cutoff,
            mix_max=mix_max,
            resolution=resolution,
            landmarks=landmarks,
            batch=batch,
            device=device,
            force=force,
            progress=bar.update,
            edit=edit,
            precision=precision,
        )
    if result.rank != 0:
        return
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for warning in getattr(edit, "warned", None) or []:
        if warning:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if result.already_complete:
        return
    rate = result.generated / result.seconds if result.seconds > 0 else 0.0
    where = "this run" if result.world_size == 1 else f"on rank 0 of {result.world_size}"
    console.print(
        f"wrote [bold]{escape(str(out))}[/]: {result.n} samples at {result.resolution}x{result.resolution} "
        f"in {result.seconds:.1f} s ({rate:.1f} images/s {where}"
        f"{', ' + str(result.reused) + ' kept from an interrupted run' if result.reused else ''})"
        f"{_dropped(result.dropped)}",
        highlight=False,
    )


def _dropped(dropped: dict[str, int]) -> str:
    """'; N dropped (no face found)' for a set with dropped rows, else ''."""
    n = int(dropped.get("no_landmarks", 0))
    return f"; {n} dropped (no face found)" if n else ""


class _ProgressBar:
    """A rich progress bar fed by ``progress(done, total)`` callbacks, showing images per second."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("sampling"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=os.environ.get("RANK", "0") not in ("", "0"),  # torchrun: rank 0 shows the bar
        )
        self._task: Any = None
        self._start: tuple[float, int] | None = None

    def __enter__(self) -> _ProgressBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, done: int, total: int) -> None:
        import time

        now = time.perf_counter()
        if self._task is None:
            self._task = self._progress.add_task("sample", total=total, completed=done, rate="")
            self._start = (now, done)
            return
        t0, d0 = self._start or (now, done)
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        self._progress.update(self._task, completed=done, total=total, rate=f"{rate:.1f} images/s")
