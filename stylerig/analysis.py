"""The paper's two statistical analyses of a trained rig and its DFR (``method.md`` §5.2, §5.3).

* **Figure 4** (:func:`slot_change_profile`): over pairs (w, v) of the sample set, the rig edits w to
  v's parameters of its group, ``ŵ = rig(w, [F(w) with g <- F(v)^g])`` -- the mixing results of the
  paper -- and per ws slot i we report the mean, standard deviation and variance of ``‖ŵ_i − w_i‖₂``
  (Euclidean norm over w_dim, in W units). One curve per rig; a rig of mode ``all`` gives one curve per
  group it controls (each pair changing exactly that group, as it was trained) plus one changing all three.
  The paper's finding to compare with: rotation lives in the coarse slots, expression in coarse +
  middle, illumination in middle (and fine, for colour).
* **Figure 6** (:func:`parameter_statistics`): per-parameter mean and variance of F(w) over the sample
  set (all rows, or a seeded random subset of ``max_samples``, default 20k) for rotation (degrees, deg²),
  expression (64, sd) and illumination (27 SH values). When the set has true parameters (the built-in
  world) their statistics are reported beside F's.

:func:`run_analysis` writes ``fig4_slot_change.png`` / ``.csv`` / ``.json``, ``fig6_parameters.png`` /
``.csv`` / ``.json``, and ``run.json``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig.dfr import DFR
from stylerig.errors import InputError
from stylerig.rignet import RigNet

__all__ = [
    "AnalysisResult",
    "PARAMETER_GROUPS",
    "draw_pairs",
    "parameter_statistics",
    "run_analysis",
    "slot_change_profile",
]

#: The groups Figure 6 shows.
PARAMETER_GROUPS: tuple[str, ...] = ("rotation", "expression", "illumination")

_CHUNK = 500


def draw_pairs(n: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs of distinct rows of a set of ``n`` (with repetition across pairs), seeded.

    Returns:
        (w_rows, v_rows): int64 [count] each, ``w_rows[k] != v_rows[k]``.
    """
    if n < 2:
        raise InputError(f"pairs need a sample set of at least 2 rows, this one has {n}")
    rng = np.random.default_rng([int(seed), 4])
    w = rng.integers(0, n, size=count)
    v = (w + rng.integers(1, n, size=count)) % n
    return w.astype(np.int64), v.astype(np.int64)


