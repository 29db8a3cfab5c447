"""The RigNet recipe behind ``stylerig train-rignet``: train a rig on a sample set with a frozen DFR.

For every step the trainer hands this task B rows of the training split (the codes ``w``); the partner
of each (``v``) is drawn from the training split with the trainer's RNG (so a resumed run sees the same
pairs). :func:`stylerig.rignet.rig_losses` then computes L_rec + L_edit + L_consist in both directions
(``../shared/DESIGN.md``) with the frozen DFR F and :func:`stylerig.losses.render_loss` at the sample
set's resolution. No generator runs during training: I_w, I_v and their landmarks come from the set, and
F(w) of every row is computed once up front (F is frozen).

Optimiser: Adam (the shared trainer's), not the paper's AdaDelta; a cosine learning-rate decay.

Metrics (:func:`edit_metrics`), for held-out pairs (w, v), with the edit target t = p_w with the edited
group(s) taken from p_v and ``measure`` = F (during training, cheap) or the world's independent
estimator on the generator's image of ŵ (:func:`evaluate_on_world`):

* ``err_before`` / ``err_after``: per pair the rms over the group's *active* dimensions (the ones that vary
  in the set) of ``(x - t) / std``, before the edit (x = the source's parameters) and after it (x =
  measure(ŵ)); ``err_ratio`` = mean after / mean before (the issue: <= 0.35 for expression and light);
* ``moved``: rms of ``(measure(ŵ) - before) / std`` over the edited group; ``drift_<group>``: the same for
  each group that must not change (identity, reflectance and the other controlled groups), and
  ``drift_ratio`` = the largest mean drift / the mean movement (the issue: <= 0.25);
  for illumination also ``err_ratio_sh_<term>``, the ratio of each SH term (:data:`params.SH_TERMS`)
  pooled over the colours where it varies (which part of the light an edit reaches); for expression,
  when at most 16 of its dimensions vary (the world's named components), ``err_ratio_dim_<k>``, the
  ratio of the mean |error| of expression dimension k;
* pose also: median |error| per angle in degrees, over all pairs and over pairs whose target yaw is within
  ±30°, and the yaw transfer ratio = slope through 0 of achieved against requested yaw change.

``std`` is the per-dimension standard deviation of the set's parameters (the true ``params.npy`` when the
set has them, else F(w)) over the training rows; dimensions with std < 1e-4 × their group's largest count
as inactive.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig._checks import parse_named_weights
from stylerig.data import SampleSet
from stylerig.dfr import DFR, load_dfr
from stylerig.errors import AssetError, InputError
from stylerig.losses import LAND_WEIGHT, render_loss
from stylerig.rignet import PairBatch, RigLossConfig, RigNet, rig_losses, save_rignet, spread_scale
from stylerig.training.distributed import Distributed
from stylerig.training.trainer import ProgressFn, Trainer, TrainerConfig, TrainResult

__all__ = [
    "RigConfig",
    "TrainRigResult",
    "WorldReader",
    "edit_metrics",
    "evaluate_on_world",
    "heldout_pairs",
    "oracle_codes",
    "train_rignet",
]


def parse_group_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``"expression=10, illumination=3"`` -> ``(("expression", 10.0), ("illumination", 3.0))``;
    ``pose`` names the rotation group. Raises InputError on a malformed entry (the names and values are
    checked by :class:`~stylerig.rignet.RigLossConfig`)."""
    pairs = parse_named_weights(
        text,
        "group weight",
        hint="write GROUP=WEIGHT pairs separated by commas, e.g. expression=10,illumination=3",
    )
    out = tuple(({"pose": "rotation"}.get(name, name), weight) for name, weight in pairs)
    return RigLossConfig(group_weights=out).group_weights


#: L_param's unit per value (``RigConfig.param_scale``): ``dfr``, F's output scale ``p_scale`` (1 for
#: coefficients, 0.3 for rotation and light); ``data``, the spread of F(w) over the training rows
#: (:func:`stylerig.rignet.spread_scale`; a group F never moves keeps F's scale), so that a value counts
#: in the units the measurements use -- on the world F's light varies by 0.03-0.12 and pitch by 0.12 rad,
#: which ``dfr`` weighs 6-100× below an identity coefficient's 1 sd.
PARAM_SCALES = ("dfr", "data")


