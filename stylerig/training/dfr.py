"""The DFR recipe behind ``stylerig fit-dfr``: train F on a sample set, measure it, draw Figure 3.

Self-supervised, as in the paper (``method.md`` §2): for each batch of W+ codes ``ws`` with images ``I``
and landmarks ``L_I`` from the sample set, ``p = F(ws)`` is rendered by the differentiable
:class:`~stylerig.render.FaceRenderer` at the set's resolution and

``loss = photo_weight(step) * L_photo + land_weight * L_land + E_reg``  (:mod:`stylerig.losses`).

The set's ground-truth ``params`` (the built-in world's) are never used for training, only for the
metrics. Rows whose landmarks are missing (NaN) train on the photometric term alone.

Defaults (:class:`DFRConfig`) and why, measured on the built-in world (``stylerig sample --n 5000``,
4,500 training rows, 500 held out; numbers in ``FitDFRResult.metrics`` / ``metrics.json``):

* **a landmark-only warm-up of 1200 steps, then the photometric term on 8 random rows of each batch
  of 32** (its weight ramped up over 100 steps), the landmark term and the prior on all 32: the
  rasterizer costs ~100x more than the landmarks (which need no rasterizer), the landmarks find pose,
  shape and expression on their own, and 8 rendered rows per step for 800 steps are enough for albedo
  and light (held-out PSNR ~30 dB against a target of 26);
* **the learning rate warms up again over those 100 steps** (``photo_rewarm``): the albedo and light
  outputs get no gradient before the onset, so Adam's first steps on them are several learning rates
  long whatever the term's weight. Without it a DFR on the current world (set of 3,000) diverged at the
  onset (photometric MSE 0.04 -> 0.40) into a mirrored light (left-right SH correlation -0.85,
  illumination RMSE 0.74, 27.1 dB); with it the same set gives 0.12 and 30.6 dB;
* **the photometric term fits albedo and light only** (``photo_geometry=False``): the landmarks are
  exact on the world and the generator's images are soft, so photometric gradients on shape and pose
  are mostly noise; and a photometric term that can move the head can learn to push it out of the view
  frustum, where the term is 0 (seen: the head went 4 dm back, behind the far plane, within 100 steps);
* **Adam with decoupled weight decay 0.1**, lr 1e-3, 50 warm-up steps, cosine decay, 2000 steps: F
  overfits 4,500 codes (median yaw error 0.7 deg on training rows vs 1.45 deg held out without decay;
  1.30 held out with it). Tried and dropped: lr 2e-3 (noisier, slower); batch 64 at lr 1.5e-3 and
  photometric rows from the first step with 4 rows per step (both diverged into the degenerate
  solution above; 8 rows from the first step, without decay, trained fine: 1.48 deg yaw, 30.9 dB).

**Landmark fits** (``landmark_fit_weight``; default 0 = off; not in the paper). Before training, every
training row's identity, expression, rotation and translation are fitted to its landmarks by
:func:`stylerig.image_fit.fit_landmarks` (Levenberg–Marquardt, ~12 ms per row on one thread), and the
loss gets ``landmark_fit_weight x mean((F(w) - fit) / p_scale)^2`` over those values. The landmark term alone
trains F through a badly conditioned map: the small shape and expression components move the
landmarks by a fraction of a pixel, so their gradients are swamped by the pose's, and F reads them
shrunk and mixed (on the demo's world set: expression correlation with the truth 0.90 held out and only
0.93 on its own training rows, with half the truth's variance), although the landmarks determine them
(a linear regression from the true landmarks to the expression has R² 0.997–1.000, and the per-row fit
reaches a correlation of 0.99). The fits hand F targets in which every value counts alike. With them
F reads the expression at 0.95 held out (0.98 on training rows), but the demo's rig trained through
such an F edits no better and the light worse, so the term is off by default. The fits' prior
(``landmark_fit_prior``) is 1e-6 for exact landmarks (the world's: the prior of 1e-4 that suits F's
own landmark term shrinks the fits to 57–93 % of the truth) and 1e-3 for a detector's (its
landmarks are 1–4 px off). ``docs/rignet.md``, session 11.

Outputs in ``out_dir``: ``dfr.safetensors`` (:func:`stylerig.dfr.save_dfr`), ``metrics.json``,
``figure3.png`` (image | reconstruction | overlay with landmarks, held-out rows), ``checkpoint.safetensors``
and ``log.jsonl`` (:mod:`stylerig.training.trainer`), ``run.json``.

Metrics (:func:`evaluate_dfr`, on the held-out rows): median |rotation error| per angle in degrees and
translation / expression / illumination errors (when the set has ``params``); landmark RMSE in % of the
image width (when it has landmarks); the photometric PSNR inside the rendered face mask in [-1, 1] units
(peak-to-peak 2: ``10 log10(4 / MSE)``), mean and median over images.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig.data import SampleSet
from stylerig.dfr import DEFAULT_HIDDEN, DFR, save_dfr, ws_statistics
from stylerig.errors import InputError
from stylerig.face import MorphableModel
from stylerig.image_fit import fit_landmarks
from stylerig.losses import (
    LAND_WEIGHT,
    PRIOR_WEIGHTS,
    face_mask,
    landmark_loss,
    light_prior_loss,
    photometric_loss,
    prior_loss,
    psnr_from_mse,
    render_loss,
)
from stylerig.render import FaceRenderer
from stylerig.training.distributed import Distributed
from stylerig.training.trainer import ProgressFn, Trainer, TrainerConfig, TrainResult

__all__ = [
    "DFRConfig",
    "FitDFRResult",
    "LANDMARK_FIT_PRIOR_DETECTED",
    "LANDMARK_FIT_PRIOR_EXACT",
    "TARGETS",
    "evaluate_dfr",
    "figure3",
    "fit_dfr",
    "initial_params",
    "landmark_fit_prior",
    "predict",
    "resolve_face_model",
]

#: The issue's targets on the built-in world (metric -> (comparison, threshold)).
TARGETS: dict[str, tuple[str, float]] = {
    "rotation_median_deg_yaw": ("<=", 1.5),
    "rotation_median_deg_pitch": ("<=", 1.5),
    "rotation_median_deg_roll": ("<=", 1.5),
    "landmark_rmse_pct": ("<=", 1.5),
    "psnr_mask_db": (">=", 26.0),
}


#: Share of a DFR run's steps before the photometric term starts (:attr:`DFRConfig.landmark_steps`).
LANDMARK_FRACTION = 0.6


@dataclass
class DFRConfig:
    """Settings of a DFR run (defaults: the ones that meet the issue's targets on the built-in world).

    The trainer's settings are ``steps``, ``batch``, ``lr``, ``warmup``, ``schedule``, ``weight_decay``,
    ``seed`` and the ``*_every`` intervals (see :class:`~stylerig.training.TrainerConfig`).
    """

    steps: int = 2000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    schedule: str = "cosine"
    weight_decay: float = 0.1
    seed: int = 0
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    land_weight: float = LAND_WEIGHT
    prior_weights: dict[str, float] = field(default_factory=lambda: dict(PRIOR_WEIGHTS))
    # First steps without the photometric term (landmarks + prior only). None: 60 % of ``steps`` (1,200 of
    # the default 2,000), so that the term starts at the same point of the cosine schedule whatever the
    # length: with a fixed 1,200 a 6,000-step run started it at 90 % of the peak learning rate and
    # diverged into a mirrored light (illumination RMSE 0.75, 25.8 dB, on the world's renders).
    landmark_steps: int | None = None
    photo_rows: int = 8  # rows of each batch that are rendered for the photometric term (0 = all)
    photo_ramp: int = 100  # steps over which the photometric weight rises from 0 to 1 (0 = at once)
    # ... and the learning rate too (TrainerConfig.rewarm): Adam ignores the weight's ramp, and without
    # this a DFR on the 2026-11-26 world diverged at the onset into a mirrored light (illumination RMSE 0.74).
    photo_rewarm: bool = True
    photo_geometry: bool = False  # let the photometric term move shape, expression and pose too
    # The light model (stylerig.dfr, "Light model"; not in the paper): "auto" = the built-in world's light
    # statistics for a set sampled from the world, none otherwise; "world"; "none" (27 free SH
    # coefficients); or the path of an .npz with mean [27] and cov [27, 27] (stylerig.dfr.read_light_statistics).
    light_prior: str = "auto"
    light_dims: int = 4  # principal directions of the light prior the light is confined to
    # A Gaussian prior on the light inside that model (stylerig.losses.light_prior_loss; not in the paper),
    # per squared sd of the light prior along each direction, like prior_weights. 0 = off.
    light_prior_weight: float = 0.0
    # The coefficient model (stylerig.dfr, "Coefficient model"; not in the paper): these coefficient groups
    # (some of identity, expression, reflectance) are confined to the components the built-in world's faces
    # use (stylerig.worlds.prior.used_coefficients); only for a set sampled from the world. () = off.
    confine: tuple[str, ...] = ()
    # Landmark-fit targets (not in the paper; module docstring, "Landmark fits"): weight of the term that
    # pulls F's shape, expression and pose towards a per-image least-squares fit to the row's landmarks
    # (stylerig.image_fit.fit_landmarks), in F's output units. 0 = off (the paper's DFR).
    landmark_fit_weight: float = 0.0
    # The prior weight of those fits (identity and expression, per squared sd); None = auto: 1e-6 for a
    # set whose landmarks are exact (the built-in world's ground truth), 1e-3 for a detector's.
    landmark_fit_prior: float | None = None
    grad_clip: float = 0.0  # max gradient norm (0 = no clipping)
    val_fraction: float = 0.1  # held-out share of the set (500 of 5000 rows)
    val_every: int = 250  # intermediate validation on val_rows_quick held-out rows
    val_rows_quick: int = 64
    log_every: int = 25
    checkpoint_every: int = 500
    grid_rows: int = 8  # rows of figure3.png

    @property
    def photo_start(self) -> int:
        """The step at which the photometric term starts: ``landmark_steps``, or 60 % of ``steps``."""
        if self.landmark_steps is not None:
            return int(self.landmark_steps)
        return round(LANDMARK_FRACTION * self.steps)

    def trainer_config(self) -> TrainerConfig:
        return TrainerConfig(
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            seed=self.seed,
            warmup=self.warmup,
            rewarm_at=self.photo_start if self.photo_rewarm else 0,
            rewarm=self.photo_ramp if self.photo_rewarm else 0,
            schedule=self.schedule,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            log_every=self.log_every,
            val_every=self.val_every,
            checkpoint_every=self.checkpoint_every,
        )

    def task_config(self) -> dict[str, Any]:
        """The settings a resume must keep (the trainer keeps its own)."""
        d = asdict(self)
        return {
            k: d[k]
            for k in (
                "hidden",
                "land_weight",
                "prior_weights",
                "landmark_steps",
                "photo_rows",
                "photo_ramp",
                "photo_geometry",
                "light_prior_weight",
                "confine",
                "landmark_fit_weight",
                "landmark_fit_prior",
                "val_fraction",
                "val_rows_quick",
            )
        } | {
            "hidden": list(self.hidden),
            "landmark_steps": self.photo_start,  # resolved: old runs match
            "confine": list(self.confine),
        }

    def check(self) -> None:
        """Refuse settings that cannot work, before anything is written (InputError)."""
        n = params.SIZES["illumination"]
        if (
            not isinstance(self.light_dims, int)
            or isinstance(self.light_dims, bool)
            or not 1 <= self.light_dims <= n
        ):
            raise InputError(f"light_dims must be an integer in 1..{n}, got {self.light_dims!r}")
        if not str(self.light_prior).strip():
            raise InputError("light_prior must be auto, world, none or the path of an .npz")
        if not math.isfinite(self.light_prior_weight) or self.light_prior_weight < 0:
            raise InputError(f"light_prior_weight must be >= 0, got {self.light_prior_weight}")
        from stylerig.worlds.prior import COEFFICIENT_GROUPS

        bad = [g for g in self.confine if g not in COEFFICIENT_GROUPS]
        if bad or len(set(self.confine)) != len(self.confine):
            raise InputError(
                f"confine takes distinct coefficient groups, got {', '.join(self.confine)}",
                hint=f"use some of {', '.join(COEFFICIENT_GROUPS)}",
            )
        if not math.isfinite(self.landmark_fit_weight) or self.landmark_fit_weight < 0:
            raise InputError(f"landmark_fit_weight must be >= 0, got {self.landmark_fit_weight}")
        prior = self.landmark_fit_prior
        if prior is not None and (not math.isfinite(prior) or prior <= 0):
            raise InputError(f"landmark_fit_prior must be > 0 (or None: auto), got {prior}")


#: :attr:`DFRConfig.landmark_fit_prior` under ``None`` (auto): for exact landmarks / for a detector's.
LANDMARK_FIT_PRIOR_EXACT, LANDMARK_FIT_PRIOR_DETECTED = 1e-6, 1e-3


def landmark_fit_prior(cfg: DFRConfig, data: SampleSet) -> float:
    """The prior weight of the landmark fits (:attr:`DFRConfig.landmark_fit_prior`, or auto).

    Auto: :data:`LANDMARK_FIT_PRIOR_EXACT` when the set's manifest says its landmarks are ground truth
    (``landmark_detector`` ``ground-truth:...``, the built-in world), else
    :data:`LANDMARK_FIT_PRIOR_DETECTED` (a detector's landmarks are 1–4 px off: a weak prior would fit
    their noise with shape and expression).
    """
    if cfg.landmark_fit_prior is not None:
        return float(cfg.landmark_fit_prior)
    source = str(data.manifest.get("landmark_detector") or "")
    return LANDMARK_FIT_PRIOR_EXACT if source.startswith("ground-truth") else LANDMARK_FIT_PRIOR_DETECTED


def sampled_from_world(data: SampleSet) -> bool:
    """Whether the set's manifest says it was sampled from the built-in world (the light model's
    ``auto`` and ``--confine`` use the world's statistics only then)."""
    gen = data.manifest.get("generator") or {}
    return isinstance(gen, Mapping) and bool(gen.get("world"))


def resolve_light_model(
    cfg: DFRConfig, data: SampleSet
) -> tuple[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """The light model a DFR run uses (:attr:`DFRConfig.light_prior`).

    Returns:
        (label, model): label recorded with the run (``none``, ``world:v<prior version>:k<dims>`` or
        ``file:<sha256 prefix>:k<dims>``) and (mean float32 [27], basis float32 [27, k], the prior's sd
        along each direction float32 [k]) or None.

    Raises:
        AssetError: an unreadable light prior file.
    """
    from stylerig.dfr import light_model, light_spread, read_light_statistics

    def model(mean: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, basis = light_model(mean, cov, cfg.light_dims)
        return m, basis, light_spread(cov, basis)

    choice = str(cfg.light_prior).strip()
    if choice == "auto":
        choice = "world" if sampled_from_world(data) else "none"
    if choice == "none":
        return "none", None
    if choice == "world":
        from stylerig.worlds.prior import PRIOR_VERSION, light_statistics

        mean, cov = light_statistics(PRIOR_VERSION)
        return f"world:v{PRIOR_VERSION}:k{cfg.light_dims}", model(mean, cov)
    from stylerig.data import file_sha256

    mean, cov = read_light_statistics(choice)
    label = f"file:{file_sha256(Path(choice))[:16]}:k{cfg.light_dims}"
    return label, model(mean, cov)


@dataclass(frozen=True)
class FitDFRResult:
    """What :func:`fit_dfr` did.

    Attributes:
        out_dir: the output folder. dfr_path: the saved network (None when interrupted).
        train: the trainer's :class:`~stylerig.training.TrainResult`.
        metrics: held-out metrics (empty when interrupted); see :func:`evaluate_dfr`.
        notes: things a person should know. rank: this process's rank (only rank 0 writes files).
        seconds: wall time of the whole call.
    """

    out_dir: Path
    dfr_path: Path | None
    train: TrainResult
    metrics: dict[str, Any]
    notes: tuple[str, ...]
    rank: int
    seconds: float


# ----------------------------------------------------------------------------------------------------
# Face model and initial parameters.


def resolve_face_model(
    data: SampleSet, face_model: str | os.PathLike[str] | MorphableModel | None
) -> tuple[MorphableModel, str]:
    """The face model to fit: the given one, else the built-in world's (the procedural model).

    Returns:
        (model, note): the note says which model was chosen and why (empty when one was given).
    """
    from stylerig.face import load_face_model

    if isinstance(face_model, MorphableModel):
        return face_model, ""
    if face_model is not None:
        return load_face_model(face_model), ""
    gen = data.manifest.get("generator") or {}
    if isinstance(gen, Mapping) and gen.get("world"):
        from stylerig.worlds import load_world

        # A copy: the trainers move their renderer (and its face model) to the training device in
        # place, and the world's model is shared by every load_world() caller on the CPU.
        return copy.deepcopy(load_world().face_model), ""
    return load_face_model(None), (
        "the set does not come from the built-in world and no --face-model was given: fitting the "
        "built-in procedural face model"
    )


def initial_params(renderer: FaceRenderer, mean_landmarks: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """The mean face, frontal, default light, at the translation that best fits ``mean_landmarks``.

    Args:
        renderer: the renderer (its face model and camera).
        mean_landmarks: float [68, 2] pixels, the mean of the training set's landmarks.
        iters: L-BFGS iterations on the 3 translation values.

    Returns:
        p float32 [257] on the CPU: zeros except the translation (decimetres).
    """
    dev, dt = renderer.face_model.mean_shape.device, renderer.face_model.mean_shape.dtype
    target = mean_landmarks.to(dev, dt)[None]
    t = torch.zeros(1, 3, device=dev, dtype=dt, requires_grad=True)
    opt = torch.optim.LBFGS([t], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        p = params.concat(translation=t)
        loss = landmark_loss(renderer.landmarks(p), target, renderer.resolution[1]).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return params.concat(translation=t.detach()).cpu().float()[0]


# ----------------------------------------------------------------------------------------------------
# Batches.


class _Batches:
    """Rows of a sample set as tensors on a device."""

    def __init__(self, data: SampleSet, device: torch.device) -> None:
        self.data, self.device = data, device

    def ws(self, rows: np.ndarray) -> torch.Tensor:
        """float32 [b, num_ws, w_dim]."""
        return torch.from_numpy(np.asarray(self.data.ws[rows], dtype=np.float32)).to(self.device)

    def images(self, rows: np.ndarray) -> torch.Tensor:
        """float32 [b, 3, R, R] in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(self.data.images[rows])).to(self.device)
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def landmarks(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(float32 [b, 68, 2] pixels with NaN rows zeroed, bool [b] valid) or None without landmarks."""
        if self.data.landmarks is None:
            return None
        lm = torch.from_numpy(np.asarray(self.data.landmarks[rows], dtype=np.float32)).to(self.device)
        ok = torch.isfinite(lm).flatten(1).all(1)
        return torch.where(ok[:, None, None], lm, 0.0), ok

    def params(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(float32 [b, 257] with NaN rows zeroed, bool [b] valid) or None without params."""
        if self.data.params is None:
            return None
        p = torch.from_numpy(np.asarray(self.data.params[rows], dtype=np.float32)).to(self.device)
        ok = torch.isfinite(p).all(1)
        return torch.where(ok[:, None], p, 0.0), ok


class _DFRTask:
    """The :class:`~stylerig.training.TrainTask` of DFR."""

    def __init__(
        self,
        batches: _Batches,
        renderer: FaceRenderer,
        cfg: DFRConfig,
        val_rows: np.ndarray,
        world_size: int,
        fit_labels: torch.Tensor | None = None,
        p_scale: torch.Tensor | None = None,
        light: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.batches, self.renderer, self.cfg = batches, renderer, cfg
        #: (mean, basis, spread) of the light prior term (DFRConfig.light_prior_weight > 0), or None.
        self.light = None if light is None else tuple(t.to(batches.device) for t in light)
        #: float [N, 257] per-row landmark fits (NaN rows: none), on the device; or None (term off).
        self.fit_labels = None if fit_labels is None else fit_labels.to(batches.device)
        if fit_labels is not None and p_scale is None:
            raise ValueError("landmark-fit targets need F's output scale p_scale")
        self.p_scale = None if p_scale is None else p_scale.to(batches.device)
        local = cfg.batch // world_size
        #: bool [257]: the values the landmarks fit (shape, expression, pose), see DFRConfig.photo_geometry.
        self.geometry = torch.zeros(params.NUM_PARAMS, dtype=torch.bool, device=batches.device)
        for g in ("identity", "expression", "rotation", "translation"):
            self.geometry[params.LAYOUT[g]] = True
        self.photo_rows = min(max(cfg.photo_rows // world_size, 1), local) if cfg.photo_rows else local
        self.val_rows = val_rows[: cfg.val_rows_quick]

    def loss(
        self, model: torch.nn.Module, rows: np.ndarray, step: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, b = self.cfg, self.batches
        p = model(b.ws(rows))
        target_lm, ok = b.landmarks(rows)  # type: ignore[misc]  (fit_dfr requires landmarks)
        land = render_loss(self.renderer, p, None, target_lm, land_weight=cfg.land_weight).land
        land = torch.where(ok, land, 0.0)  # rows without landmarks: photometric term only
        reg = prior_loss(p, cfg.prior_weights)
        if self.light is not None and cfg.light_prior_weight > 0:
            reg = reg + cfg.light_prior_weight * light_prior_loss(p, *self.light)
        loss = cfg.land_weight * land.mean() + reg.mean()
        n_ok = max(int(ok.sum()), 1)
        parts = {
            "land_rmse_pct": 100.0 * math.sqrt(float(land.detach().sum()) / n_ok),
            "prior": float(reg.detach().mean()),
        }
        if self.fit_labels is not None:  # set by fit_dfr only when landmark_fit_weight > 0
            target = self.fit_labels[torch.as_tensor(rows, device=self.fit_labels.device)]
            has = torch.isfinite(target).all(1)
            err = ((p - torch.where(has[:, None], target, p.detach())) / self.p_scale)[:, self.geometry]
            fit = err.square().mean(1)  # [b], F's output units (1 = one output scale per value)
            loss = loss + cfg.landmark_fit_weight * fit.mean()
            parts["fit_mse"] = float(fit.detach().sum()) / max(int(has.sum()), 1)
        if step >= cfg.photo_start:  # the photometric term, on the first photo_rows rows (random ones)
            k = self.photo_rows
            pk = p[:k] if cfg.photo_geometry else torch.where(self.geometry, p[:k].detach(), p[:k])
            photo = render_loss(self.renderer, pk, b.images(rows[:k]), None).photo
            ramp = min((step - cfg.photo_start + 1) / max(cfg.photo_ramp, 1), 1.0)
            loss = loss + ramp * photo.mean()
            parts["photo_mse"] = float(photo.detach().mean())
        return loss, parts

    def validate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        m = evaluate_dfr(model, self.batches.data, self.val_rows, self.renderer, device=self.batches.device)
        return {k: v for k, v in m.items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------------------------------
# Metrics and the figure.


@torch.no_grad()
def predict(
    model: torch.nn.Module, data: SampleSet, rows: np.ndarray, device: torch.device, chunk: int = 256
) -> torch.Tensor:
    """F's parameters for ``rows`` of ``data``: float32 [len(rows), 257] on ``device``."""
    b = _Batches(data, device)
    return torch.cat([model(b.ws(rows[i : i + chunk])) for i in range(0, len(rows), chunk)])


@torch.no_grad()
def evaluate_dfr(
    model: torch.nn.Module,
    data: SampleSet,
    rows: np.ndarray,
    renderer: FaceRenderer,
    *,
    device: torch.device | str = "cpu",
    chunk: int = 32,
) -> dict[str, Any]:
    """Held-out metrics of F on ``rows`` of ``data``.

    Args:
        model: F (:class:`~stylerig.dfr.DFR`), on ``device``.
        data: the sample set. rows: int64 [n] row indices (the validation split).
        renderer: a renderer of the fitted face model at the set's resolution, on ``device``.

    Returns:
        a dict of floats (and counts): ``n``; ``psnr_mask_db`` (mean over images of the PSNR inside the
        rendered face mask, [-1, 1] units, peak-to-peak 2; 0 dB for an image whose face mask is empty),
        ``psnr_mask_db_median``, ``n_empty_mask``; with landmarks:
        ``landmark_rmse_pct`` (root of the mean squared distance over every point of every image, in %
        of the width) and ``landmark_rmse_pct_median`` (median of the per-image RMSE), ``n_landmarks``;
        with ground-truth params: ``rotation_median_deg_{yaw,pitch,roll}``,
        ``rotation_p90_deg_{yaw,pitch,roll}``, ``translation_rmse_dm``, ``expression_rmse``,
        ``illumination_rmse``, ``n_params`` (rows with finite truth).
    """
    device = torch.device(device)
    rows = np.asarray(rows, dtype=np.int64)
    b = _Batches(data, device)
    H, W = renderer.resolution
    p_all = predict(model, data, rows, device)
    mses, areas, lm_se, lm_ok = [], [], [], []
    for i in range(0, len(rows), chunk):
        r = rows[i : i + chunk]
        p = p_all[i : i + chunk]
        out = renderer(p)
        m = face_mask(out)
        mses.append(photometric_loss(out.image, b.images(r), m))
        areas.append(m.flatten(1).sum(1))
        lm = b.landmarks(r)
        if lm is not None:
            lm_se.append((out.landmarks - lm[0]).square().sum(-1).mean(-1) / W**2)  # [b]
            lm_ok.append(lm[1])
    mse = torch.cat(mses)
    empty = torch.cat(areas) == 0
    psnr = torch.where(empty, 0.0, psnr_from_mse(mse))  # no face drawn: a failed reconstruction, 0 dB
    metrics: dict[str, Any] = {
        "n": len(rows),
        "psnr_mask_db": float(psnr.mean()),
        "psnr_mask_db_median": float(psnr.median()),
        "n_empty_mask": int(empty.sum()),
    }
    if lm_se:
        se, ok = torch.cat(lm_se), torch.cat(lm_ok)
        if bool(ok.any()):
            metrics["landmark_rmse_pct"] = 100.0 * float(se[ok].mean().sqrt())
            metrics["landmark_rmse_pct_median"] = 100.0 * float(se[ok].sqrt().median())
        metrics["n_landmarks"] = int(ok.sum())
    truth = b.params(rows)
    if truth is not None:
        true_p, ok = truth
        metrics["n_params"] = int(ok.sum())
        if bool(ok.any()):
            pt, pp = true_p[ok], p_all[ok]
            err = (params.get(pp, "rotation") - params.get(pt, "rotation")).abs() * (180.0 / math.pi)
            for j, name in enumerate(params.ROTATION_NAMES):
                metrics[f"rotation_median_deg_{name}"] = float(err[:, j].median())
                metrics[f"rotation_p90_deg_{name}"] = float(err[:, j].quantile(0.9))
            for g, key in (
                ("translation", "translation_rmse_dm"),
                ("expression", "expression_rmse"),
                ("illumination", "illumination_rmse"),
            ):
                metrics[key] = float((params.get(pp, g) - params.get(pt, g)).square().mean().sqrt())
    return metrics


def _dots(img: np.ndarray, pts: np.ndarray, color: Sequence[int], scale: int) -> None:
    """Draw 3x3-pixel dots at ``pts`` [K, 2] (pixels of the unscaled image) into ``img`` in place."""
    h, w = img.shape[:2]
    for x, y in np.asarray(pts, dtype=np.float64):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = int(x * scale), int(y * scale)
        img[max(cy - 1, 0) : min(cy + 2, h), max(cx - 1, 0) : min(cx + 2, w)] = color


@torch.no_grad()
def figure3(
    model: torch.nn.Module,
    data: SampleSet,
    rows: np.ndarray,
    renderer: FaceRenderer,
    device: torch.device | str = "cpu",
    scale: int = 2,
) -> np.ndarray:
    """A grid like the paper's Figure 3: per row, image | reconstruction | overlay with landmarks.

    The reconstruction is the render of F's parameters composited over the image; the overlay blends
    the two half and half and marks the set's landmarks (green) and F's (red).

    Returns:
        uint8 [H, W, 3] (labelled with :func:`stylerig.viz.labelled_grid`).
    """
    from stylerig.viz import labelled_grid, to_uint8

    device = torch.device(device)
    b = _Batches(data, device)
    rows = np.asarray(rows, dtype=np.int64)
    p = predict(model, data, rows, device)
    images = b.images(rows)
    out = renderer(p, background=images)
    blend = 0.5 * (images + out.image)
    up = lambda x: torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")  # noqa: E731
    img_u8, rec_u8, ov_u8 = to_uint8(up(images)), to_uint8(up(out.image)), to_uint8(up(blend))
    lm = b.landmarks(rows)
    cells = []
    for i in range(len(rows)):
        ov = ov_u8[i].copy()
        if lm is not None and bool(lm[1][i]):
            _dots(ov, lm[0][i].cpu().numpy(), (40, 230, 40), scale)
        _dots(ov, out.landmarks[i].cpu().numpy(), (240, 40, 40), scale)
        cells.append([img_u8[i], rec_u8[i], ov])
    seeds = data.seeds
    return labelled_grid(
        cells,
        [f"seed {int(seeds[r])}" for r in rows],
        ["image", "reconstruction", "overlay (green: set, red: F)"],
        label_width=90,
    )


# ----------------------------------------------------------------------------------------------------
# The recipe.


def fit_dfr(
    data: str | os.PathLike[str] | SampleSet,
    out_dir: str | os.PathLike[str],
    *,
    config: DFRConfig | None = None,
    device: str | torch.device = "auto",
    renderer_backend: str = "auto",
    face_model: str | os.PathLike[str] | MorphableModel | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> FitDFRResult:
    """Train DFR on a sample set and measure it (see the module docstring); torchrun-aware.

    Args:
        data: the sample set folder (written by ``stylerig sample``; needs ``landmarks.npy``) or a
            :class:`~stylerig.data.SampleSet`.
        out_dir: the output folder.
        config: :class:`DFRConfig` (defaults when None).
        device: 'auto' | 'cpu' | 'cuda' | 'cuda:N' (under torchrun, 'cuda' = cuda:LOCAL_RANK).
        renderer_backend: the rasterizer, 'auto' | 'torch' | 'nvdiffrast'.
        face_model: a face model spec (:func:`~stylerig.face.load_face_model`) or model; default: the
            built-in world's procedural model.
        resume: continue from ``out_dir/checkpoint.safetensors`` when present.
        progress: rank-0 progress callback (:class:`~stylerig.training.RichProgress`).
        arguments: what to record as the command's arguments in ``run.json``.

    Returns:
        :class:`FitDFRResult` (metrics on rank 0; other ranks get an empty dict).

    Raises:
        AssetError: a missing or damaged sample set, face model or checkpoint. InputError: bad settings,
            a set without landmarks, or a checkpoint written with other settings.
        BackendUnavailableError: the device or renderer backend is not available.
    """
    from stylerig.devices import resolve_device
    from stylerig.outputs import claim_output_dir, save_png, write_json, write_run_json

    t_start = time.perf_counter()
    cfg = config or DFRConfig()
    cfg.trainer_config().check()
    cfg.check()
    out = claim_output_dir(out_dir, "fit-dfr")
    dataset = data if isinstance(data, SampleSet) else SampleSet(data)
    if dataset.landmarks is None:
        raise InputError(
            f"the sample set {dataset.root} has no landmarks.npy (DFR's landmark term needs them)",
            hint="write the set with `stylerig sample --landmarks auto` (the built-in world gives exact ones)",
        )
    dist = Distributed(resolve_device(device))
    try:
        notes: list[str] = []
        fm, note = resolve_face_model(dataset, face_model)
        if note:
            notes.append(note)
        R = dataset.resolution
        renderer = FaceRenderer(fm, R, backend=renderer_backend).to(dist.device)  # type: ignore[arg-type]
        train_rows, val_rows = dataset.split(cfg.val_fraction, seed=cfg.seed)
        if len(val_rows) == 0:
            raise InputError(
                "the held-out split is empty", hint="use a val_fraction > 0 and a set of 2+ rows"
            )
        lms = np.asarray(dataset.landmarks[train_rows], dtype=np.float32)
        finite = np.isfinite(lms).reshape(len(lms), -1).all(1)
        if not finite.any():
            raise InputError(
                f"no training row of {dataset.root} has landmarks (all NaN)",
                hint="sample the set unmixed (--mix-max 1) or with a landmark detector",
            )
        if not finite.all():
            notes.append(
                f"{int((~finite).sum())} of {len(finite)} training rows have no landmarks (NaN): "
                "they train on the photometric term alone"
            )
        # Network: input statistics from the training codes, output init at the mean face.
        ws_train = torch.from_numpy(np.asarray(dataset.ws[train_rows], dtype=np.float32))
        w_mean, w_std = ws_statistics(ws_train)
        del ws_train
        cpu_renderer = FaceRenderer(fm, R, backend="torch")
        p_init = initial_params(cpu_renderer, torch.from_numpy(lms[finite].mean(0)))
        light_label, light = resolve_light_model(cfg, dataset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = DFR(
                dataset.num_ws,
                dataset.w_dim,
                cfg.hidden,
                w_mean=w_mean,
                w_std=w_std,
                p_init=p_init,
                light_dims=0 if light is None else cfg.light_dims,
                confined=bool(cfg.confine),
            )
        if cfg.confine:
            if not sampled_from_world(dataset):
                raise InputError(
                    "--confine holds the components the built-in world's faces never use, and this set was "
                    "not sampled from the world",
                    hint="leave out --confine (every coefficient free, as in the paper)",
                )
            from stylerig.worlds.prior import used_coefficients

            keep = used_coefficients(cfg.confine)
            model.set_confinement(keep)
            notes.append(
                f"{', '.join(cfg.confine)} confined to the components the world's faces use "
                + ", ".join(
                    f"({int(keep[params.LAYOUT[g]].sum())} of {params.SIZES[g]})" for g in cfg.confine
                )
                + "; --confine none: every coefficient free, as in the paper"
            )
        if cfg.light_prior_weight > 0 and light is None:
            raise InputError(
                "--light-prior-weight needs a light model, and this run has none",
                hint="use --light-prior world (the built-in world's) or FILE.npz, or --light-prior-weight 0",
            )
        if light is not None:
            model.set_light_model(light[0], light[1])
            source = (
                "the built-in world's light statistics"
                if light_label.startswith("world")
                else cfg.light_prior
            )
            notes.append(
                f"the light is confined to the top {cfg.light_dims} principal directions of {source} "
                "(--light-prior none: 27 free SH coefficients, as in the paper)"
                + (
                    f", with a Gaussian prior of weight {cfg.light_prior_weight:g} along them"
                    if cfg.light_prior_weight > 0
                    else ""
                )
            )
        fit_labels = None
        if cfg.landmark_fit_weight > 0:
            prior = landmark_fit_prior(cfg, dataset)
            t0 = time.perf_counter()
            fits = fit_landmarks(cpu_renderer, torch.from_numpy(lms), prior_weight=prior)
            fit_labels = torch.full((len(dataset), params.NUM_PARAMS), float("nan"))
            fit_labels[torch.from_numpy(train_rows)] = fits
            notes.append(
                f"F's shape, expression and pose are also pulled towards least-squares fits to each training "
                f"row's landmarks (weight {cfg.landmark_fit_weight:g}, fit prior {prior:g}; {int(finite.sum())} "
                f"rows fitted in {time.perf_counter() - t0:.0f} s; --landmark-fit-weight 0: the paper's DFR)"
            )
        batches = _Batches(dataset, dist.device)
        task = _DFRTask(
            batches,
            renderer,
            cfg,
            val_rows,
            dist.world_size,
            fit_labels=fit_labels,
            p_scale=model.p_scale,
            light=light if cfg.light_prior_weight > 0 else None,
        )
        run_config = cfg.task_config() | {
            "data": str(dataset.root.resolve()),
            "n": len(dataset),
            "face_model": fm.name,
            "light_model": light_label,
        }
        trainer = Trainer(
            model,
            task,
            train_rows,
            cfg.trainer_config(),
            out,
            dist=dist,
            run_config=run_config,
            # checkpoints from before the light model and the landmark fits
            added_task_keys={
                "light_model": "none",
                "landmark_fit_weight": 0.0,
                "landmark_fit_prior": None,
                "light_prior_weight": 0.0,
                "confine": [],
            },
        )
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_run_json(
                out,
                "fit-dfr",
                dict(arguments or {})
                | {"config": asdict(cfg) | {"photo_start": cfg.photo_start}, "world_size": dist.world_size},
                seed=cfg.seed,
                assets={
                    "sample_set": {
                        "path": str(dataset.root.resolve()),
                        "generator": dataset.manifest.get("generator"),
                    },
                    "face_model": {"name": fm.name, "source": fm.source, "licence": fm.licence},
                },
            )
        result = trainer.fit(resume=resume, progress=progress)
        notes.extend(result.notes)
        metrics: dict[str, Any] = {}
        dfr_path: Path | None = None
        if dist.is_main and not result.interrupted:
            model.eval()
            dfr_path = save_dfr(
                model,
                out / "dfr.safetensors",
                metadata={
                    "face_model": {"name": fm.name, "source": fm.source, "licence": fm.licence},
                    "resolution": R,
                    "sample_set": str(dataset.root.resolve()),
                    "steps": result.step,
                    # The rows it trained on: `stylerig evaluate` notes when it measures some of them.
                    "split": {"seed": cfg.seed, "val_fraction": cfg.val_fraction},
                },
            )
            metrics = evaluate_dfr(model, dataset, val_rows, renderer, device=dist.device)
            metrics["steps"] = result.step
            metrics["train_seconds"] = round(result.elapsed_s, 2)
            gen = dataset.manifest.get("generator") or {}
            if isinstance(gen, Mapping) and gen.get("world"):
                # A target whose metric the set cannot give (no params.npy: no pose truth) is not
                # measured, rather than missed.
                metrics["targets"] = {
                    k: {
                        "target": f"{op} {v}",
                        "measured": k in metrics,
                        "met": bool(k in metrics and (metrics[k] <= v if op == "<=" else metrics[k] >= v)),
                    }
                    for k, (op, v) in TARGETS.items()
                }
            write_json(out / "metrics.json", metrics)
            grid_rows = val_rows[: cfg.grid_rows]
            save_png(out / "figure3.png", figure3(model, dataset, grid_rows, renderer, dist.device))
        dist.barrier()
        return FitDFRResult(
            out_dir=out,
            dfr_path=dfr_path,
            train=result,
            metrics=metrics,
            notes=tuple(notes),
            rank=dist.rank,
            seconds=time.perf_counter() - t_start,
        )
    finally:
        dist.close()
