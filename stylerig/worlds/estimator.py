"""The built-in world's fast estimator: a small CNN image -> world factors z -> face parameters p.

The analysis-by-synthesis estimator (:mod:`stylerig.worlds.estimate`, ~1.6 s per image) is too slow to
measure hundreds of edited images in a demo. This module regresses the world's 38 factors
(:data:`~stylerig.worlds.prior.FACTOR_NAMES`) from a portrait with a small convolutional network and
maps them to ``p = factors_to_world(z)[0]`` (so p always lies in the world's prior range). An optional
short analysis-by-synthesis refinement (:func:`stylerig.worlds.estimate._fit` at 64x64 from the
network's factors, one start) can follow.

Independence (issue 4): the network is trained *only* on the world's own renders
(:func:`~stylerig.worlds.scene.render_portrait` of random factors from a seeded torch RNG, with blur and
noise augmentation; :mod:`stylerig.worlds.estimator_train`) -- not on generator images, not on DFR,
not on the generator's latents.

Network (:class:`EstimatorNet`, :class:`EstimatorConfig`): a 3x3 stem (stride 2 on the full 128x128
image in the shipped network; stride 1 on a 64x64 area-downsample in the first world's), then four
stages of (3x3 stride-2 conv, 3x3 conv), each conv followed by batch norm and ReLU (64 -> 4 pixels), a
1x1 reduction, flatten (the layout keeps where things are), one hidden layer and a linear head to the 38
factors (~0.7 M parameters).

The shipped weights (:data:`ESTIMATOR_FILE`, float16 in the file, float32 in memory; seed 2 of the
recipe's defaults on prior version 2, not the critic that taught the generator) are loaded by
:func:`load_estimator`; :func:`fast_estimate_factors` / :func:`fast_estimate_params` are what
``World.estimate`` calls by default. By default the factors of each image and of its mirror image are
averaged (``mirror=True``); the refinement is off by default (10 steps cost ~0.1-0.2 s per image
and gained little on generator images).

Measured (shipped network, defaults incl. ``mirror``; held-out seeds 2 000 000 .. 2 000 063, never
training data; ``stylerig world report``, 2 threads of a shared machine): ~7 ms per image (batched).
World renders: median |error| yaw / pitch / roll 0.41 / 0.25 / 0.15 deg, expression RMSE 0.128,
illumination RMSE 0.025. Generator images: 1.38 / 0.57 / 0.55 deg, expression 0.146 (true RMS 0.285),
illumination 0.034. The yaw error on generator images is mostly the generator's (docs/world.md). It
reads every expression factor but ``eye_close`` (correlation with the truth 0.15 on renders).

**The eye specialist** (:data:`EYE_ESTIMATOR_FILE`, same shape, 1.4 MB). The lids move a few pixels, and
most seeds of the recipe learn to ignore them. Trained with ``eye_close`` weighted 4x (seed 1,
``--factor-weights eye_close=4 --answers-for eye_close``), a network reads it at 0.96 on renders and
0.86 on generator images, and loses the mouth (smile 0.01). So it is kept as a *specialist*: its file
says it answers only for ``eye_close`` (:attr:`EstimatorNet.answers_for`), and by default
:func:`fast_estimate_factors` runs both networks (:data:`SHIPPED_ESTIMATORS`, :func:`load_estimators`)
and takes ``eye_close`` from the specialist, everything else from the general network. Without it the
perfect edit's expression error ratio on the demo's set is 0.39; with it 0.32 (docs/world.md).

Example:
    >>> from stylerig.worlds.estimator import fast_estimate_params  # doctest: +SKIP
    >>> fast_estimate_params(images).shape  # images [B, 3, 128, 128] in [-1, 1]  # doctest: +SKIP
    torch.Size([B, 257])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylerig._checks import check_tensor
from stylerig.errors import AssetError, InputError
from stylerig.render import FaceRenderer
from stylerig.worlds.estimate import RESOLUTION, EstimateResult
from stylerig.worlds.prior import FACTOR_NAMES, NUM_FACTORS, factors_to_world
from stylerig.worlds.scene import render_portrait

__all__ = [
    "ESTIMATOR_FILE",
    "EYE_ESTIMATOR_FILE",
    "FORMAT",
    "MIRRORED_FACTORS",
    "SHIPPED_ESTIMATORS",
    "EstimatorConfig",
    "EstimatorNet",
    "describe_estimators",
    "fast_estimate_factors",
    "fast_estimate_params",
    "load_estimator",
    "load_estimators",
    "preprocess",
    "save_estimator",
]

#: The shipped network (:func:`save_estimator` format).
ESTIMATOR_FILE = Path(__file__).resolve().parent / "assets" / "world-estimator.safetensors"
#: The shipped eye specialist: answers only for ``eye_close``, which :data:`ESTIMATOR_FILE` cannot read.
EYE_ESTIMATOR_FILE = Path(__file__).resolve().parent / "assets" / "world-estimator-eyes.safetensors"
#: What ``fast_estimate_factors(estimator=None)`` uses: the general network, then the specialists that
#: override the factors they answer for (a specialist file that is not installed is skipped).
SHIPPED_ESTIMATORS: tuple[Path, ...] = (ESTIMATOR_FILE, EYE_ESTIMATOR_FILE)
#: ``format`` entry of the file's metadata.
FORMAT = "stylerig-world-estimator"
#: Factors whose sign flips when a portrait is mirrored left-right (the world is otherwise symmetric).
MIRRORED_FACTORS: tuple[str, ...] = ("yaw", "roll", "smile_asym", "light_azimuth", "bg_gradient_angle")
_WHAT = "stylerig world estimator"
_HINT = "reinstall stylerig, or retrain it: python -m stylerig.worlds.estimator_train --out DIR --minutes 15"


@dataclass(frozen=True)
class EstimatorConfig:
    """Shape of :class:`EstimatorNet` (stored in the weight file).

    Attributes:
        input_size: the network's input side in pixels (the 128x128 image is area-downsampled to it;
            divides 128 and is divisible by ``stem_stride * 2 ** (len(widths) - 1)``).
        stem_stride: stride of the 3x3 stem (2: a 128x128 input keeps its detail for the stem while the
            rest of the network costs what it costs at 64x64).
        widths: channels of the stem and of each stride-2 stage.
        reduce: channels of the 1x1 reduction before flattening.
        hidden: units of the hidden fully connected layer.
    """

    input_size: int = 64
    stem_stride: int = 1
    widths: tuple[int, ...] = (16, 24, 48, 96, 128)
    reduce: int = 64
    hidden: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        n = int(self.stem_stride) * 2 ** (len(self.widths) - 1)
        if (
            int(self.stem_stride) not in (1, 2)
            or len(self.widths) < 2
            or min(self.widths) < 1
            or self.input_size < n
            or self.input_size % n
            or RESOLUTION % self.input_size
        ):
            raise InputError(f"bad estimator config {self}")


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class EstimatorNet(nn.Module):
    """CNN portraits [B, 3, 128, 128] in [-1, 1] -> world factors z [B, 38] (see the module docstring).

    Args:
        config: the network's shape.
        answers_for: the factors whose outputs are meant to be read (:data:`~stylerig.worlds.prior.FACTOR_NAMES`
            names); None = all of them. A *specialist* (the shipped eye network) still outputs 38 factors,
            but was trained to read only these, and :func:`fast_estimate_factors` takes only these from it.
    """

    def __init__(
        self, config: EstimatorConfig | None = None, answers_for: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.config = config or EstimatorConfig()
        self.answers_for = check_answers_for(answers_for)
        w = self.config.widths
        layers: list[nn.Module] = [_conv(3, w[0], self.config.stem_stride)]
        for cin, cout in zip(w[:-1], w[1:], strict=True):
            layers += [_conv(cin, cout, 2), _conv(cout, cout, 1)]
        layers.append(
            nn.Sequential(
                nn.Conv2d(w[-1], self.config.reduce, 1, bias=False), nn.BatchNorm2d(self.config.reduce)
            )
        )
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # faster on CPU
        side = self.config.input_size // (self.config.stem_stride * 2 ** (len(w) - 1))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.ReLU(),
            nn.Linear(self.config.reduce * side * side, self.config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.config.hidden, NUM_FACTORS),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Factors z [B, 38] (float32, ~N(0, 1) units) of portraits [B, 3, 128, 128] (or already at
        ``input_size``) in [-1, 1]."""
        x = preprocess(images, self.config.input_size).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))