@dataclass
class RigConfig:
    """Settings of a RigNet run. ``batch`` counts pairs (each gives 2 directed edits, × 3 for ``all``)."""

    mode: str = "pose"
    arch: str = "rignet"  # rignet | steering | delta
    latent: int = 32
    init_scale: float = 0.01
    tied: str = "auto"  # auto | yes | no: one residual for all slots (auto: when the codes' slots are equal)
    hidden: int = 0  # > 0: a hidden layer in each decoder (not the paper's linear RigNet)
    subspace: int = 0  # > 0: residuals restricted to the codes' top principal directions (RigNet docs)
    split: bool = False  # mode all: one decoder per group (RigNet's ``split``)
    rec: bool = True
    edit: bool = True
    consist: bool = True
    rec_weight: float = 1.0
    edit_weight: float = 1.0
    consist_weight: float = 1.0
    param_weight: float = 0.0  # L_param (stylerig.rignet.RigLossConfig.param_weight; not in the paper)
    param_scale: str = "dfr"  # L_param's unit per value: dfr (F's p_scale) | data (F(w)'s spread, see below)
    group_weights: str = ""  # "expression=10,illumination=3": per-group L_edit / L_consist weights (mode all)
    land_weight: float = LAND_WEIGHT  # landmark weight inside L_render (as for DFR)
    steps: int = 600
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 20
    schedule: str = "cosine"
    seed: int = 0
    val_fraction: float = 0.1
    val_pairs: int = 64  # held-out pairs for the DFR-measured metrics (validation and metrics.json)
    log_every: int = 10
    val_every: int = 100
    checkpoint_every: int = 100

    def trainer_config(self) -> TrainerConfig:
        return TrainerConfig(
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            seed=self.seed,
            warmup=self.warmup,
            schedule=self.schedule,
            log_every=self.log_every,
            val_every=self.val_every,
            checkpoint_every=self.checkpoint_every,
        )

    def loss_config(self) -> RigLossConfig:
        return RigLossConfig(
            rec=self.rec,
            edit=self.edit,
            consist=self.consist,
            rec_weight=self.rec_weight,
            edit_weight=self.edit_weight,
            consist_weight=self.consist_weight,
            param_weight=self.param_weight,
            group_weights=parse_group_weights(self.group_weights),
        )

    def check(self) -> RigLossConfig:
        """Check the loss settings before any work; returns :meth:`loss_config`.

        Raises:
            InputError: a term is switched off or unknown (:class:`~stylerig.rignet.RigLossConfig`), every
                switched-on term weighs 0 (the rig would train on a loss of 0), or a group weight names a
                group the rig's ``mode`` does not control (it would be ignored).
        """
        loss = self.loss_config()
        if self.param_scale not in PARAM_SCALES:
            raise InputError(
                f"unknown param scale {self.param_scale!r}", hint=f"use one of {', '.join(PARAM_SCALES)}"
            )
        groups = params.MODES.get(self.mode)
        if groups is None:
            raise InputError(f"unknown mode {self.mode!r}", hint=f"use one of {', '.join(params.MODES)}")
        stray = [g for g, _ in loss.group_weights if g not in groups]
        if stray:
            names = {"rotation": "pose"}
            raise InputError(
                f"--group-weight names {', '.join(names.get(g, g) for g in stray)}, which a rig of mode "
                f"{self.mode} does not edit",
                hint="give group weights only for the groups the rig controls (mode all: pose, expression, "
                "illumination), or leave out --group-weight",
            )
        weights = dict(loss.group_weights)
        any_group = any(weights.get(g, 1.0) > 0 for g in groups)
        terms = [
            loss.rec and loss.rec_weight > 0 and self.arch != "delta",  # delta: L_rec is identically 0
            loss.edit and loss.edit_weight > 0 and any_group,
            loss.consist and loss.consist_weight > 0 and any_group,
        ]
        if not any(terms):
            raise InputError(
                "every switched-on RigNet loss term has weight 0 (with --arch delta L_rec is identically 0): "
                "the rig would train on a loss of 0",
                hint="give at least one of --rec-weight, --edit-weight, --consist-weight (and the "
                "--group-weight of an edited group) a value > 0",
            )
        return loss

    def task_config(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("steps", "log_every", "val_every", "checkpoint_every", "batch", "lr", "warmup", "schedule"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class TrainRigResult:
    """What :func:`train_rignet` did (files written by rank 0 only).

    Attributes:
        out_dir: the output folder; rig_path: ``rig.safetensors`` (None when interrupted).
        train: the trainer's result. metrics: held-out DFR-measured metrics (:func:`edit_metrics`).
        samples_per_s: directed training edits per second of training (2 per pair, × 3 for ``all``).
        notes: things a person should know. rank: this process's rank. seconds: the whole call.
    """

    out_dir: Path
    rig_path: Path | None
    train: TrainResult
    metrics: dict[str, Any]
    samples_per_s: float
    notes: tuple[str, ...]
    rank: int
    seconds: float


# ----------------------------------------------------------------------------------------------------
# Metrics.


def _std_and_active(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension std [257] and bool [257] active mask of parameter vectors p [N, 257]."""
    std = p.double().std(0)
    active = torch.zeros(params.NUM_PARAMS, dtype=torch.bool)
    for g in params.GROUPS:
        s = params.LAYOUT[g]
        top = float(std[s].max())
        active[s] = std[s] > max(1e-4 * top, 1e-8)
    return std.float(), active


def _masked_rms(x: torch.Tensor, mask: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """rms over the dims where ``mask`` [257] is True of x [N, 257] / std -> [N] (0 when none is)."""
    m = mask.to(x.device)
    if not bool(m.any()):
        return x.new_zeros(x.shape[0])
    return (x[:, m] / std.to(x.device)[m]).pow(2).mean(-1).sqrt()


def _group_rms(x: torch.Tensor, group: str, std: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """rms over the active dims of ``group`` of x [N, 257] / std -> [N] (0 when none is active)."""
    in_group = torch.zeros_like(active, dtype=torch.bool)
    in_group[params.LAYOUT[group]] = True
    return _masked_rms(x, active & in_group, std)


def edit_metrics(
    before: torch.Tensor,
    target: torch.Tensor,
    after: torch.Tensor,
    groups: tuple[str, ...],
    std: torch.Tensor,
    active: torch.Tensor,
) -> dict[str, float]:
    """Edit accuracy and drift of edits that changed ``groups`` (see the module docstring).

    Args:
        before: float [N, 257] the sources' parameters; target: float [N, 257] the requested ones (equal
            to ``before`` outside ``groups``); after: float [N, 257] the edited codes' measured parameters.
        groups: the edited groups (one, or the three of ``all`` edited together).
        std: float [257] per-dimension spread; active: bool [257] the dimensions that count.

    Returns:
        flat dict of floats, keys prefixed by the edited group (``rotation_err_ratio`` ...,
        ``expression_transfer_ratio``: the slope of the achieved change on the requested one); pose keys
        in degrees. A group none of whose dimensions is active (a DFR that has not learned to read it
        yet reads a constant) cannot be measured: it gets ``<group>_measurable = 0`` and no error or
        drift keys, rather than a ratio of zeros.
    """
    before, target, after = before.float().cpu(), target.float().cpu(), after.float().cpu()
    std, active = std.float().cpu(), active.cpu()  # (a GPU run's statistics may live on the GPU)
    out: dict[str, float] = {"n": float(before.shape[0])}
    for g in groups:
        if not bool(active[params.LAYOUT[g]].any()):
            out[f"{g}_measurable"] = 0.0
            continue
        eb = _group_rms(before - target, g, std, active)
        ea = _group_rms(after - target, g, std, active)
        moved = _group_rms(after - before, g, std, active).mean()
        out[f"{g}_err_before"] = float(eb.mean())
        out[f"{g}_err_after"] = float(ea.mean())
        out[f"{g}_err_ratio"] = float(ea.mean() / eb.mean().clamp_min(1e-12))
        out[f"{g}_moved"] = float(moved)
        if g != "rotation":  # (the pose's transfer is the yaw's, below, in degrees)
            # How much of the requested change arrived: the slope through 0 of the achieved change on the
            # requested one, pooled over the group's active values in sd units (1: all of it; the world's
            # perfect edit reads 0.83-0.95 per expression component and 0.52 for eye_close, its
            # estimator's own shrinkage; docs/rignet.md, session 12).
            a_g = active[params.LAYOUT[g]]
            req = (params.get(target, g) - params.get(before, g))[:, a_g] / params.get(std, g)[a_g]
            got = (params.get(after, g) - params.get(before, g))[:, a_g] / params.get(std, g)[a_g]
            out[f"{g}_transfer_ratio"] = float((got * req).sum() / req.pow(2).sum().clamp_min(1e-12))
        g_active = torch.nonzero(active[params.LAYOUT[g]]).flatten().tolist()
        # A few named components (the world's expressions): each one's ratio.
        if g == "expression" and len(g_active) <= 16:
            for k in g_active:
                j = params.LAYOUT[g].start + k
                e_b = ((before - target)[:, j] / std[j]).abs().mean()
                e_a = ((after - target)[:, j] / std[j]).abs().mean()
                out[f"{g}_err_ratio_dim_{k}"] = float(e_a / e_b.clamp_min(1e-12))
        if g == "illumination":  # the ratio of each SH term, pooled over the colours (where it varies)
            s = params.LAYOUT[g]
            for k, term in enumerate(params.SH_TERMS):
                rows = torch.zeros(params.NUM_PARAMS, dtype=torch.bool)
                rows[[s.start + k, s.start + 9 + k, s.start + 18 + k]] = True
                a = active & rows
                if bool(a.any()):
                    e_b = _masked_rms(before - target, a, std).mean()
                    e_a = _masked_rms(after - target, a, std).mean()
                    out[f"{g}_err_ratio_sh_{term}"] = float(e_a / e_b.clamp_min(1e-12))
        drifts = {}
        for h in params.GROUPS:
            if h in groups or h == "translation" or not bool(active[params.LAYOUT[h]].any()):
                continue
            drifts[h] = float(_group_rms(after - before, h, std, active).mean())
            out[f"{g}_drift_{h}"] = drifts[h]
        if drifts:
            out[f"{g}_drift_ratio"] = max(drifts.values()) / max(float(moved), 1e-12)
        if g == "rotation":
            deg = 180.0 / math.pi
            err = (params.get(after, g) - params.get(target, g)).abs() * deg
            within = params.get(target, g)[:, 0].abs() * deg <= 30.0
            for j, name in enumerate(params.ROTATION_NAMES):
                out[f"{name}_median_err_deg"] = float(err[:, j].median())
                if bool(within.any()):
                    out[f"{name}_median_err_deg_within30"] = float(err[within, j].median())
            req = (params.get(target, g)[:, 0] - params.get(before, g)[:, 0]) * deg
            got = (params.get(after, g)[:, 0] - params.get(before, g)[:, 0]) * deg
            out["yaw_transfer_ratio"] = float((got * req).sum() / req.pow(2).sum().clamp_min(1e-12))
    return out


def heldout_pairs(rows: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fixed pairs (w row, v row) of distinct rows drawn from ``rows``: int64 [n] each."""
    if len(rows) < 2:
        raise InputError("held-out pairs need at least 2 held-out rows", hint="use a larger sample set")
    rng = np.random.default_rng([int(seed), 7])
    a = rng.integers(0, len(rows), n)
    b = (a + rng.integers(1, len(rows), n)) % len(rows)
    return rows[a].astype(np.int64), rows[b].astype(np.int64)


def _targets(rig: RigNet, p_w: torch.Tensor, p_v: torch.Tensor) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    """The edits to measure: each controlled group alone, and (mode ``all``) the three together."""
    out = []
    for g in rig.groups:
        out.append(((g,), params.replace(p_w, g, params.get(p_v, g))))
    if len(rig.groups) > 1:
        t = p_w
        for g in rig.groups:
            t = params.replace(t, g, params.get(p_v, g))
        out.append((rig.groups, t))
    return out


def rig_request(p_current: torch.Tensor, groups: tuple[str, ...], p_target: torch.Tensor) -> torch.Tensor:
    """What a rig is asked in a measurement: F(w) ``p_current`` [B,257] with ``groups`` taken from
    ``p_target`` [B,257] -- the request of training (L_rec's F(w), one group changed) and of
    :mod:`stylerig.editing`. The blocks that are not edited must be the rig's own F(w), never the judge's
    reading of the image: a rig that reads every block (mode ``all``) would be asked to move them by
    the difference between the two estimators."""
    request = p_current
    for g in groups:
        request = params.replace(request, g, params.get(p_target, g))
    return request


@torch.no_grad()
def _measure(
    rig: RigNet,
    ws_w: torch.Tensor,
    p_cur: torch.Tensor,
    p_before: torch.Tensor,
    p_v: torch.Tensor,
    measure: Callable[[torch.Tensor], torch.Tensor],
    std: torch.Tensor,
    active: torch.Tensor,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for groups, target in _targets(rig, p_before, p_v):
        w_hat = rig(ws_w, rig_request(p_cur, groups, p_v), p_current=p_cur)
        m = edit_metrics(p_before, target, measure(w_hat), groups, std, active)
        prefix = "" if len(groups) == 1 else "joint_"
        out.update({prefix + k: v for k, v in m.items()})
    return out


# ----------------------------------------------------------------------------------------------------
# The task.


class _Data:
    """Rows of a sample set as tensors on a device, F(w) of every row precomputed."""

    def __init__(self, data: SampleSet, p_all: torch.Tensor, device: torch.device) -> None:
        self.data, self.p_all, self.device = data, p_all, device

    def ws(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.data.ws[rows], dtype=np.float32)).to(self.device)

    def images(self, rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.data.images[rows])).to(self.device)
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def landmarks(self, rows: np.ndarray) -> torch.Tensor:
        """float32 [b, 68, 2] pixels; NaN rows (no landmarks) stay NaN: the loss skips their term."""
        if self.data.landmarks is None:
            return torch.full((len(rows), 68, 2), float("nan"), device=self.device)
        return torch.from_numpy(np.asarray(self.data.landmarks[rows], dtype=np.float32)).to(self.device)

    def batch(self, w_rows: np.ndarray, v_rows: np.ndarray) -> PairBatch:
        return PairBatch(
            ws_w=self.ws(w_rows),
            ws_v=self.ws(v_rows),
            images_w=self.images(w_rows),
            images_v=self.images(v_rows),
            landmarks_w=self.landmarks(w_rows),
            landmarks_v=self.landmarks(v_rows),
            p_w=self.p_all[torch.as_tensor(w_rows)],
            p_v=self.p_all[torch.as_tensor(v_rows)],
        )


def make_render_loss(renderer: Any, land_weight: float) -> Callable[..., torch.Tensor]:
    """L_render per sample for :func:`~stylerig.rignet.rig_losses`; rows with NaN landmarks get the
    photometric term only."""

    def fn(p: torch.Tensor, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        ok = torch.isfinite(landmarks).flatten(1).all(1)  # [N]
        lm = torch.where(ok[:, None, None], landmarks, 0.0)
        rl = render_loss(renderer, p, images, lm, land_weight=land_weight)
        return rl.photo + land_weight * torch.where(ok, rl.land, 0.0)

    return fn


class _RigTask:
    def __init__(
        self,
        data: _Data,
        dfr: DFR,
        render_fn: Callable[..., torch.Tensor],
        cfg: RigConfig,
        train_rows: np.ndarray,
        val: tuple[np.ndarray, np.ndarray],
        std: torch.Tensor,
        active: torch.Tensor,
    ) -> None:
        self.data, self.dfr, self.render_fn, self.cfg = data, dfr, render_fn, cfg
        self.train_rows, self.val, self.std, self.active = train_rows, val, std, active
        self.loss_cfg = cfg.loss_config()
        self.param_scale: torch.Tensor | None = None
        if cfg.param_scale == "data":
            p = data.p_all[torch.as_tensor(train_rows, device=data.p_all.device)]
            scale = spread_scale(p, params.GROUPS)
            fallback = getattr(dfr, "p_scale", None)
            for g in params.GROUPS:  # a group F never moves: its spread says nothing, keep F's scale
                s = params.LAYOUT[g]
                if fallback is not None and float(p[:, s].std(0).max()) <= 1e-6:
                    scale[s] = fallback[s].to(scale)
            self.param_scale = scale.to(p)

    def loss(
        self, model: torch.nn.Module, rows: np.ndarray, step: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(self.train_rows)
        pick = torch.randint(0, n, (len(rows),), generator=rng).numpy()
        v_rows = self.train_rows[pick]
        same = v_rows == rows
        v_rows[same] = self.train_rows[(pick[same] + 1) % n]
        out = rig_losses(
            model,
            self.dfr,
            self.render_fn,
            self.data.batch(rows, v_rows),
            self.loss_cfg,
            param_scale=self.param_scale,
        )
        return out.total, {k: float(v) for k, v in out.parts.items()}

    def validate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        w_rows, v_rows = self.val
        d = self.data
        p_w, p_v = d.p_all[torch.as_tensor(w_rows)], d.p_all[torch.as_tensor(v_rows)]
        return _measure(model, d.ws(w_rows), p_w, p_w, p_v, self.dfr, self.std, self.active)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# The recipe.


def train_rignet(
    data: str | os.PathLike[str] | SampleSet,
    dfr: str | os.PathLike[str] | DFR,
    out_dir: str | os.PathLike[str],
    *,
    config: RigConfig | None = None,
    device: str | torch.device = "auto",
    renderer_backend: str = "auto",
    resume: bool = True,
    progress: ProgressFn | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> TrainRigResult:
    """Train a RigNet on a sample set with a frozen DFR (see the module docstring); torchrun-aware.

    Args:
        data: the sample set folder (``stylerig sample``) or a :class:`~stylerig.data.SampleSet`.
        dfr: the DFR (``dfr.safetensors`` of ``stylerig fit-dfr``, its folder, or a :class:`~stylerig.dfr.DFR`).
        out_dir: output folder: ``rig.safetensors``, ``metrics.json``, ``log.jsonl``, ``checkpoint.safetensors``,
            ``run.json``.
        config: :class:`RigConfig` (defaults when None).
        device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'. renderer_backend: 'auto' | 'torch' | 'nvdiffrast'.
        resume: continue from ``out_dir/checkpoint.safetensors`` when present.
        progress: rank-0 progress callback. arguments: the command's arguments for ``run.json``.

    Returns:
        :class:`TrainRigResult`.

    Raises:
        AssetError: a missing or damaged sample set, DFR or checkpoint. InputError: bad settings
            (:meth:`RigConfig.check`), a DFR that does not fit the set's codes, NaN or infinite values in
            the set's ``ws.npy`` / ``params.npy``, or ``out_dir`` holding another command's outputs.
    """
    from stylerig.devices import resolve_device
    from stylerig.outputs import claim_output_dir, write_json, write_run_json
    from stylerig.render import FaceRenderer
    from stylerig.training.dfr import predict, resolve_face_model

    t_start = time.perf_counter()
    cfg = config or RigConfig()
    cfg.trainer_config().check()
    loss_cfg = cfg.check()
    out = claim_output_dir(out_dir, "train-rignet")
    dataset = data if isinstance(data, SampleSet) else SampleSet(data)
    F = dfr if isinstance(dfr, DFR) else load_dfr(dfr)
    dfr_label = str(Path(dfr).resolve()) if not isinstance(dfr, DFR) else "in-memory DFR"
    if (F.num_ws, F.w_dim) != (dataset.num_ws, dataset.w_dim):
        raise InputError(
            f"the DFR takes W+ codes of {F.num_ws} x {F.w_dim}, the set has {dataset.num_ws} x {dataset.w_dim}",
            hint="pass the DFR trained on this sample set's generator",
        )
    # NaN codes would reach the DFR and fail there as "p contains NaN": name the file instead.
    dataset.check_finite(("ws", "params"))
    dist = Distributed(resolve_device(device))
    try:
        notes: list[str] = []
        F = F.to(dist.device).eval().requires_grad_(False)
        fm, note = resolve_face_model(dataset, None)
        if note:
            notes.append(note)
        renderer = FaceRenderer(fm, dataset.resolution, backend=renderer_backend).to(dist.device)  # type: ignore[arg-type]
        train_rows, val_rows = dataset.split(cfg.val_fraction, seed=cfg.seed)
        if len(val_rows) < 2:
            raise InputError("the held-out split has fewer than 2 rows", hint="use a larger sample set")
        all_rows = np.arange(len(dataset), dtype=np.int64)
        p_all = predict(F, dataset, all_rows, dist.device)  # F frozen: once per row
        p_train = p_all[torch.as_tensor(train_rows)].cpu()
        truth = dataset.params
        ref = p_train
        if truth is not None:
            t = torch.from_numpy(np.asarray(truth[train_rows], dtype=np.float32))
            if bool(torch.isfinite(t).all()):
                ref = t
        std, active = _std_and_active(ref)
        if cfg.tied not in ("auto", "yes", "no"):
            raise InputError(f"tied must be auto, yes or no, got {cfg.tied!r}")
        tied = cfg.tied == "yes"
        if cfg.tied == "auto":
            probe = torch.from_numpy(np.array(dataset.ws[train_rows[:256]], dtype=np.float32))
            tied = bool((probe - probe[:, :1]).abs().max() <= 1e-6)
            if tied:
                notes.append(
                    "the training codes have identical ws slots (an unmixed set): the rig adds one residual "
                    "to every slot (tied; see stylerig.rignet)"
                )
        if cfg.arch == "delta" and not (cfg.rec and cfg.rec_weight == 1.0):
            notes.append(
                "with --arch delta no change is exactly no edit, so L_rec is identically 0: --no-rec and "
                "--rec-weight change nothing"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            rig = RigNet(
                dataset.num_ws,
                dataset.w_dim,
                cfg.mode,
                cfg.latent,
                cfg.arch,
                cfg.init_scale,
                tied=tied,
                subspace=cfg.subspace,
                hidden=cfg.hidden,
                split=cfg.split,
            )
        rig.set_statistics(p_train)
        if cfg.subspace:
            pick = train_rows[:: max(1, len(train_rows) // 2000)]
            rig.set_subspace(torch.from_numpy(np.array(dataset.ws[pick], dtype=np.float32)))
        d = _Data(dataset, p_all, dist.device)
        task = _RigTask(
            d,
            F,
            make_render_loss(renderer, cfg.land_weight),
            cfg,
            train_rows,
            heldout_pairs(val_rows, cfg.val_pairs, cfg.seed),
            std,
            active,
        )
        run_config = cfg.task_config() | {
            "data": str(dataset.root.resolve()),
            "n": len(dataset),
            "dfr": dfr_label,
        }
        trainer = Trainer(
            rig,
            task,
            train_rows,
            cfg.trainer_config(),
            out,
            dist=dist,
            run_config=run_config,
            added_task_keys={"param_weight": 0.0, "param_scale": "dfr"},  # checkpoints from before them
        )
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_run_json(
                out,
                "train-rignet",
                dict(arguments or {}) | {"config": asdict(cfg), "world_size": dist.world_size},
                seed=cfg.seed,
                assets={
                    "sample_set": {
                        "path": str(dataset.root.resolve()),
                        "generator": dataset.manifest.get("generator"),
                    },
                    "dfr": {"path": dfr_label, "info": F.info},
                    "face_model": {"name": fm.name, "source": fm.source, "licence": fm.licence},
                },
            )
        result = trainer.fit(resume=resume, progress=progress)
        notes.extend(result.notes)
        per_step = 2 * len(rig.groups) * cfg.batch if (loss_cfg.edit or loss_cfg.consist) else 2 * cfg.batch
        sps = per_step * result.step / result.elapsed_s if result.elapsed_s > 0 else 0.0
        metrics: dict[str, Any] = {}
        rig_path: Path | None = None
        if dist.is_main and not result.interrupted:
            rig.eval()
            rig_path = save_rignet(
                rig,
                out / "rig.safetensors",
                {
                    "dfr": dfr_label,
                    "sample_set": str(dataset.root.resolve()),
                    "resolution": dataset.resolution,
                    "steps": result.step,
                    "config": asdict(cfg),
                },
            )
            metrics = {"measured_with": "dfr", **result.validation}
            metrics.update(
                steps=result.step, train_seconds=round(result.elapsed_s, 2), samples_per_s=round(sps, 2)
            )
            write_json(out / "metrics.json", metrics)
        dist.barrier()
        return TrainRigResult(
            out_dir=out,
            rig_path=rig_path,
            train=result,
            metrics=metrics,
            samples_per_s=sps,
            notes=tuple(notes),
            rank=dist.rank,
            seconds=time.perf_counter() - t_start,
        )
    finally:
        dist.close()


# ----------------------------------------------------------------------------------------------------
# Measuring a rig on the built-in world with its independent estimator.


class WorldReader:
    """Reads W+ codes as the world's judge does: the generator's image (``noise_mode="const"``, clamped to
    [−1, 1]), then the world's independent estimator; in chunks, remembering every estimate by the codes'
    bytes.

    :func:`evaluate_on_world` and :func:`stylerig.evaluate.edit_pairs` measure the same edits (the same
    pairs, requests and perfect edits); given one reader they generate each image once. A repeated call
    with codes equal bit for bit returns the remembered estimates; any other call generates, so sharing
    a reader can change how long a measurement takes, never what it reads.

    Args:
        world: the :class:`~stylerig.worlds.world.World` (its ``generator`` and ``estimate``).
        method: the estimator of :meth:`~stylerig.worlds.world.World.estimate` (``fast`` | ``fit``).
        chunk: images per generator call. estimate_kw: keywords for ``world.estimate``.
        log: progress messages (``"estimated N images"`` after each chunk).
    """

    def __init__(
        self,
        world: Any,
        method: str,
        *,
        chunk: int = 25,
        estimate_kw: Mapping[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.world, self.method, self.chunk = world, method, int(chunk)
        self.estimate_kw = dict(estimate_kw or {})
        self.log = log
        #: images generated and estimated so far (remembered reads do not count).
        self.n_generated = 0
        self._memo: dict[bytes, torch.Tensor] = {}

    @staticmethod
    def _key(ws: torch.Tensor) -> bytes:
        a = ws.detach().to("cpu", torch.float32).contiguous().numpy()
        return hashlib.sha256(a.tobytes()).digest() + repr(a.shape).encode()

    @torch.no_grad()
    def read(self, ws: torch.Tensor, *, images: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Estimate the generator's images of ``ws``.

        Args:
            ws: float [N, num_ws, w_dim] W+ codes (CPU).
            images: also return the images (they are not remembered, so this always generates).

        Returns:
            (float [N, 257] estimates, float [N, 3, H, W] images in [−1, 1] or None).
        """
        key = self._key(ws)
        if not images and key in self._memo:
            return self._memo[key].clone(), None
        outs, imgs = [], []
        for i in range(0, ws.shape[0], self.chunk):
            img = self.world.generator.synthesis(ws[i : i + self.chunk], noise_mode="const").clamp(-1, 1)
            outs.append(self.world.estimate(img, method=self.method, **self.estimate_kw))
            if images:
                imgs.append(img)
            self.n_generated += len(img)
            if self.log is not None:
                self.log(f"estimated {self.n_generated} images")
        est = torch.cat(outs)
        self._memo[key] = est.clone()
        return est, (torch.cat(imgs) if images else None)

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        """float [N, 257]: the estimates of :meth:`read`."""
        return self.read(ws)[0]


def evaluate_on_world(
    rig: RigNet,
    dfr: DFR,
    data: SampleSet,
    *,
    n_pairs: int = 500,
    val_fraction: float = 0.1,
    seed: int = 0,
    chunk: int = 25,
    method: str = "auto",
    estimate_kw: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    oracle: bool = True,
    reader: WorldReader | None = None,
) -> dict[str, float]:
    """The issue's edit accuracy on the built-in world, measured with its independent estimator.

    ``method``: the estimator of :meth:`stylerig.worlds.world.World.estimate` (``fast``: the world's
    CNN; ``fit``: analysis-by-synthesis, ~1.6 s per image); ``auto`` = ``fast`` when its asset is
    installed, else ``fit``. The result's ``estimator_fast`` is 1.0 when ``fast`` was used.

    For :func:`heldout_pairs` (w, v) of the held-out split training used (same ``val_fraction`` and
    ``seed``), the rig edits w towards v's *true* parameters of its group(s) (the rig's input is F(w) with
    those groups replaced, :func:`rig_request`; the steering rig gets ``p_current = F(w)``), and the
    world's estimator (neither DFR nor the latents) reads the generator's images:

    * ``before`` = estimate(G(w)) (each distinct source once), ``after`` = estimate(G(ŵ));
    * ``target`` = ``before`` with the edited group(s) replaced by v's truth;

    so the drift of what must not change compares one estimator with itself, and the error to the target
    is against the requested (true) values. ``floor_*`` keys measure the unedited images against their
    truth (generator + estimator error: no rig can do better): ``floor_{yaw,pitch,roll}_median_err_deg``
    and ``floor_<group>_rms`` in the normalised units.

    ``oracle`` (default on): the same metrics, prefixed ``oracle_``, for the *perfect* edit, which only
    the world can make: the source's world factors with the edited group's factors taken from the
    partner's (:data:`ORACLE_FACTOR_GROUP`), through the generator's own mapping. It shows what the generator
    and the estimator let any rig reach (an err ratio the oracle cannot reach, no rig can); it is skipped
    (``oracle_available`` = 0) when the set's codes are not the world's untruncated codes of its seeds.

    ``reader``: a :class:`WorldReader` to share with other measurements of the same edits (then
    ``chunk``, ``method``, ``estimate_kw`` and ``log`` are the reader's); default, a fresh one.

    Returns:
        :func:`edit_metrics` per edited group (and ``joint_`` for all three at once in mode ``all``),
        plus the floors, the ``oracle_`` keys, ``n_sources`` and ``n_images`` measured (remembered reads
        of a shared reader included).
    """
    from stylerig.worlds import load_world

    if data.params is None:
        raise InputError(
            "measuring on the world needs the set's true params.npy", hint="sample the built-in world"
        )
    world = load_world()
    train_rows, val_rows = data.split(val_fraction, seed=seed)
    w_rows, v_rows = heldout_pairs(val_rows, n_pairs, seed)
    truth = torch.from_numpy(np.array(data.params, dtype=np.float32))
    std, active = _std_and_active(truth[torch.as_tensor(train_rows)])
    ws = torch.from_numpy(np.array(data.ws[w_rows], dtype=np.float32))
    p_v = truth[torch.as_tensor(v_rows)]
    rig, dfr = rig.cpu().eval(), dfr.cpu().eval()
    with torch.no_grad():
        p_cur = dfr(ws)
    n_images = 0
    if reader is None:
        if method == "auto":
            method = "fit"
            try:
                from stylerig.worlds.estimator import load_estimator

                load_estimator()
                method = "fast"
            except (ImportError, AssetError, TypeError):
                pass
        reader = WorldReader(world, method, chunk=chunk, estimate_kw=estimate_kw, log=log)
    method = reader.method

    def measure(w_hat: torch.Tensor) -> torch.Tensor:
        nonlocal n_images
        n_images += w_hat.shape[0]
        return reader(w_hat)

    sources, inverse = np.unique(w_rows, return_inverse=True)
    est_src = measure(torch.from_numpy(np.array(data.ws[sources], dtype=np.float32)))
    p_before = est_src[torch.as_tensor(inverse)]
    out = _measure(rig, ws, p_cur, p_before, p_v, measure, std, active)
    # The floor: unedited images read by the estimator against their truth.
    t_src = truth[torch.as_tensor(sources)]
    err = (params.get(est_src, "rotation") - params.get(t_src, "rotation")).abs() * (180.0 / math.pi)
    for j, name in enumerate(params.ROTATION_NAMES):
        out[f"floor_{name}_median_err_deg"] = float(err[:, j].median())
    for g in ("identity", "expression", "reflectance", "illumination", "rotation"):
        out[f"floor_{g}_rms"] = float(_group_rms(est_src - t_src, g, std, active).mean())
    if oracle:
        oracle_ws = oracle_codes(world, data, w_rows, v_rows, [g for g, _ in _targets(rig, p_before, p_v)])
        out["oracle_available"] = float(oracle_ws is not None)
        if oracle_ws is not None:
            for (groups, target), ws_o in zip(_targets(rig, p_before, p_v), oracle_ws, strict=True):
                m = edit_metrics(p_before, target, measure(ws_o), groups, std, active)
                prefix = "oracle_" + ("" if len(groups) == 1 else "joint_")
                out.update({prefix + k: v for k, v in m.items()})
    out["n_sources"] = float(len(sources))
    out["n_images"] = float(n_images)
    out["estimator_fast"] = float(method == "fast")
    return out


#: The world's factor group (:data:`stylerig.worlds.prior.FACTOR_GROUPS`) behind each rig group.
ORACLE_FACTOR_GROUP: dict[str, str] = {
    "rotation": "pose",
    "expression": "expression",
    "illumination": "illumination",
}


@torch.no_grad()
def oracle_codes(
    world: Any, data: SampleSet, w_rows: np.ndarray, v_rows: np.ndarray, edits: list[tuple[str, ...]]
) -> list[torch.Tensor] | None:
    """The perfect edits' W+ codes [N, num_ws, w_dim], one tensor per entry of ``edits``, or None.

    None when the set was not sampled from ``world`` at psi 1 without mixing (its codes then differ from
    the mapping of its seeds' factors), or when a group's truth does not follow from its factors alone.
    """
    from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES, factors_to_world

    if data.seeds is None:
        return None
    G = world.generator
    z_w = world.z(np.asarray(data.seeds[w_rows]))
    z_v = world.z(np.asarray(data.seeds[v_rows]))
    ws_w = torch.from_numpy(np.array(data.ws[w_rows], dtype=np.float32))
    if G.num_ws != ws_w.shape[1] or (G.mapping(z_w, None, truncation_psi=1) - ws_w).abs().amax() > 1e-3:
        return None
    p_v = factors_to_world(z_v)[0]
    out = []
    for groups in edits:
        z = z_w.clone()
        for g in groups:
            idx = [FACTOR_NAMES.index(n) for n in FACTOR_GROUPS[ORACLE_FACTOR_GROUP[g]]]
            z[:, idx] = z_v[:, idx]
        p = factors_to_world(z)[0]
        if any((params.get(p, g) - params.get(p_v, g)).abs().amax() > 1e-5 for g in groups):
            return None
        out.append(G.mapping(z, None, truncation_psi=1))
    return out
