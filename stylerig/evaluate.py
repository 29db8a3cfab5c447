"""``stylerig evaluate``: what a rig's edits really do, measured on the generator's images (issue 8).

Built on :func:`stylerig.training.rignet.evaluate_on_world` (the issue-6 measurement: held-out pairs
(w, v), the rig edits w towards v's true parameters, the world's independent estimator reads the
generator's images of ŵ), to which this module adds:

* the pose error **binned by the requested change** of each angle (0–10°, 10–20°, 20–30°, 30–45° and
  an overflow bin): :func:`edit_pairs` measures the same pairs per pair (evaluate_on_world returns
  only aggregates), :func:`bin_pose_errors` bins them;
* the expression edits' **landmark error in pixels** (:func:`landmark_rmse_px`: the world renderer's 68
  landmarks of the estimated parameters against those of the target);
* the **image change outside the face** per edited group (``<mode>.image_change_outside_face``: mean
  |G(ŵ) − G(w)| outside the world's face masks of the estimates before and after, [−1, 1] units, with the
  perfect edit's value beside it; hair, shirt and background count as outside);
* the L_rec **anchor error**: how far ``rig(w, F(w))`` moves an unedited code;
* one nested ``metrics.json`` (the issue's keys: ``pose.median_abs_err_deg.{yaw,pitch,roll}``,
  ``pose.achieved_over_requested``, ``expression.err_ratio``, ``illumination.err_ratio``,
  ``<mode>.nontarget_drift_ratio``, ``estimator``; also ``expression.achieved_over_requested`` and
  ``illumination.achieved_over_requested``, the slope of the achieved change on the requested one in sd
  units, which tells an edit that falls short from one that goes astray), the issue-6 targets with
  met / missed, a Markdown table ``metrics.md`` and ``run.json``.

Two estimators read the generator's images (``metrics.json``'s ``estimator`` says which was used):

* the **built-in world** (no ``--generator``, or ``builtin``): the world's own independent estimator
  (``world:fast`` / ``world:fit``), with the true parameters of every sample (floors, the oracle);
* **any other generator** (a checkpoint file ``load_generator`` reads): no world estimator and no truth
  exist, so :func:`measure_on_generator` reads each image with a landmark detector
  (:mod:`stylerig.landmarks`) and the image-based fit of :mod:`stylerig.image_fit` (``image-fit:<detector>``):
  before = fit(G(w)), target = before with the edited group(s) taken from fit(G(v)), after = fit(G(ŵ)),
  all through the same :func:`~stylerig.training.rignet.edit_metrics`, with ``std`` / ``active`` from the
  fits of the unedited held-out images. When dlib's face-recognition model is installed
  (:func:`stylerig.image_fit.identity_embedder`), ``<mode>.identity_similarity`` is the mean cosine
  similarity of the dlib descriptors of G(w) and G(ŵ); ``estimator_info.identity`` says whether it ran.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig.data import SampleSet
from stylerig.dfr import DFR, load_dfr
from stylerig.errors import AssetError, InputError
from stylerig.evaluate_generator import (
    IDENTITY_MISSING,
    ImageFitEstimator,
    ImageReading,
    _cosine,
    _face_model_for,
    _load_detector,
    _median,
    _resolve_embedder,
    measure_on_generator,
)
from stylerig.face.procedural import EXPRESSION_NAMES
from stylerig.rignet import RigNet, load_rignet

__all__ = [
    "MODE_OF_GROUP",
    "POSE_BINS_DEG",
    "TARGETS",
    "IDENTITY_MISSING",
    "ISSUE_KEYS",
    "EditPairs",
    "EvaluateResult",
    "ImageFitEstimator",
    "ImageReading",
    "PosePairs",
    "anchor_error",
    "bin_pose_errors",
    "edit_pairs",
    "evaluate",
    "landmark_rmse_px",
    "measure_on_generator",
    "metrics_table",
    "oracle_value",
    "pose_pairs",
]

#: metrics.json's dotted keys that issue 8 names (besides ``pose.median_abs_err_deg.{yaw,pitch,roll}`` and
#: ``estimator``): every evaluation of a rig that controls all three groups fills them with floats.
ISSUE_KEYS: tuple[str, ...] = (
    "pose.achieved_over_requested",
    "expression.err_ratio",
    "illumination.err_ratio",
    "pose.nontarget_drift_ratio",
    "expression.nontarget_drift_ratio",
    "illumination.nontarget_drift_ratio",
)

#: Bins of the requested change |target − before| of one angle, in degrees; the last catches the rest.
POSE_BINS_DEG: tuple[tuple[float, float], ...] = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 45.0))

#: The issue's mode name of each controlled parameter group.
MODE_OF_GROUP: dict[str, str] = {
    "rotation": "pose",
    "expression": "expression",
    "illumination": "illumination",
}

#: Issue 6's targets: dotted metrics.json key -> (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "pose.median_abs_err_deg_within30.yaw": ("<=", 2.5),
    "pose.median_abs_err_deg_within30.pitch": ("<=", 2.5),
    "pose.median_abs_err_deg_within30.roll": ("<=", 2.5),
    "pose.achieved_over_requested": (">=", 0.85),
    "expression.err_ratio": ("<=", 0.35),
    "illumination.err_ratio": ("<=", 0.35),
    "pose.nontarget_drift_ratio": ("<=", 0.25),
    "expression.nontarget_drift_ratio": ("<=", 0.25),
    "illumination.nontarget_drift_ratio": ("<=", 0.25),
}

_DEG = 180.0 / math.pi


@dataclass(frozen=True)
class EvaluateResult:
    """What :func:`evaluate` measured and wrote.

    Attributes:
        out_dir: the folder; files: role -> path (``metrics``, ``table``, ``run``).
        metrics: the content of ``metrics.json``. seconds: wall time of the whole call.
    """

    out_dir: Path
    files: dict[str, str]
    metrics: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class PosePairs:
    """Per-pair pose of pose edits (:func:`pose_pairs`, :meth:`EditPairs.pose`), in degrees (yaw, pitch, roll columns).

    Attributes:
        before: float [N, 3] the estimate of the unedited image G(w).
        requested: float [N, 3] the target rotation (the partner's truth).
        achieved: float [N, 3] the estimate of the edited image G(ŵ).
    """

    before: torch.Tensor
    requested: torch.Tensor
    achieved: torch.Tensor


# ----------------------------------------------------------------------------------------------------
# Per-pair pose and its bins.


def _estimator_method(method: str) -> str:
    """``auto`` -> ``fast`` when the world's CNN estimator is installed, else ``fit`` (as evaluate_on_world)."""
    if method != "auto":
        return method
    try:
        from stylerig.worlds.estimator import load_estimator

        load_estimator()
        return "fast"
    except (ImportError, AssetError, TypeError):
        return "fit"


@dataclass(frozen=True)
class EditPairs:
    """Per-pair estimates of one group's edits (layout :mod:`stylerig.params`, rotation in radians).

    Attributes:
        before: float [N, 257] the estimate of the unedited image G(w).
        target: float [N, 257] ``before`` with the edited group replaced by the partner's truth.
        after: float [N, 257] the estimate of the edited image G(ŵ).
        outside_change: float [N] mean |G(ŵ) − G(w)| over the pixels and channels outside the face
            ([−1, 1] units): outside the union of the world's face masks of ``before`` and ``after`` (head
            and neck; hair, shirt and background count as outside). None when not measured.
        oracle_outside_change: float [N] the same for the perfect edit (the world's oracle), or None.
    """

    before: torch.Tensor
    target: torch.Tensor
    after: torch.Tensor
    outside_change: torch.Tensor | None = None
    oracle_outside_change: torch.Tensor | None = None

    def pose(self) -> PosePairs:
        """The rotation columns in degrees."""
        return PosePairs(
            before=params.get(self.before, "rotation") * _DEG,
            requested=params.get(self.target, "rotation") * _DEG,
            achieved=params.get(self.after, "rotation") * _DEG,
        )


@torch.no_grad()
def edit_pairs(
    rig: RigNet,
    dfr: DFR,
    data: SampleSet,
    groups: Sequence[str],
    *,
    n_pairs: int = 500,
    val_fraction: float = 0.1,
    seed: int = 0,
    chunk: int = 25,
    method: str = "auto",
    outside_change: bool = False,
    reader: Any = None,
) -> dict[str, EditPairs]:
    """The single-group edits of :func:`~stylerig.training.rignet.evaluate_on_world`, pair by pair.

    Same pairs (:func:`~stylerig.training.rignet.heldout_pairs` of the same held-out split), same request
    (F(w) with the group replaced by the partner's truth, :func:`~stylerig.training.rignet.rig_request`),
    same target (the estimate of G(w) with the group replaced by the partner's truth), same estimator; so
    e.g. the medians of the pose pairs equal evaluate_on_world's ``{yaw,pitch,roll}_median_err_deg``.

    Args:
        rig: the rig; dfr: its F (for ``p_current``). groups: groups the rig controls (``rotation``,
            ``expression``, ``illumination``), each edited alone.
        data: a sample set of the built-in world (with the true ``params.npy``).
        n_pairs, val_fraction, seed: as for evaluate_on_world. chunk: images per generator call.
        method: the world estimator (``auto`` | ``fast`` | ``fit``).
        outside_change: also measure the image change outside the face (for the rig's edits and the
            world's perfect edits, :attr:`EditPairs.outside_change`).
        reader: a :class:`~stylerig.training.rignet.WorldReader` to share with
            :func:`~stylerig.training.rignet.evaluate_on_world` (which then generates none of these
            images again); default, a fresh one (``chunk`` and ``method`` are then this call's).

    Returns:
        group -> :class:`EditPairs` (float [n_pairs, 257] each).
    """
    from stylerig.training.rignet import WorldReader, heldout_pairs
    from stylerig.worlds import load_world

    for g in groups:
        if g not in rig.groups:
            raise InputError(
                f"a {rig.mode} rig does not control {g}", hint=f"its groups: {', '.join(rig.groups)}"
            )
    if data.params is None:
        raise InputError(
            "measuring on the world needs the set's true params.npy", hint="sample the built-in world"
        )
    world = load_world()
    if reader is None:
        reader = WorldReader(world, _estimator_method(method), chunk=chunk)
    _, val_rows = data.split(val_fraction, seed=seed)
    w_rows, v_rows = heldout_pairs(val_rows, n_pairs, seed)
    rig, dfr = rig.cpu().eval(), dfr.cpu().eval()

    def measure(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # -> [N, 257], images
        return reader.read(ws, images=outside_change)

    def outside(
        img_a: torch.Tensor, img_b: torch.Tensor, p_a: torch.Tensor, p_b: torch.Tensor
    ) -> torch.Tensor:
        """float [N]: mean |img_b − img_a| outside the union of the face masks of p_a and p_b."""
        res = []
        for i in range(0, img_a.shape[0], chunk):
            sl = slice(i, i + chunk)
            face = torch.maximum(world.render(p_a[sl])[1], world.render(p_b[sl])[1])  # [n, 1, H, W]
            keep = (1.0 - face).expand_as(img_a[sl])
            diff = (img_b[sl] - img_a[sl]).abs() * keep
            res.append(diff.flatten(1).sum(1) / keep.flatten(1).sum(1).clamp_min(1.0))
        return torch.cat(res)

    from stylerig.training.rignet import oracle_codes, rig_request

    sources, inverse = np.unique(w_rows, return_inverse=True)
    src_p, src_img = measure(torch.from_numpy(np.array(data.ws[sources], dtype=np.float32)))
    idx = torch.as_tensor(inverse)
    before = src_p[idx]
    img_before = None if src_img is None else src_img[idx]
    ws = torch.from_numpy(np.array(data.ws[w_rows], dtype=np.float32))
    p_cur = dfr(ws)
    truth_v = torch.from_numpy(np.array(data.params[v_rows], dtype=np.float32))
    oracle = oracle_codes(world, data, w_rows, v_rows, [(g,) for g in groups]) if outside_change else None
    out = {}
    for k, g in enumerate(groups):
        target = params.replace(before, g, params.get(truth_v, g))
        after, img_after = measure(rig(ws, rig_request(p_cur, (g,), truth_v), p_current=p_cur))
        change = oracle_change = None
        if outside_change:
            change = outside(img_before, img_after, before, after)
            if oracle is not None:
                p_o, img_o = measure(oracle[k])
                oracle_change = outside(img_before, img_o, before, p_o)
        out[g] = EditPairs(
            before=before,
            target=target,
            after=after,
            outside_change=change,
            oracle_outside_change=oracle_change,
        )
    return out


def pose_pairs(
    rig: RigNet,
    dfr: DFR,
    data: SampleSet,
    *,
    n_pairs: int = 500,
    val_fraction: float = 0.1,
    seed: int = 0,
    chunk: int = 25,
    method: str = "auto",
) -> PosePairs:
    """The pose edits of :func:`edit_pairs` in degrees: :class:`PosePairs`, float [n_pairs, 3] each."""
    if "rotation" not in rig.groups:
        raise InputError(f"a {rig.mode} rig does not control the pose", hint="pass a pose or all rig")
    pairs = edit_pairs(
        rig,
        dfr,
        data,
        ("rotation",),
        n_pairs=n_pairs,
        val_fraction=val_fraction,
        seed=seed,
        chunk=chunk,
        method=method,
    )
    return pairs["rotation"].pose()


@torch.no_grad()
def landmark_rmse_px(pairs: EditPairs, renderer: Any) -> dict[str, float]:
    """Landmark error of edits in pixels: the 68 landmarks of the estimated parameters against those of
    the target, rms over the points, mean over the pairs.

    Args:
        pairs: :class:`EditPairs` (float [N, 257] each). renderer: a
            :class:`~stylerig.render.FaceRenderer` (``landmarks(p [N,257]) -> [N, 68, 2]`` pixels).

    Returns:
        ``before`` (unedited vs target), ``after`` (edited vs target), ``ratio`` = after / before.
    """

    def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
        la, lb = renderer.landmarks(a.float()), renderer.landmarks(b.float())
        return float((la - lb).pow(2).sum(-1).mean(-1).sqrt().mean())

    before, after = rmse(pairs.before, pairs.target), rmse(pairs.after, pairs.target)
    return {"before": before, "after": after, "ratio": after / max(before, 1e-12)}


def bin_pose_errors(
    pairs: PosePairs, bins: Sequence[tuple[float, float]] = POSE_BINS_DEG
) -> dict[str, list[dict[str, Any]]]:
    """Pose error of each angle binned by that angle's requested change |requested − before| (degrees).

    Args:
        pairs: :class:`PosePairs` (float [N, 3] degrees each).
        bins: [lo, hi) ranges in degrees; pairs beyond the last ``hi`` go to an extra ``hi+`` bin.

    Returns:
        ``{"yaw": [bin, ...], "pitch": [...], "roll": [...]}``; each bin is ``{"range": "10-20", "lo",
        "hi", "n", "median_abs_err_deg", "achieved_over_requested"}`` (the last two None when empty;
        achieved_over_requested = slope through 0 of achieved against requested change).
    """
    req = pairs.requested - pairs.before  # [N, 3]
    got = pairs.achieved - pairs.before
    err = (pairs.achieved - pairs.requested).abs()
    edges = [*bins, (bins[-1][1], math.inf)]
    out: dict[str, list[dict[str, Any]]] = {}
    for j, name in enumerate(params.ROTATION_NAMES):
        mag = req[:, j].abs()
        rows = []
        for lo, hi in edges:
            sel = (mag >= lo) & (mag < hi)
            n = int(sel.sum())
            r, g = req[sel, j], got[sel, j]
            rows.append(
                {
                    "range": f"{lo:g}-{hi:g}" if math.isfinite(hi) else f"{lo:g}+",
                    "lo": lo,
                    "hi": hi if math.isfinite(hi) else None,
                    "n": n,
                    "median_abs_err_deg": float(err[sel, j].median()) if n else None,
                    "achieved_over_requested": float((g * r).sum() / r.pow(2).sum().clamp_min(1e-12))
                    if n
                    else None,
                }
            )
        out[name] = rows
    return out


@torch.no_grad()
def anchor_error(rig: RigNet, dfr: DFR, ws: torch.Tensor) -> dict[str, float]:
    """The L_rec anchor: how far ``rig(w, F(w))`` moves codes that should not change.

    Args:
        ws: float [N, num_ws, w_dim] codes (N >= 2).

    Returns:
        ``rms``: rms of ŵ − w (W units); ``relative``: that over the rms spread of ``ws`` around its mean.
    """
    rig, dfr = rig.cpu().eval(), dfr.cpu().eval()
    ws = ws.float().cpu()
    p = dfr(ws)
    d = rig(ws, p, p_current=p) - ws
    rms = float(d.pow(2).mean().sqrt())
    spread = float((ws - ws.mean(0, keepdim=True)).pow(2).mean().sqrt())
    return {"rms": rms, "relative": rms / max(spread, 1e-12)}


# ----------------------------------------------------------------------------------------------------
# The command's library function.


def _is_world(generator: str | os.PathLike[str] | None) -> bool:
    """True for the built-in world (None or ``"builtin"``), False for a generator file."""
    return generator is None or str(generator) == "builtin"


def training_seed(rig: RigNet) -> int:
    """The seed a rig was trained with (``train-rignet --seed``, recorded in its file; it also chose the
    held-out split), or 0 when its file records none."""
    config = (getattr(rig, "extra_config", None) or {}).get("config") or {}
    seed = config.get("seed", 0) if isinstance(config, Mapping) else 0
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def dfr_split_note(F: DFR, dataset: SampleSet, val_fraction: float, seed: int) -> str | None:
    """A note when some held-out rows of this evaluation were among the DFR's training rows, else None.

    ``fit-dfr`` records its split (seed, val_fraction) and sample set in the DFR file (``F.info``); a rig
    and a DFR trained with different seeds hold out different rows, so an evaluation on the rig's split
    measures some sources whose codes F was fitted on. Files without that record give None.
    """
    info = getattr(F, "info", None) or {}
    split = info.get("split") if isinstance(info, Mapping) else None
    if not isinstance(split, Mapping) or "seed" not in split or "val_fraction" not in split:
        return None
    try:
        same_set = Path(str(info.get("sample_set"))).resolve() == Path(dataset.root).resolve()
        f_seed, f_frac = int(split["seed"]), float(split["val_fraction"])
    except (TypeError, ValueError, OSError):
        return None
    if not same_set or (f_seed == seed and f_frac == val_fraction):
        return None
    f_train = dataset.split(f_frac, seed=f_seed)[0]
    held = dataset.split(val_fraction, seed=seed)[1]
    n = int(np.isin(held, f_train).sum())
    if not n:
        return None
    return (
        f"{n} of the {len(held)} held-out rows measured here were among the DFR's training rows (it was "
        f"fitted with split seed {f_seed}, val fraction {f_frac}; this evaluation uses seed {seed}, "
        f"{val_fraction}): pass --seed {f_seed}, or train the rig and the DFR with the same seed"
    )


def _resolve(
    rigs: Sequence[str | os.PathLike[str] | RigNet],
    dfr: str | os.PathLike[str] | DFR | None,
    data: str | os.PathLike[str] | SampleSet | None,
    generator: str | os.PathLike[str] | None,
) -> tuple[list[tuple[str, RigNet]], DFR, str, SampleSet]:
    if not _is_world(generator) and not Path(str(generator)).is_file():
        raise AssetError(
            f"generator file not found: {generator}",
            hint="pass a generator checkpoint (NVIDIA .pkl, rosinality .pt, stylerig .safetensors), or leave "
            "out --generator to evaluate on the built-in world",
        )
    if not rigs:
        raise InputError("give at least one rig", hint="pass --rig runs/rig/rig.safetensors")
    loaded = []
    for i, r in enumerate(rigs):
        loaded.append((f"rig{i}", r) if isinstance(r, RigNet) else (str(r), load_rignet(r)))
    extra = getattr(loaded[0][1], "extra_config", None) or {}
    if dfr is None:
        if not extra.get("dfr") or not Path(str(extra["dfr"])).exists():
            raise AssetError("no DFR given and none recorded in the rig", hint="pass --dfr DFR")
        dfr = str(extra["dfr"])
    F = dfr if isinstance(dfr, DFR) else load_dfr(dfr)
    dfr_label = "in-memory DFR" if isinstance(dfr, DFR) else str(Path(dfr).resolve())
    if data is None:
        if not extra.get("sample_set"):
            raise AssetError("no sample set given and none recorded in the rig", hint="pass --data DIR")
        data = str(extra["sample_set"])
    dataset = data if isinstance(data, SampleSet) else SampleSet(data)
    gen_info = dataset.manifest.get("generator") or {}
    is_world = isinstance(gen_info, Mapping) and gen_info.get("world") is not None
    if _is_world(generator) and (not is_world or dataset.params is None):
        raise InputError(
            f"{dataset.root} is not a sample set of the built-in world (no world generator or no params.npy)",
            hint="sample the built-in world (`stylerig sample --out DIR -n 5000`, no --generator) and evaluate on it",
        )
    for label, rig in loaded:
        if (rig.num_ws, rig.w_dim) != (dataset.num_ws, dataset.w_dim) or (F.num_ws, F.w_dim) != (
            dataset.num_ws,
            dataset.w_dim,
        ):
            raise InputError(
                f"{label}, the DFR and the set's codes ({dataset.num_ws} x {dataset.w_dim}) do not fit together",
                hint="pass the rig and DFR trained on this sample set",
            )
    return loaded, F, dfr_label, dataset


def _check_set_values(dataset: SampleSet, rows: np.ndarray, *, world: bool) -> None:
    """Refuse NaN or infinite codes among ``rows`` (the held-out rows, the only codes evaluate reads),
    and on the world rows without truth, naming the set's file.

    On the world, the truth of every row is used (its spread is the error unit, the partners' truth the
    edit target), so a row of NaN in ``params.npy`` (a style-mixed code) is refused too: without this, the
    NaN targets reach the generator and fail far away as NaN images.
    """
    dataset.check_finite(("ws",), rows)
    dataset.check_finite(("params",))
    if world and dataset.params is not None:
        known = 0
        for a in range(0, len(dataset), 4096):
            block = np.asarray(dataset.params[a : a + 4096])
            known += int(np.isfinite(block).all(axis=1).sum())
        if known < len(dataset):
            raise InputError(
                f"{dataset.root / 'params.npy'} has no ground truth in {len(dataset) - known} of "
                f"{len(dataset)} rows (NaN rows); evaluating on the world needs the truth of every row",
                hint="sample the built-in world unmixed and untruncated (`stylerig sample --out DIR -n 5000`, "
                "no --mix-max or --truncation) and evaluate on that set",
            )


def _outside_summary(pairs: EditPairs) -> dict[str, float | None]:
    """metrics.json's ``<mode>.image_change_outside_face``: mean |change| outside the face, [−1, 1] units."""

    def mean(x: torch.Tensor | None) -> float | None:
        return None if x is None else float(x.mean())

    return {"mean": mean(pairs.outside_change), "oracle_mean": mean(pairs.oracle_outside_change)}


def _section(
    flat: Mapping[str, float], group: str, label: str, expression_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The metrics.json section of one edited group from evaluate_on_world's flat keys.

    ``expression_names`` (the face model's expression component names) turns the per-dimension
    expression ratios into ``err_ratio_by_component`` {name: ratio}."""
    s: dict[str, Any] = {
        "rig": label,
        "err_before": flat.get(f"{group}_err_before"),
        "err_after": flat.get(f"{group}_err_after"),
        "err_ratio": flat.get(f"{group}_err_ratio"),
        "moved": flat.get(f"{group}_moved"),
        "nontarget_drift_ratio": flat.get(f"{group}_drift_ratio"),
        "drift": {
            k[len(f"{group}_drift_") :]: v
            for k, v in flat.items()
            if k.startswith(f"{group}_drift_") and not k.endswith("_ratio")
        },
    }
    by_term = {
        t: flat[f"{group}_err_ratio_sh_{t}"] for t in params.SH_TERMS if f"{group}_err_ratio_sh_{t}" in flat
    }
    if by_term:
        s["err_ratio_by_sh_term"] = by_term
    prefix = f"{group}_err_ratio_dim_"
    by_dim = {int(k[len(prefix) :]): v for k, v in flat.items() if k.startswith(prefix)}
    if by_dim and expression_names is not None:
        s["err_ratio_by_component"] = {expression_names[k]: v for k, v in sorted(by_dim.items())}
    if group == "rotation":
        s["median_abs_err_deg"] = {a: flat.get(f"{a}_median_err_deg") for a in params.ROTATION_NAMES}
        s["median_abs_err_deg_within30"] = {
            a: flat.get(f"{a}_median_err_deg_within30") for a in params.ROTATION_NAMES
        }
        s["achieved_over_requested"] = flat.get("yaw_transfer_ratio")
    elif flat.get(f"{group}_transfer_ratio") is not None:
        s["achieved_over_requested"] = flat[f"{group}_transfer_ratio"]
    oracle = {k[len("oracle_") :]: v for k, v in flat.items() if k.startswith("oracle_")}
    if oracle.get(f"{group}_err_ratio") is not None:
        # The perfect edit (evaluate_on_world's oracle): what the generator and the estimator let any rig reach.
        s["oracle"] = {
            k: v for k, v in _section(oracle, group, "oracle", expression_names).items() if k != "rig"
        }
    return s


def _lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    x: Any = metrics
    for part in dotted.split("."):
        if not isinstance(x, Mapping) or part not in x:
            return None
        x = x[part]
    return x


def _targets(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, (op, bound) in TARGETS.items():
        v = _lookup(metrics, key)
        if v is None:
            continue
        met = v <= bound if op == "<=" else v >= bound
        out[key] = {"value": v, "target": f"{op} {bound:g}", "met": bool(met)}
    return out


def _estimator_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The paragraph under metrics.md's estimator line: the world's oracle, or the image fit's limits."""
    if not str(metrics.get("estimator", "")).startswith("image-fit"):
        return [
            "The *perfect edit* column is the world's oracle: the source's own world factors with the edited "
            "group's taken from the target, through the generator — what the generator and the estimator let "
            "any rig reach (– where it could not be made)."
        ]
    info = metrics.get("estimator_info") or {}
    return [
        "No ground truth exists for this generator: the targets are the image fit's reading of the partner "
        "images, so every number includes the fit's own error (no *perfect edit* can be made: –). "
        f"Identity: {info.get('identity', 'not measured')}."
    ]


def oracle_value(metrics: Mapping[str, Any], key: str) -> Any:
    """The perfect edit's value of a dotted metrics.json key (``pose.achieved_over_requested`` ->
    ``pose.oracle.achieved_over_requested``), or None where no oracle was measured."""
    mode, _, rest = key.partition(".")
    return _lookup(metrics, f"{mode}.oracle.{rest}")


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """``metrics.md``: the headline numbers and the issue-6 targets as Markdown tables."""

    def f(v: Any, nd: int = 3) -> str:
        return "–" if v is None else f"{v:.{nd}f}"

    lines = [
        "# stylerig evaluate",
        "",
        f"Estimator: {metrics['estimator']} ({metrics['estimator_info']['description']}); "
        f"{metrics['n_pairs']} held-out pairs per edit.",
        "",
        *_estimator_lines(metrics),
        "",
        "| metric | value | perfect edit | target | met |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]

    def oracle(key: str) -> Any:
        return oracle_value(metrics, key)

    for key, t in metrics.get("targets", {}).items():
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| `{key}` | {f(t['value'])} | {f(oracle(key))} | {t['target']} | {met} |")
    for mode in ("pose", "expression", "illumination"):
        s = metrics.get(mode)
        if not s:
            continue
        lines.append(f"| `{mode}.err_ratio` | {f(s['err_ratio'])} | {f(oracle(f'{mode}.err_ratio'))} | | |")
        lines.append(f"| `{mode}.moved` (sd) | {f(s['moved'])} | {f(oracle(f'{mode}.moved'))} | | |")
        if mode != "pose" and s.get("achieved_over_requested") is not None:
            key = f"{mode}.achieved_over_requested"
            lines.append(f"| `{key}` | {f(s['achieved_over_requested'])} | {f(oracle(key))} | | |")
        out_face = s.get("image_change_outside_face")
        if out_face:
            lines.append(
                f"| `{mode}.image_change_outside_face` (mean abs, [−1, 1]) | {f(out_face['mean'], 4)} "
                f"| {f(out_face['oracle_mean'], 4)} | | |"
            )
        if s.get("identity_similarity") is not None:
            lines.append(f"| `{mode}.identity_similarity` (cosine) | {f(s['identity_similarity'])} | | | |")
        if mode == "expression" and s.get("landmark_rmse_px"):
            lm = s["landmark_rmse_px"]
            pair = f"{f(lm['before'], 2)} → {f(lm['after'], 2)}"
            lines.append(f"| `expression.landmark_rmse_px` (before → after) | {pair} | | | |")
        for kind in ("err_ratio_by_sh_term", "err_ratio_by_component"):
            for name, v in (s.get(kind) or {}).items():
                o = oracle(f"{mode}.{kind}.{name}")
                lines.append(f"| `{mode}.{kind}.{name}` | {f(v)} | {f(o)} | | |")
        if mode == "pose":
            for a in params.ROTATION_NAMES:
                v, o = s["median_abs_err_deg"][a], oracle(f"pose.median_abs_err_deg.{a}")
                lines.append(f"| `pose.median_abs_err_deg.{a}` | {f(v, 2)} | {f(o, 2)} | | |")
    bins = _lookup(metrics, "pose.by_requested_change")
    if bins:
        lines += [
            "",
            "Pose error by requested change of each angle (median |error| in degrees, achieved / requested, n):",
            "",
            "| requested change | " + " | ".join(params.ROTATION_NAMES) + " |",
            "| --- | " + " | ".join("---:" for _ in params.ROTATION_NAMES) + " |",
        ]
        for i, b in enumerate(bins["yaw"]):
            cells = []
            for a in params.ROTATION_NAMES:
                c = bins[a][i]
                cells.append(
                    "–"
                    if not c["n"]
                    else f"{c['median_abs_err_deg']:.2f}° / {c['achieved_over_requested']:.2f} / {c['n']}"
                )
            lines.append(f"| {b['range']}° | " + " | ".join(cells) + " |")
    floor = metrics.get("floor")
    if floor:
        lines += [
            "",
            "Floor (the estimator on unedited images against their truth; no rig can do better): "
            + ", ".join(f"{a} {f(floor.get(f'{a}_median_err_deg'), 2)}°" for a in params.ROTATION_NAMES),
        ]
    fq = metrics.get("fit_quality")
    if fq:
        lines += [
            "",
            f"Image fit of the {fq['n_images']} unedited held-out images: median landmark rms "
            f"{f(fq.get('landmark_rmse_px_median'), 2)} px, median masked PSNR {f(fq.get('photo_psnr_median'), 1)} dB, "
            f"{fq['no_face']} without a detected face."
            + (
                f" Identity similarity of different held-out images (w vs v): {f(fq['identity_similarity_w_vs_v'])}."
                if fq.get("identity_similarity_w_vs_v") is not None
                else ""
            ),
        ]
    for note in metrics.get("notes") or []:
        lines += ["", f"Note: {note}"]
    anchors = metrics.get("anchor") or {}
    if anchors:
        lines += ["", "L_rec anchor (rig(w, F(w)) − w, rms relative to the codes' spread): "]
        lines += [f"- {k}: {f(v['relative'], 4)}" for k, v in anchors.items()]
    return "\n".join(lines) + "\n"


def _world_metrics(
    loaded: list[tuple[str, RigNet]],
    F: DFR,
    dfr_label: str,
    dataset: SampleSet,
    n_pairs: int,
    val_fraction: float,
    seed: int,
    method: str,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The built-in world's metrics.json (before ``targets`` and ``seconds``) and run.json arguments."""
    from stylerig.training.rignet import WorldReader, evaluate_on_world
    from stylerig.worlds import load_world
    from stylerig.worlds.estimator import describe_estimators

    method = _estimator_method(method)
    metrics: dict[str, Any] = {
        "estimator": f"world:{method}",
        "estimator_info": {
            "description": "the built-in world's CNN estimators (`files`: a general network, then the "
            "specialists that answer for the factors they name; trained on the world's renders, not DFR)"
            if method == "fast"
            else "the built-in world's analysis-by-synthesis fit (its renderer and prior, not DFR)",
            "independent_of": ["dfr", "latents"],
        }
        | ({"files": describe_estimators()} if method == "fast" else {}),
        "n_pairs": n_pairs,
        "sample_set": str(dataset.root.resolve()),
        "dfr": dfr_label,
        "rigs": {},
        "anchor": {},
    }
    _, val_rows = dataset.split(val_fraction, seed=seed)
    world = load_world()
    for label, rig in loaded:
        # The per-pair measurements of the groups this rig is the first to control run first; their
        # reader remembers what it read, so evaluate_on_world generates only the images they did not
        # need (the joint edits) instead of every image twice.
        per_pair = [
            g
            for g in ("rotation", "expression", "illumination")
            if g in rig.groups and MODE_OF_GROUP[g] not in metrics
        ]
        reader = WorldReader(
            world, method, log=lambda m, label=label, rig=rig: say(f"{label} ({rig.mode}): {m}")
        )  # the log keeps long runs visibly alive
        pairs = {}
        if per_pair:
            say(f"{label}: per-pair pose bins, expression landmarks, image change outside the face")
            pairs = edit_pairs(
                rig,
                F,
                dataset,
                per_pair,
                n_pairs=n_pairs,
                val_fraction=val_fraction,
                seed=seed,
                outside_change=True,
                reader=reader,
            )
        say(f"{label} ({rig.mode}): measuring {n_pairs} pairs per edit")
        flat = evaluate_on_world(
            rig, F, dataset, n_pairs=n_pairs, val_fraction=val_fraction, seed=seed, reader=reader
        )
        metrics["rigs"][label] = {"mode": rig.mode, "arch": rig.arch, "metrics": flat}
        for g in rig.groups:
            mode = MODE_OF_GROUP[g]
            if mode not in metrics:
                metrics[mode] = _section(flat, g, label, EXPRESSION_NAMES)
        if len(rig.groups) > 1 and "joint" not in metrics:
            metrics["joint"] = {"rig": label} | {
                k[len("joint_") :]: v for k, v in flat.items() if k.startswith("joint_")
            }
        if "floor" not in metrics:
            metrics["floor"] = {k[len("floor_") :]: v for k, v in flat.items() if k.startswith("floor_")}
        if pairs:
            for g, pr in pairs.items():
                metrics[MODE_OF_GROUP[g]]["image_change_outside_face"] = _outside_summary(pr)
            if "rotation" in pairs:
                metrics["pose"]["by_requested_change"] = bin_pose_errors(pairs["rotation"].pose())
            if "expression" in pairs:
                metrics["expression"]["landmark_rmse_px"] = landmark_rmse_px(
                    pairs["expression"], world.renderer
                )
        ws = torch.from_numpy(
            np.array(dataset.ws[np.sort(val_rows[: max(2, min(len(val_rows), 256))])], dtype=np.float32)
        )
        metrics["anchor"][label] = anchor_error(rig, F, ws)
    return metrics, {"n_pairs": n_pairs, "val_fraction": val_fraction, "method": method}


def _generator_metrics(
    loaded: list[tuple[str, RigNet]],
    F: DFR,
    dfr_label: str,
    dataset: SampleSet,
    generator: str,
    *,
    n_pairs: int,
    val_fraction: float,
    seed: int,
    method: str,
    detector: Any,
    face_model: Any,
    embedder: Any,
    fit: Mapping[str, Any] | None,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A generator file's metrics.json (before ``targets`` and ``seconds``), run.json arguments and assets."""
    import inspect

    from stylerig.data import file_sha256
    from stylerig.gan import load_generator
    from stylerig.image_fit import fit_params
    from stylerig.training.rignet import heldout_pairs

    if method != "auto":
        raise InputError(
            f"--estimator {method} names one of the built-in world's estimators; a generator file is read "
            "by the image fit with detected landmarks",
            hint="leave out --estimator (or pass auto) with --generator",
        )
    det = _load_detector(detector, generator)
    emb, identity_label = _resolve_embedder(embedder)
    fm = _face_model_for(F, face_model)
    fit_kw = dict(fit or {})
    settings = ("steps", "land_steps", "restarts", "lr", "land_weight", "prior_weight", "land_prior_weight")
    unknown = sorted(set(fit_kw) - set(settings))
    if unknown:
        raise InputError(f"unknown fit settings {unknown}", hint="see stylerig.image_fit.fit_params")
    say(f"loading {generator}")
    G = load_generator(generator)
    for label, rig in loaded:
        if (G.num_ws, G.w_dim) != (rig.num_ws, rig.w_dim):
            raise InputError(
                f"{generator} takes W+ codes of {G.num_ws} x {G.w_dim}, {label} edits {rig.num_ws} x {rig.w_dim}",
                hint="pass the generator the rig's sample set was drawn from",
            )
    notes: list[str] = []
    sha = file_sha256(generator)
    gen_info = dataset.manifest.get("generator") or {}
    if isinstance(gen_info, Mapping) and gen_info.get("sha256") and gen_info.get("sha256") != sha:
        notes.append(
            f"the sample set's manifest records another generator file ({gen_info.get('path')}, sha256 "
            f"{str(gen_info.get('sha256'))[:12]}…) than {generator} (sha256 {sha[:12]}…); unless that is the "
            "same network in another format, the set's codes are drawn here by a different generator"
        )
    # The DFR's light model (a prior: principal directions of light statistics, not F's readings) also
    # confines the fit's light; free, the fit trades the constant light against the reflectance. On 96
    # world generator images with exact landmarks: light RMSE 0.164 -> 0.075, correlation with the truth
    # along the model's directions 0.87 / 0.14 / 0.84 -> 0.96 / 0.43 / 0.85 (docs/demo.md).
    light_dims = int(getattr(F, "light_dims", 0) or 0)
    light_model = (F.light_mean.detach().cpu(), F.light_basis.detach().cpu()) if light_dims else None
    estimator = ImageFitEstimator(
        G,
        det,
        fm,
        dataset.resolution,
        noise_mode=str(dataset.manifest.get("noise_mode") or "const"),
        embedder=emb,
        fit_kw=fit_kw | {"light_model": light_model},
        log=say,
    )
    defaults = {k: v.default for k, v in inspect.signature(fit_params).parameters.items() if k in settings}
    metrics: dict[str, Any] = {
        "estimator": f"image-fit:{det.name}",
        "estimator_info": {
            "description": f"analysis-by-synthesis fit of the {fm.name} face model to each image with "
            f"{det.name} landmarks (stylerig.image_fit: landmarks, then masked photometric + landmarks + "
            "prior), started from the mean face placed by the landmarks; no ground truth exists, so "
            "targets are fits of the partner images",
            "independent_of": ["dfr", "latents"],
            "detector": det.name,
            "identity": identity_label,
            "face_model": fm.name,
            "resolution": dataset.resolution,
            "fit": defaults | fit_kw,
            "light_model": f"the DFR's light model ({light_dims} principal directions of its light statistics)"
            if light_dims
            else "none (27 free SH coefficients)",
        },
        "n_pairs": n_pairs,
        "sample_set": str(dataset.root.resolve()),
        "generator": str(Path(generator).resolve()),
        "dfr": dfr_label,
        "rigs": {},
        "anchor": {},
    }
    _, val_rows = dataset.split(val_fraction, seed=seed)
    sources: tuple[np.ndarray, ImageReading] | None = None
    for label, rig in loaded:
        say(f"{label} ({rig.mode}): reading {n_pairs} pairs per edit with {det.name} + image fit")
        flat, pairs, sources = measure_on_generator(
            rig, F, dataset, estimator, n_pairs=n_pairs, val_fraction=val_fraction, seed=seed, sources=sources
        )
        metrics["rigs"][label] = {"mode": rig.mode, "arch": rig.arch, "metrics": flat}
        for g in rig.groups:
            mode = MODE_OF_GROUP[g]
            if mode in metrics:
                continue
            metrics[mode] = _section(flat, g, label) | {
                "n": flat.get(f"{g}_n"),
                "no_face": flat.get(f"{g}_no_face"),
                "identity_similarity": flat.get(f"{g}_identity_similarity"),
            }
            if g == "rotation" and "rotation" in pairs:
                metrics[mode]["by_requested_change"] = bin_pose_errors(pairs["rotation"].pose())
            if g == "expression" and "expression" in pairs:
                metrics[mode]["landmark_rmse_px"] = landmark_rmse_px(pairs["expression"], estimator.renderer)
        if len(rig.groups) > 1 and "joint" not in metrics:
            metrics["joint"] = {"rig": label} | {
                k[len("joint_") :]: v for k, v in flat.items() if k.startswith("joint_")
            }
            metrics["joint"].setdefault("identity_similarity", None)
        ws = torch.from_numpy(
            np.array(dataset.ws[np.sort(val_rows[: max(2, min(len(val_rows), 256))])], dtype=np.float32)
        )
        metrics["anchor"][label] = anchor_error(rig, F, ws)
    assert sources is not None
    rows, reading = sources
    fq: dict[str, Any] = {
        "n_images": len(rows),
        "no_face": int((~reading.ok).sum()),
        "landmark_rmse_px_median": _median(reading.landmark_rmse_px),
        "photo_psnr_median": _median(reading.photo_psnr),
    }
    if reading.identity is not None:
        # What "a different person" scores: the held-out pairs' unedited w and v images.
        w_rows, v_rows = heldout_pairs(val_rows, n_pairs, seed)
        a = reading.identity[torch.as_tensor(np.searchsorted(rows, w_rows))]
        b = reading.identity[torch.as_tensor(np.searchsorted(rows, v_rows))]
        sim = _cosine(a, b)
        fq["identity_similarity_w_vs_v"] = _median(sim[(w_rows != v_rows)])
    metrics["fit_quality"] = fq
    metrics["n_images_read"] = estimator.n_images
    if notes:
        metrics["notes"] = notes
    run_args = {
        "n_pairs": n_pairs,
        "val_fraction": val_fraction,
        "estimator": metrics["estimator"],
        "fit": metrics["estimator_info"]["fit"],
    }
    assets = {"generator": {"path": metrics["generator"], "sha256": sha}, "face_model": fm.name}
    return metrics, run_args, assets


def evaluate(
    rigs: Sequence[str | os.PathLike[str] | RigNet],
    dfr: str | os.PathLike[str] | DFR | None = None,
    data: str | os.PathLike[str] | SampleSet | None = None,
    generator: str | os.PathLike[str] | None = None,
    *,
    n_pairs: int = 500,
    out_dir: str | os.PathLike[str] = "runs/evaluate",
    val_fraction: float = 0.1,
    seed: int | None = None,
    method: str = "auto",
    detector: Any = "auto",
    face_model: Any = None,
    embedder: Any = "auto",
    fit: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> EvaluateResult:
    """Measure rigs' edits on a generator's images and write ``metrics.json``, ``metrics.md``, ``run.json``.

    **Built-in world** (``generator`` None or ``"builtin"``): for each rig,
    :func:`~stylerig.training.rignet.evaluate_on_world` (held-out pairs; the world's independent
    estimator on the generator's images); for pose rigs also the per-pair pose binned by
    :func:`bin_pose_errors`, for expression rigs :func:`landmark_rmse_px` (both from :func:`edit_pairs`);
    and :func:`anchor_error` on the held-out sources.

    **A generator file** (any checkpoint :func:`~stylerig.gan.load_generator` reads): no world estimator
    and no truth exist; :func:`measure_on_generator` reads the images with a landmark detector and the
    image fit (:class:`ImageFitEstimator`), the same sections follow from its flat keys, plus
    ``<mode>.identity_similarity`` when dlib's face-recognition model is installed. The set only needs
    the generator's codes (``stylerig sample --generator G``); a set drawn from another generator file
    (sha256 in its manifest) is measured anyway and noted in ``notes``.

    ``metrics.json``: ``estimator`` (``world:fast``, ``world:fit``, or ``image-fit:<detector>``) and
    ``estimator_info`` (``description``; for the image fit also ``detector``, ``identity``
    (``dlib-resnet`` or :data:`IDENTITY_MISSING`), ``face_model``, ``fit`` settings);
    ``pose`` / ``expression`` / ``illumination`` sections (from the first rig controlling that group:
    ``err_ratio``, ``nontarget_drift_ratio``, ``drift`` per group, ``moved``; pose also
    ``median_abs_err_deg.{yaw,pitch,roll}``, ``median_abs_err_deg_within30``,
    ``achieved_over_requested`` and ``by_requested_change``; expression also ``landmark_rmse_px``; on a
    generator file also ``identity_similarity`` (None without dlib), ``no_face`` and ``n``);
    ``joint`` (mode ``all``: the three edited at once); ``floor`` (world only: it needs the truth);
    ``fit_quality`` (image fit only: median landmark rms and PSNR of the unedited images' fits,
    images without a detected face); ``anchor``; ``targets`` (issue 6, met or not); ``rigs`` (every
    rig's flat keys). Error units: per-dimension standard deviations (of the set's truth on the world,
    of the unedited images' fits on a generator file); pose in degrees.

    Args:
        rigs: rig files / folders / objects. dfr: F (default: the one recorded in the first rig).
        data: the sample set (default: the one recorded in the first rig); on the world it must be the
            built-in world's; on a generator file, a set of that generator's codes.
        generator: None or ``"builtin"`` (the world), or a generator checkpoint file.
        n_pairs: held-out pairs per edit. out_dir: output folder. val_fraction, seed: the held-out split
            and pairs (as in training); ``seed`` None = the first rig's training seed (recorded in its
            file; 0 when it records none), so that its pairs are rows it did not train on.
            method: the world estimator (``auto`` | ``fast`` | ``fit``;
            only ``auto`` with a generator file).
        detector: generator file only: ``"auto"`` | ``"face-alignment"`` | ``"dlib"``
            (:func:`stylerig.landmarks.load_detector`) or a :class:`~stylerig.data.LandmarkDetector`
            object (uint8 [N, R, R, 3] -> (float32 [N, 68, 2] pixels, bool [N] found)).
        face_model: generator file only: the face model to fit (default: the one recorded in the DFR,
            else the procedural model). embedder: generator file only: ``"auto"``
            (:func:`stylerig.image_fit.identity_embedder`), None (off) or an
            :data:`~stylerig.image_fit.IdentityEmbedder`. fit: generator file only: keywords for
            :func:`stylerig.image_fit.fit_params` (e.g. ``{"steps": 60, "land_steps": 150}``).
        log: progress messages. arguments: the command's arguments for ``run.json``.

    Raises:
        InputError: a world run on a set that is not the world's (or with rows without truth), NaN or
            infinite values in the set's ``ws.npy`` / ``params.npy`` (named), no rig, shapes that do not
            fit, no landmark detector for a generator file (the hint says how to install one), a world
            estimator named with a generator file, options of a generator file (``detector``,
            ``face_model``, ``embedder``, ``fit``) on the world, or ``out_dir`` holding another
            command's outputs. AssetError: missing files, or the outputs cannot be written (then none
            of the three files is replaced).
    """
    from stylerig.outputs import atomic_write, claim_output_dir, staged_outputs, write_json, write_run_json

    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    out = claim_output_dir(out_dir, "evaluate")
    if _is_world(generator):  # options only a generator file reads would be silently ignored
        stray = [
            name
            for name, given in (
                ("--landmarks", not (isinstance(detector, str) and detector == "auto")),
                ("--face-model", face_model is not None),
                ("embedder", not (isinstance(embedder, str) and embedder == "auto")),
                ("fit", fit is not None),
            )
            if given
        ]
        if stray:
            raise InputError(
                f"{', '.join(stray)} only appl{'ies' if len(stray) == 1 else 'y'} with --generator (a "
                "generator file read by the image fit); the built-in world is read by its own estimator",
                hint="leave out " + ", ".join(stray) + ", or pass --generator",
            )
    if n_pairs < 1:
        raise InputError(f"n_pairs must be at least 1, got {n_pairs}")
    loaded, F, dfr_label, dataset = _resolve(rigs, dfr, data, generator)
    if seed is None:
        seed = training_seed(loaded[0][1])
    _check_set_values(dataset, dataset.split(val_fraction, seed=seed)[1], world=_is_world(generator))
    if _is_world(generator):
        metrics, run_args = _world_metrics(
            loaded, F, dfr_label, dataset, n_pairs, val_fraction, seed, method, say
        )
        assets: dict[str, Any] = {}
    else:
        metrics, run_args, assets = _generator_metrics(
            loaded,
            F,
            dfr_label,
            dataset,
            str(generator),
            n_pairs=n_pairs,
            val_fraction=val_fraction,
            seed=seed,
            method=method,
            detector=detector,
            face_model=face_model,
            embedder=embedder,
            fit=fit,
            say=say,
        )
    metrics["seed"] = seed  # the held-out split and pairs
    split_note = dfr_split_note(F, dataset, val_fraction, seed)
    if split_note:
        metrics["notes"] = [*(metrics.get("notes") or []), split_note]
        say(f"note: {split_note}")
    metrics["targets"] = _targets(metrics)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    names = {"metrics": "metrics.json", "table": "metrics.md", "run": "run.json"}
    with staged_outputs(out) as stage:  # the three files land together, or none does
        write_json(stage / names["metrics"], metrics)
        atomic_write(stage / names["table"], metrics_table(metrics).encode())
        write_run_json(
            stage,
            "evaluate",
            dict(arguments or {}) | run_args,
            seed=seed,
            assets={
                "sample_set": {
                    "path": metrics["sample_set"],
                    "generator": dataset.manifest.get("generator"),
                },
                "dfr": dfr_label,
                "rigs": [label for label, _ in loaded],
            }
            | assets,
        )
    files = {role: str(out / name) for role, name in names.items()}
    return EvaluateResult(out_dir=out, files=files, metrics=metrics, seconds=time.perf_counter() - t0)