def check_answers_for(names: Sequence[str] | None) -> tuple[str, ...]:
    """The factor names a network answers for, checked, in :data:`FACTOR_NAMES` order (None -> all)."""
    if names is None:
        return FACTOR_NAMES
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in FACTOR_NAMES]
    if unknown or not names:
        what = f"no such world factor: {', '.join(unknown)}" if unknown else "no factor named"
        raise InputError(
            f"bad estimator answers_for ({what})",
            hint=f"name one or more factors of {', '.join(FACTOR_NAMES)}",
        )
    return tuple(n for n in FACTOR_NAMES if n in names)


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-downsample portraits [B, 3, H, H] in [-1, 1] to [B, 3, size, size] (no-op at H = size)."""
    if images.shape[-1] != size:
        images = F.adaptive_avg_pool2d(images, size)
    return images


def save_estimator(
    net: EstimatorNet, path: str | os.PathLike[str], extra: dict[str, str] | None = None
) -> Path:
    """Write the network's weights (float16; batch-norm counters dropped) and config to ``path``.

    Args:
        net: the network.
        path: the safetensors file (written atomically).
        extra: more string metadata (e.g. the training recipe and its measured accuracy).
    """
    from stylerig.tensorfile import save_tensors

    tensors = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    meta = {"format": FORMAT, "config": json.dumps(asdict(net.config)), **(extra or {})}
    if net.answers_for != FACTOR_NAMES:
        meta["answers_for"] = json.dumps(list(net.answers_for))
    return save_tensors(path, tensors, meta)


_CACHE: dict[str, EstimatorNet] = {}
#: What :func:`fast_estimate_factors` accepts as ``estimator``.
Estimators = EstimatorNet | str | os.PathLike[str] | Sequence[EstimatorNet | str | os.PathLike[str]] | None


def load_estimator(path: str | os.PathLike[str] | None = None, *, cache: bool = True) -> EstimatorNet:
    """Load an estimator network (eval mode, float32, CPU, no gradients).

    Args:
        path: a file written by :func:`save_estimator`; None = the shipped :data:`ESTIMATOR_FILE`.
        cache: return the same object for the same resolved path on later calls.

    Raises:
        AssetError: the file is missing, corrupt, not an estimator, or its tensors do not fit its config.
    """
    from stylerig.tensorfile import load_tensors

    p = Path(path) if path is not None else ESTIMATOR_FILE
    key = str(p.resolve())
    if cache and key in _CACHE:
        return _CACHE[key]
    tensors, meta = load_tensors(p, what=_WHAT, hint=_HINT)
    if meta.get("format") != FORMAT:
        raise AssetError(f"{p} is not a {_WHAT} (format {meta.get('format')!r})", hint=_HINT)
    try:
        cfg = EstimatorConfig(**json.loads(meta["config"]))
        answers = json.loads(meta["answers_for"]) if "answers_for" in meta else None
        if answers is not None and not isinstance(answers, list):
            raise ValueError(f"answers_for must be a list of factor names, got {answers!r}")
        net = EstimatorNet(cfg, answers)
        state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    except AssetError:
        raise
    except Exception as e:  # bad JSON, bad config, wrong shapes
        raise AssetError(f"{p} is not a valid {_WHAT} ({type(e).__name__}: {e})", hint=_HINT) from e
    if not all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point()):
        raise AssetError(f"{p} holds non-finite weights", hint=_HINT)
    net.eval().requires_grad_(False)
    if cache:
        _CACHE[key] = net
    return net


def load_estimators(
    paths: Sequence[str | os.PathLike[str]] | None = None, *, cache: bool = True
) -> tuple[EstimatorNet, ...]:
    """Load the networks that estimate together (see :func:`fast_estimate_factors`).

    Args:
        paths: estimator files, the general one first; None = :data:`SHIPPED_ESTIMATORS` (a specialist
            that is not installed is skipped; the general network must be).
        cache: as :func:`load_estimator`.

    Raises:
        AssetError: a missing (general) or bad file. InputError: the first network is a specialist.
    """
    if paths is None:
        paths = _installed_files()
    nets = tuple(load_estimator(p, cache=cache) for p in paths)
    _check_ensemble(nets)
    return nets


def _installed_files() -> list[Path]:
    """:data:`SHIPPED_ESTIMATORS` that are installed (the general network always counts: it must be)."""
    return [ESTIMATOR_FILE, *(p for p in SHIPPED_ESTIMATORS[1:] if p.is_file())]


def describe_estimators() -> list[dict[str, Any]]:
    """The installed estimator files that ``fast_estimate_factors(estimator=None)`` runs, in order: for each
    its file name, sha256 and the factors it answers for ("all" for the general network) -- what a
    measurement records about its judge."""
    from stylerig.data import file_sha256

    files = _installed_files()
    nets = load_estimators(files)
    return [
        {"file": f.name, "sha256": file_sha256(f), "answers_for": "all" if k == 0 else list(n.answers_for)}
        for k, (f, n) in enumerate(zip(files, nets, strict=True))
    ]


def _check_ensemble(nets: Sequence[EstimatorNet]) -> None:
    if not nets:
        raise InputError("no estimator network given")
    if nets[0].answers_for != FACTOR_NAMES:
        raise InputError(
            f"the first estimator network must answer for every factor; it answers only for "
            f"{', '.join(nets[0].answers_for)}",
            hint="put the general network first and the specialists after it",
        )


def _coarse_renderer(resolution: int, renderer: FaceRenderer | None) -> FaceRenderer:
    from stylerig.face import load_face_model

    if renderer is None:
        return FaceRenderer(load_face_model(), resolution, backend="torch")
    return FaceRenderer(renderer.face_model, resolution, backend="torch", camera=renderer.camera)


def fast_estimate_factors(
    images: torch.Tensor,
    *,
    estimator: Estimators = None,
    mirror: bool = True,
    refine_steps: int = 0,
    refine_lr: float = 0.01,
    refine_resolution: int = 64,
    prior_weight: float = 3e-3,
    compute_loss: bool = False,
    chunk: int = 64,
    renderer: FaceRenderer | None = None,
) -> EstimateResult:
    """World factors of portraits by the CNN (and an optional short analysis-by-synthesis refinement).

    Args:
        images: float [B, 3, 128, 128] in [-1, 1] (the world's portraits, e.g. generator output), finite.
        estimator: an :class:`EstimatorNet` or the path of one (that network alone); a sequence of them
            (the first answers for every factor, each later one -- a specialist -- overrides the factors
            it answers for, :attr:`EstimatorNet.answers_for`); None = the shipped general network and
            eye specialist (:data:`SHIPPED_ESTIMATORS`).
        mirror: average the network's factors of each image and of its mirror image (signs of
            :data:`MIRRORED_FACTORS` flipped back); twice the network's cost, lower errors.
        refine_steps: Adam steps of :func:`stylerig.worlds.estimate._fit` from the network's factors
            (one start, renders at ``refine_resolution``, lr ``refine_lr`` in z units, cosine-decayed
            to 10 %); 0 = the network alone.
        refine_lr: see ``refine_steps``.
        refine_resolution: render size of the refinement (divides 128).
        prior_weight: weight of ``mean(z^2)`` in the refinement's loss.
        compute_loss: also render the result at 128x128 and return its photometric loss
            (``mean(|d| + d^2)``); otherwise ``loss`` is NaN (saves one render per image).
        chunk: images per network / refinement batch.
        renderer: the world's 128x128 :class:`FaceRenderer` (its face model and camera are used for the
            refinement and the loss); None = the default face model.

    Returns:
        :class:`~stylerig.worlds.estimate.EstimateResult`: factors float32 [B, 38], p float32 [B, 257]
        (rotation in radians), loss float32 [B] (NaN unless ``compute_loss``); detached, on CPU.

    Raises:
        InputError: bad images or settings. AssetError: a bad estimator file.
    """
    check_tensor(
        images,
        "images",
        (None, 3, RESOLUTION, RESOLUTION),
        dtypes=(torch.float32, torch.float64),
        finite=True,
    )
    if int(refine_steps) < 0 or int(chunk) < 1:
        raise InputError(f"refine_steps must be >= 0 and chunk >= 1, got {refine_steps} and {chunk}")
    if refine_resolution < 1 or RESOLUTION % refine_resolution:
        raise InputError(f"refine_resolution must divide {RESOLUTION}, got {refine_resolution}")
    if not (math.isfinite(refine_lr) and refine_lr > 0):
        raise InputError(f"refine_lr must be positive, got {refine_lr}")
    nets = _resolve(estimator)
    x = images.detach().float().cpu()
    sign = torch.ones(NUM_FACTORS)
    sign[[FACTOR_NAMES.index(n) for n in MIRRORED_FACTORS]] = -1.0
    z = torch.empty(0)
    with torch.no_grad():
        for k, net in enumerate(nets):
            zk = torch.cat([net(c) for c in x.split(int(chunk))])
            if mirror:
                zk = 0.5 * (zk + sign * torch.cat([net(c.flip(-1)) for c in x.split(int(chunk))]))
            if k == 0:
                z = zk
            else:
                cols = [FACTOR_NAMES.index(n) for n in net.answers_for]
                z[:, cols] = zk[:, cols]
    if int(refine_steps) > 0:
        from stylerig.worlds.estimate import _fit

        coarse = _coarse_renderer(refine_resolution, renderer)
        dt = coarse.face_model.mean_shape.dtype
        parts = []
        with torch.enable_grad():
            for zc, xc in zip(z.split(int(chunk)), x.split(int(chunk)), strict=True):
                small = F.adaptive_avg_pool2d(xc, refine_resolution).to(dt)
                parts.append(_fit(zc.to(dt), small, coarse, int(refine_steps), refine_lr, prior_weight))
        z = torch.cat(parts).float()
    p = factors_to_world(z)[0]
    if compute_loss:
        if renderer is None:
            from stylerig.face import load_face_model

            renderer = FaceRenderer(load_face_model(), RESOLUTION, backend="torch")
        with torch.no_grad():
            losses = []
            for zc, xc in zip(z.split(int(chunk)), x.split(int(chunk)), strict=True):
                pc, scene = factors_to_world(zc)
                d = render_portrait(renderer, pc, scene)[0] - xc
                losses.append((d.abs() + d * d).flatten(1).mean(1))
        loss = torch.cat(losses)
    else:
        loss = torch.full((z.shape[0],), math.nan)
    return EstimateResult(factors=z, p=p, loss=loss)


def _resolve(estimator: Estimators) -> tuple[EstimatorNet, ...]:
    """The networks of ``estimator`` (see :func:`fast_estimate_factors`), checked."""
    if estimator is None:
        nets = load_estimators()
    elif isinstance(estimator, (EstimatorNet, str, os.PathLike)):
        # One network alone gives all of its outputs (a specialist's other factors included).
        nets = (estimator if isinstance(estimator, EstimatorNet) else load_estimator(estimator),)
    else:
        nets = tuple(e if isinstance(e, EstimatorNet) else load_estimator(e) for e in estimator)
        _check_ensemble(nets)
    if any(n.training for n in nets):
        raise InputError("the estimator network must be in eval mode (net.eval())")
    return nets


def fast_estimate_params(images: torch.Tensor, **kw) -> torch.Tensor:
    """Face parameters p float32 [B, 257] (rotation in radians) of portraits [B, 3, 128, 128] in [-1, 1]:
    ``fast_estimate_factors(images, **kw).p``."""
    return fast_estimate_factors(images, **kw).p