@torch.no_grad()
def _dfr_rows(F: DFR, ws: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    out = []
    for i in range(0, len(rows), _CHUNK):
        w = torch.from_numpy(np.asarray(ws[rows[i : i + _CHUNK]], dtype=np.float32))
        out.append(F(w.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, params.NUM_PARAMS)


@torch.no_grad()
def slot_change_profile(
    rig: RigNet,
    dfr: DFR,
    ws: np.ndarray | torch.Tensor,
    w_rows: np.ndarray,
    v_rows: np.ndarray,
    *,
    p_all: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, np.ndarray]]:
    """Figure 4 for one rig: statistics of ‖ŵ_i − w_i‖₂ per ws slot over the pairs.

    Args:
        rig: the rig (any mode / arch). dfr: its F.
        ws: float32 [N, num_ws, w_dim] codes of the set (a memmap is fine).
        w_rows, v_rows: int64 [P] the pairs (edit row w towards row v).
        p_all: float [N, 257] F of every row when already known (else computed for the rows used).
        device: where to run.

    Returns:
        curve label -> ``{"mean", "std", "var"}`` float64 [num_ws] each, plus ``"n"`` (the pair count, [1]).
        Labels: the rig's mode; for mode ``all`` one per group (``all: rotation`` ...) and ``all: joint``.
    """
    dev = torch.device(device)
    rig = rig.to(dev).eval()
    F = dfr.to(dev).eval()
    used = np.unique(np.concatenate([w_rows, v_rows]))
    if p_all is None:
        p_used = _dfr_rows(F, ws, used, dev)
        lookup = {int(r): k for k, r in enumerate(used)}
        p_w = p_used[[lookup[int(r)] for r in w_rows]]
        p_v = p_used[[lookup[int(r)] for r in v_rows]]
    else:
        p_w, p_v = p_all[torch.as_tensor(w_rows)].cpu(), p_all[torch.as_tensor(v_rows)].cpu()
    variants: dict[str, tuple[str, ...]] = {}
    if rig.mode == "all":
        for g in rig.groups:
            variants[f"all: {g}"] = (g,)
        variants["all: joint"] = rig.groups
    else:
        variants[rig.mode] = rig.groups
    sums = {k: (np.zeros(rig.num_ws), np.zeros(rig.num_ws)) for k in variants}
    P = len(w_rows)
    for a in range(0, P, _CHUNK):
        rows = w_rows[a : a + _CHUNK]
        w = torch.from_numpy(np.asarray(ws[rows], dtype=np.float32)).to(dev)
        pw, pv = p_w[a : a + _CHUNK].to(dev), p_v[a : a + _CHUNK].to(dev)
        for label, groups in variants.items():
            target = pw
            for g in groups:
                target = params.replace(target, g, params.get(pv, g))
            p_cur = pw if rig.needs_current else None
            d = (rig(w, target, p_current=p_cur) - w).norm(dim=-1).double().cpu().numpy()  # [b, S]
            s1, s2 = sums[label]
            s1 += d.sum(0)
            s2 += (d**2).sum(0)
    out: dict[str, dict[str, np.ndarray]] = {}
    for label, (s1, s2) in sums.items():
        mean = s1 / P
        var = np.maximum(s2 / P - mean**2, 0.0)
        out[label] = {"mean": mean, "std": np.sqrt(var), "var": var, "n": np.array([P])}
    return out


def _group_labels(group: str, expression_names: Sequence[str] | None) -> list[str]:
    if group == "rotation":
        return list(params.ROTATION_NAMES)
    if group == "expression" and expression_names:
        return list(expression_names)
    if group == "illumination":
        return [f"{c}{k}" for c in "RGB" for k in range(9)]
    return [f"{group}{k}" for k in range(params.SIZES[group])]


def parameter_statistics(
    p: torch.Tensor,
    truth: torch.Tensor | None = None,
    *,
    expression_names: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Figure 6: per-parameter mean and variance of face parameters, in a person's units.

    Args:
        p: float [N, 257] (F(w) over the set; rotation radians).
        truth: float [N', 257] true parameters of (a subset of) the same rows, or None.
        expression_names: component names for the labels.

    Returns:
        group -> ``{"labels": [k] str, "mean", "var", "std": float64 [k]}`` (+ ``truth_mean`` /
        ``truth_var`` when ``truth`` is given); rotation in degrees / deg².
    """
    out: dict[str, dict[str, Any]] = {}
    for g in PARAMETER_GROUPS:
        x = params.get(p, g).double().cpu().numpy()
        scale = 180.0 / math.pi if g == "rotation" else 1.0
        d: dict[str, Any] = {
            "labels": _group_labels(g, expression_names),
            "mean": x.mean(0) * scale,
            "var": x.var(0) * scale**2,
            "std": x.std(0) * scale,
        }
        if truth is not None and len(truth):
            t = params.get(truth, g).double().cpu().numpy()
            d["truth_mean"] = t.mean(0) * scale
            d["truth_var"] = t.var(0) * scale**2
        out[g] = d
    return out


@dataclass
class AnalysisResult:
    """What :func:`run_analysis` wrote and measured.

    Attributes:
        out_dir: the folder. files: role -> path. curves: Figure 4 (label -> stats).
        stats: Figure 6 (group -> stats). n_pairs, n_samples: how many pairs / rows were used.
        seconds: wall time per stage.
    """

    out_dir: Path
    files: dict[str, str]
    curves: dict[str, dict[str, np.ndarray]]
    stats: dict[str, dict[str, Any]]
    n_pairs: int
    n_samples: int
    seconds: dict[str, float] = field(default_factory=dict)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            out[k] = [round(float(x), 6) for x in v.reshape(-1)]
        elif isinstance(v, Mapping):
            out[k] = _jsonable(v)
        else:
            out[k] = v
    return out


def run_analysis(
    rigs: Sequence[str | os.PathLike[str] | RigNet],
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dfr: str | os.PathLike[str] | DFR | None = None,
    pairs: int = 2500,
    max_samples: int = 20000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    arguments: Mapping[str, Any] | None = None,
) -> AnalysisResult:
    """Figures 4 and 6 for rigs (each its own curve) and their DFR on a sample set.

    Args:
        rigs: rig files / folders / objects (may be empty when ``dfr`` is given: Figure 6 only).
        data: the sample set folder (``stylerig sample``).
        out_dir: output folder (PNG + CSV + JSON per figure, and ``run.json``).
        dfr: F; default the DFR recorded in the first rig. Figure 6 uses this one F.
        pairs: mixing results for Figure 4 (the paper: more than 2,500).
        max_samples: rows for Figure 6 (all when the set is smaller; else a seeded random subset).
        seed: seeds the pairs and the subset.

    Raises:
        InputError: codes of the set do not fit the rig / DFR, too few rows, NaN or infinite values in
            the set's ``ws.npy`` / ``params.npy``, or ``out_dir`` holds another command's outputs.
        AssetError: missing files, or the outputs cannot be written (then ``out_dir`` keeps the previous
            analysis's files, all of them: the files of one analysis land together or not at all).
    """
    from stylerig.data import SampleSet
    from stylerig.editing import load_editor, style_groups
    from stylerig.outputs import atomic_write, claim_output_dir, staged_outputs, write_json, write_run_json
    from stylerig.viz import plot_parameter_statistics, plot_slot_profile

    t0 = time.perf_counter()
    if pairs < 1 or max_samples < 2:
        raise InputError("--pairs must be >= 1 and --max-samples >= 2")
    out = claim_output_dir(out_dir, "analyze")
    editor = load_editor(rigs, dfr=dfr, device=device, need_generator=False, allow_overlap=True)
    ds = SampleSet(data)
    F = editor.dfr
    if (ds.num_ws, ds.w_dim) != (F.num_ws, F.w_dim):
        raise InputError(
            f"the set has codes of {ds.num_ws} x {ds.w_dim}, the DFR reads {F.num_ws} x {F.w_dim}",
            hint="analyse a rig with a sample set of its own generator",
        )
    n = len(ds)
    sec: dict[str, float] = {}
    files: dict[str, str] = {}
    dev = editor.device

    # The rows both figures read; their codes (and true parameters) must be finite.
    if n > max_samples:
        rows = np.sort(np.random.default_rng([int(seed), 6]).choice(n, size=max_samples, replace=False))
    else:
        rows = np.arange(n, dtype=np.int64)
    w_rows, v_rows = draw_pairs(n, pairs, seed) if editor.rigs else (rows[:0], rows[:0])
    ds.check_finite(("ws",), np.unique(np.concatenate([rows, w_rows, v_rows])))
    ds.check_finite(("params",), rows)

    # Figure 6: F(w) over the set.
    t = time.perf_counter()
    p_rows = _dfr_rows(F, ds.ws, rows, dev)
    truth = None
    if ds.params is not None:
        t_all = torch.from_numpy(np.asarray(ds.params[rows], dtype=np.float32))
        ok = torch.isfinite(t_all).all(1)
        truth = t_all[ok] if bool(ok.any()) else None
    stats = parameter_statistics(p_rows, truth, expression_names=editor.expression_names)
    sec["fig6"] = time.perf_counter() - t

    # Figure 4: slot changes over mixing results.
    t = time.perf_counter()
    curves: dict[str, dict[str, np.ndarray]] = {}
    n_pairs = 0
    if editor.rigs:
        p_all = None
        if n <= max_samples:  # F of every row is already known
            p_all = p_rows
        for rig, path in zip(editor.rigs, editor.rig_paths, strict=True):
            prof = slot_change_profile(rig, F, ds.ws, w_rows, v_rows, p_all=p_all, device=dev)
            tag = Path(path).parent.name if path != "in-memory rig" else "rig"
            for label, s in prof.items():
                key = label if len(editor.rigs) == 1 else f"{label} ({tag})"
                if rig.arch != "rignet":
                    key += f" [{rig.arch}]"
                while key in curves:
                    key += "'"
                curves[key] = s
        n_pairs = pairs
    sec["fig4"] = time.perf_counter() - t

    # Writing: every file into a staging folder, renamed into `out` together when all are written.
    t = time.perf_counter()
    slots = style_groups(F.num_ws)
    fig4 = ("fig4_slot_change.png", "fig4_slot_change.csv", "fig4_slot_change.json")
    with staged_outputs(out) as stage:
        if curves:
            plot_slot_profile({k: (v["mean"], v["std"]) for k, v in curves.items()}, slots, stage / fig4[0])
            group_of = {i: g for g, sl in slots.items() for i in sl}
            rows_csv = [
                [
                    label,
                    i,
                    group_of.get(i, ""),
                    f"{s['mean'][i]:.6g}",
                    f"{s['std'][i]:.6g}",
                    f"{s['var'][i]:.6g}",
                    int(s["n"][0]),
                ]
                for label, s in curves.items()
                for i in range(F.num_ws)
            ]
            atomic_write(
                stage / fig4[1],
                _csv_bytes(["curve", "slot", "style_group", "mean", "std", "var", "pairs"], rows_csv),
            )
            write_json(
                stage / fig4[2],
                {
                    "what": "per ws slot i, statistics of ||ŵ_i - w_i||_2 over mixing results ŵ = rig(w, F(w) "
                    "with the rig's group(s) taken from F(v)), pairs (w, v) of distinct rows of the set",
                    "pairs": n_pairs,
                    "style_groups": {k: list(v) for k, v in slots.items()},
                    "rigs": editor.rig_info(),
                    "curves": {k: _jsonable(v) for k, v in curves.items()},
                },
            )
            files.update(
                fig4_png=str(out / fig4[0]), fig4_csv=str(out / fig4[1]), fig4_json=str(out / fig4[2])
            )
        plot_parameter_statistics(stats, stage / "fig6_parameters.png")
        rows6 = []
        for g, s in stats.items():
            for k, lab in enumerate(s["labels"]):
                row = [g, k, lab, f"{s['mean'][k]:.6g}", f"{s['var'][k]:.6g}", f"{s['std'][k]:.6g}"]
                if "truth_mean" in s:
                    row += [f"{s['truth_mean'][k]:.6g}", f"{s['truth_var'][k]:.6g}"]
                else:
                    row += ["", ""]
                rows6.append(row)
        atomic_write(
            stage / "fig6_parameters.csv",
            _csv_bytes(["group", "index", "name", "mean", "var", "std", "truth_mean", "truth_var"], rows6),
        )
        write_json(
            stage / "fig6_parameters.json",
            {
                "what": "per-parameter mean and variance of F(w) over the sample set (rotation in degrees / "
                "deg^2; expression in sd; illumination = SH values)",
                "n_samples": int(len(rows)),
                "truth_rows": 0 if truth is None else int(len(truth)),
                "dfr": editor.dfr_path,
                "groups": {g: _jsonable(s) for g, s in stats.items()},
            },
        )
        files.update(
            fig6_png=str(out / "fig6_parameters.png"),
            fig6_csv=str(out / "fig6_parameters.csv"),
            fig6_json=str(out / "fig6_parameters.json"),
        )
        sec["write"] = time.perf_counter() - t
        sec["total"] = time.perf_counter() - t0
        write_run_json(
            stage,
            "analyze",
            dict(arguments or {}),
            seed=seed,
            assets={
                "rigs": list(editor.rig_paths),
                "dfr": editor.dfr_path,
                "sample_set": str(Path(data).resolve()),
            },
        )
        files["run"] = str(out / "run.json")
    if not curves:  # Figure 6 only: an earlier analysis's Figure 4 is not this run's
        for name in fig4:
            (out / name).unlink(missing_ok=True)
    return AnalysisResult(
        out_dir=out,
        files=files,
        curves=curves,
        stats=stats,
        n_pairs=n_pairs,
        n_samples=int(len(rows)),
        seconds=sec,
    )
