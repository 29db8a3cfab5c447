"""``stylerig demo``: the whole mission on the built-in world in one call (issue 8).

sample → fit-dfr → train-rignet (mode ``all``: one rig for pose, expression and illumination) → mix →
analyze → evaluate, each by its library function (no subprocesses), into one folder::

    OUT/samples/     the sample set (stylerig sample)
    OUT/dfr/         dfr.safetensors, figure3.png (stylerig fit-dfr)
    OUT/rig/         rig.safetensors (stylerig train-rignet --mode all)
    OUT/mix/         mix_pose.png, mix_expression.png, mix_illumination.png (+ .json; stylerig mix)
    OUT/analysis/    fig4_slot_change.png, fig6_parameters.png (stylerig analyze)
    OUT/evaluate/    metrics.json, metrics.md (stylerig evaluate)
    OUT/demo.json    the stages, their times, and the key numbers against issue 6's targets

A stage whose output already exists is skipped, so running the demo again resumes where it stopped (the
sample set and the two trainings also resume inside a stage). :class:`DemoConfig` holds the step counts;
the defaults aim at the issue's budget of 15 minutes on 2 CPU cores, :meth:`DemoConfig.quick` is a
smoke run of seconds (its numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stylerig.errors import AssetError, StylerigError
from stylerig.presets import WORLD_DFR, WORLD_RIG, WORLD_RIG_ALL

__all__ = ["STAGES", "DemoConfig", "DemoProgress", "DemoResult", "StageRecord", "run_demo"]

#: The stages in order.
STAGES: tuple[str, ...] = ("sample", "fit-dfr", "train-rignet", "mix", "analyze", "evaluate")

_MIX_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pose", ("rotation",)),
    ("expression", ("expression",)),
    ("illumination", ("illumination",)),
)


@dataclass(frozen=True)
class DemoConfig:
    """Step counts and sizes of the demo.

    Session 11's defaults took 11.7 minutes end to end on the project's quiet 2-core machine (sample 28 s,
    fit-dfr 1.5 min, train-rignet 8.2 min, mix + analyze 3 s, evaluate 1.5 min). Session 13's DFR
    settings (below) add about 1.2 min to fit-dfr, and since session 14 evaluate generates each image
    once (about 40 % less), and the rig trains 2,000 steps instead of 2,400. Session 14's run took 15.5
    min on a day when the machine ran the unchanged sample stage 1.7x slower than in session 11
    (``docs/demo.md``). Session 15's, with a faster rasterizer, 1,600 rig steps and no
    ``OMP_WAIT_POLICY=PASSIVE`` (which slows a lone run 1.45x), took 12.1 min, and 9.9 min with the rig's
    40-direction subspace. Session 16's, with the ``world`` preset's 1,000 rig steps and fused Adam, 8.6 min;
    session 17's (subspace 32) 9.4 min in a slower hour (the machine's speed varies by about a quarter from
    hour to hour). On cores shared with other work, expect up to twice that.
    """

    n_samples: int = 3000  # sample set size (128x128 world portraits)
    dfr_steps: int = 2000  # DFR steps of batch dfr_batch (the DFR issue's defaults)
    dfr_batch: int = 32
    # The DFR and the rig: the ``world`` preset of fit-dfr and train-rignet (:mod:`stylerig.presets` has the
    # measurements behind each value), a rig of mode all.
    dfr_photo_rows: int = WORLD_DFR["photo_rows"]
    dfr_light_prior_weight: float = WORLD_DFR["light_prior_weight"]
    dfr_confine: tuple[str, ...] = WORLD_DFR["confine"]
    rig_steps: int = WORLD_RIG["steps"]
    rig_batch: int = WORLD_RIG["batch"]  # pairs per RigNet step (mode all renders 3x per pair)
    rig_subspace: int = WORLD_RIG["subspace"]  # 0 and rig_hidden 0 give the paper's linear rig
    rig_hidden: int = WORLD_RIG["hidden"]
    rig_split: bool = WORLD_RIG_ALL["split"]
    rig_group_weights: str = WORLD_RIG_ALL["group_weights"]
    rig_arch: str = WORLD_RIG["arch"]
    rig_param_weight: float = WORLD_RIG["param_weight"]
    mix_sources: tuple[int, ...] = (1, 2, 3)  # seeds of the mixing figures (rows)
    mix_targets: tuple[int, ...] = (4, 5, 6, 7)  # (columns)
    analyze_pairs: int = 500  # mixing results for Figure 4
    analyze_samples: int = 3000  # rows for Figure 6
    eval_pairs: int = 500  # held-out pairs per edit (issue 6: 500)
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke run (seconds, meaningless numbers): every stage runs, tiny."""
        return cls(
            n_samples=48,
            dfr_steps=4,
            dfr_batch=4,
            rig_steps=2,
            rig_batch=2,
            rig_subspace=8,
            rig_hidden=8,
            mix_sources=(1,),
            mix_targets=(2, 3),
            analyze_pairs=8,
            analyze_samples=48,
            eval_pairs=6,
        )


@dataclass(frozen=True)
class StageRecord:
    """One stage: ``name``, wall ``seconds`` (0 when skipped), ``skipped`` (its output existed), and
    ``outputs`` (role -> path)."""

    name: str
    seconds: float
    skipped: bool
    outputs: dict[str, str]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did: ``out_dir``, the ``stages``, the evaluation's ``metrics`` (the content
    of ``evaluate/metrics.json``), the ``pictures`` (role -> PNG path) and ``seconds`` in total."""

    out_dir: Path
    stages: tuple[StageRecord, ...]
    metrics: dict[str, Any]
    pictures: dict[str, str]
    seconds: float
    notes: tuple[str, ...] = field(default=())


class DemoProgress(Protocol):
    """Progress of the demo: ``stage`` when a stage starts (``skipped`` True when its output exists),
    ``update`` as it goes (``info`` a short status text)."""

    def stage(self, name: str, index: int, total: int, skipped: bool) -> None: ...

    def update(self, done: int, total: int, info: str = "") -> None: ...


class _Silent:
    def stage(self, name: str, index: int, total: int, skipped: bool) -> None:
        pass

    def update(self, done: int, total: int, info: str = "") -> None:
        pass


def _trainer_callback(progress: DemoProgress, keys: tuple[str, ...]) -> Callable[..., None]:
    def cb(step: int, total: int, record: Any) -> None:
        info = "  ".join(f"{k} {record[k]:.4g}" for k in keys if record and k in record)
        progress.update(step, total, info)

    return cb


def run_demo(
    out_dir: str | os.PathLike[str] = "runs/demo",
    config: DemoConfig | None = None,
    *,
    device: str = "cpu",
    renderer: str = "auto",
    progress: DemoProgress | None = None,
    arguments: dict[str, Any] | None = None,
) -> DemoResult:
    """Run (or resume) the demo on the built-in world; see the module docstring for the layout.

    Args:
        out_dir: the demo folder. config: :class:`DemoConfig` (defaults when None).
        device: where to train and generate ('cpu' | 'auto' | 'cuda[:N]').
        renderer: the rasterizer of fit-dfr and train-rignet, 'auto' | 'torch' | 'nvdiffrast' ('auto':
            nvdiffrast on CUDA when it is installed, else the torch rasterizer).
        progress: a :class:`DemoProgress` (e.g. the CLI's rich view).
        arguments: the command's arguments, recorded in ``demo.json``.

    Returns:
        :class:`DemoResult`.

    Raises:
        StylerigError: from any stage (a damaged output folder, a full disk, ...).
    """
    from stylerig.analysis import run_analysis
    from stylerig.devices import resolve_device
    from stylerig.dfr import load_dfr
    from stylerig.editing import load_editor, run_mix, write_mix
    from stylerig.evaluate import evaluate
    from stylerig.outputs import write_json
    from stylerig.render.ops import resolve_backend
    from stylerig.rignet import load_rignet
    from stylerig.sampling import write_sample_set
    from stylerig.training.dfr import DFRConfig, fit_dfr
    from stylerig.training.rignet import RigConfig, train_rignet

    t0 = time.perf_counter()
    resolve_backend(renderer, resolve_device(device))  # refuse a bad or unavailable choice before any work
    cfg = config or DemoConfig()
    prog = progress or _Silent()
    out = Path(out_dir)
    d_samples, d_dfr, d_rig = out / "samples", out / "dfr", out / "rig"
    d_mix, d_ana, d_eval = out / "mix", out / "analysis", out / "evaluate"
    dfr_file, rig_file = d_dfr / "dfr.safetensors", d_rig / "rig.safetensors"
    stages: list[StageRecord] = []
    notes: list[str] = []

    def stage(
        name: str,
        done: bool,
        fn: Callable[[], dict[str, str]],
        outputs: dict[str, str],
        verify: Callable[[], object] | None = None,
    ) -> None:
        prog.stage(name, len(stages), len(STAGES), done)
        if done and verify is not None:  # a skipped stage's output must still be usable
            _verify_output(name, verify)
        t = time.perf_counter()
        got = outputs if done else fn()
        done = done or bool(got.pop("_skipped", ""))  # a stage that found its work already done
        stages.append(StageRecord(name, 0.0 if done else time.perf_counter() - t, done, got))

    # sample: write_sample_set confirms a complete set at once, or finishes an interrupted one.
    def do_sample() -> dict[str, str]:
        try:
            r = write_sample_set(
                d_samples,
                None,
                cfg.n_samples,
                seed=cfg.seed,
                landmarks="auto",
                device=device,
                progress=lambda done, total: prog.update(done, total, "images"),
                command="demo",
            )
        except StylerigError as e:
            if "--force" not in (e.hint or ""):
                raise
            raise AssetError(  # the demo has no --force: say what to do instead
                f"the demo's sample stage: {e.message}",
                hint=f"delete {d_samples} (or pass another --out) and run the demo again",
            ) from e
        notes.extend(r.notes)
        return {"set": str(d_samples)} | ({"_skipped": "yes"} if r.already_complete else {})

    stage("sample", False, do_sample, {})

    def do_dfr() -> dict[str, str]:
        dc = dataclasses.replace(
            DFRConfig(),
            steps=cfg.dfr_steps,
            batch=cfg.dfr_batch,
            seed=cfg.seed,
            photo_rows=cfg.dfr_photo_rows,
            light_prior_weight=cfg.dfr_light_prior_weight,
            confine=cfg.dfr_confine,
        )
        # Keep the DFR recipe's shape (its 1,200-step landmark phase of 2,000) at fewer steps.
        if cfg.dfr_steps < DFRConfig().photo_start * 1.5:
            dc = dataclasses.replace(
                dc,
                landmark_steps=int(cfg.dfr_steps * 0.6),
                warmup=min(dc.warmup, cfg.dfr_steps),
                photo_ramp=max(1, min(dc.photo_ramp, cfg.dfr_steps // 20)),
            )
        r = fit_dfr(
            d_samples,
            d_dfr,
            config=dc,
            device=device,
            renderer_backend=renderer,
            progress=_trainer_callback(prog, ("loss", "land_rmse_pct")),
            arguments={"demo": True, "steps": cfg.dfr_steps, "batch": cfg.dfr_batch},
        )
        notes.extend(r.notes)
        return {"dfr": str(dfr_file), "figure3": str(d_dfr / "figure3.png")}

    stage(
        "fit-dfr",
        dfr_file.exists(),
        do_dfr,
        {"dfr": str(dfr_file), "figure3": str(d_dfr / "figure3.png")},
        verify=lambda: load_dfr(dfr_file),
    )

    def do_rig() -> dict[str, str]:
        rc = RigConfig(
            mode="all",
            steps=cfg.rig_steps,
            batch=cfg.rig_batch,
            seed=cfg.seed,
            warmup=min(20, cfg.rig_steps),
            val_every=max(cfg.rig_steps, 1),
            checkpoint_every=max(50, cfg.rig_steps // 4),
            subspace=cfg.rig_subspace,
            hidden=cfg.rig_hidden,
            split=cfg.rig_split,
            group_weights=cfg.rig_group_weights,
            arch=cfg.rig_arch,
            param_weight=cfg.rig_param_weight,
        )
        r = train_rignet(
            d_samples,
            dfr_file,
            d_rig,
            config=rc,
            device=device,
            renderer_backend=renderer,
            progress=_trainer_callback(prog, ("loss", "edit", "consist")),
            arguments={
                "demo": True,
                "mode": "all",
                "steps": cfg.rig_steps,
                "batch": cfg.rig_batch,
                "subspace": cfg.rig_subspace,
                "hidden": cfg.rig_hidden,
                "split": cfg.rig_split,
                "group_weight": cfg.rig_group_weights,
                "arch": cfg.rig_arch,
                "param_weight": cfg.rig_param_weight,
            },
        )
        notes.extend(r.notes)
        return {"rig": str(rig_file)}

    stage(
        "train-rignet",
        rig_file.exists(),
        do_rig,
        {"rig": str(rig_file)},
        verify=lambda: load_rignet(rig_file),
    )

    mix_pngs = {f"mix_{label}": str(d_mix / f"mix_{label}.png") for label, _ in _MIX_GROUPS}

    def do_mix() -> dict[str, str]:
        editor = load_editor([rig_file], dfr=dfr_file, device=resolve_device(device))
        for i, (label, groups) in enumerate(_MIX_GROUPS):
            prog.update(i, len(_MIX_GROUPS), label)
            res = run_mix(editor, list(cfg.mix_sources), list(cfg.mix_targets), groups)
            write_mix(
                res,
                editor,
                mix_pngs[f"mix_{label}"],
                arguments={
                    "demo": True,
                    "params": label,
                    "source": cfg.mix_sources,
                    "target": cfg.mix_targets,
                },
            )
        prog.update(len(_MIX_GROUPS), len(_MIX_GROUPS), "")
        return dict(mix_pngs)

    stage("mix", all(Path(p).exists() for p in mix_pngs.values()), do_mix, dict(mix_pngs))

    ana_out = {"fig4": str(d_ana / "fig4_slot_change.png"), "fig6": str(d_ana / "fig6_parameters.png")}

    def do_analyze() -> dict[str, str]:
        prog.update(0, 1, "Figures 4 and 6")
        run_analysis(
            [rig_file],
            d_samples,
            d_ana,
            dfr=dfr_file,
            pairs=cfg.analyze_pairs,
            max_samples=cfg.analyze_samples,
            seed=cfg.seed,
            arguments={"demo": True, "pairs": cfg.analyze_pairs},
        )
        prog.update(1, 1, "")
        return dict(ana_out)

    stage("analyze", (d_ana / "run.json").exists(), do_analyze, dict(ana_out))

    ev_out = {"metrics": str(d_eval / "metrics.json"), "table": str(d_eval / "metrics.md")}

    def do_evaluate() -> dict[str, str]:
        evaluate(
            [rig_file],
            dfr_file,
            d_samples,
            n_pairs=cfg.eval_pairs,
            out_dir=d_eval,
            seed=cfg.seed,
            log=lambda m: prog.update(0, 1, m),
            arguments={"demo": True, "n_pairs": cfg.eval_pairs},
        )
        return dict(ev_out)

    stage(
        "evaluate",
        (d_eval / "metrics.json").exists(),
        do_evaluate,
        dict(ev_out),
        verify=lambda: _read_metrics(d_eval / "metrics.json"),
    )
    metrics = _read_metrics(d_eval / "metrics.json")
    pictures = {
        "dfr_figure3": str(d_dfr / "figure3.png"),
        **mix_pngs,
        "fig4_slot_change": ana_out["fig4"],
        "fig6_parameters": ana_out["fig6"],
    }
    seconds = time.perf_counter() - t0
    write_json(
        out / "demo.json",
        {
            "arguments": dict(arguments or {}),
            "config": dataclasses.asdict(cfg),
            "stages": [dataclasses.asdict(s) for s in stages],
            "seconds_this_run": round(seconds, 2),
            "pictures": pictures,
            "targets": metrics.get("targets", {}),
            "estimator": metrics.get("estimator"),
        },
    )
    return DemoResult(
        out_dir=out,
        stages=tuple(stages),
        metrics=metrics,
        pictures=pictures,
        seconds=seconds,
        notes=tuple(dict.fromkeys(notes)),
    )


def _read_metrics(path: Path) -> dict[str, Any]:
    """The evaluate stage's ``metrics.json`` (AssetError when it is not a readable JSON object)."""
    import json

    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AssetError(f"cannot read {path} ({type(e).__name__})") from e
    if not isinstance(metrics, dict):
        raise AssetError(f"{path} does not hold a metrics object")
    return metrics


def _verify_output(stage: str, load: Callable[[], object]) -> None:
    """Load a skipped stage's output; a damaged one stops the demo with the folder to delete."""
    try:
        load()
    except StylerigError as e:
        raise AssetError(
            f"the demo's {stage} stage has an output already, but it is damaged: {e.message}",
            hint="delete that stage's folder (or pass another --out) and run the demo again to redo it",
        ) from e
