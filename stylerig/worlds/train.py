"""Regression recipe that teaches a StyleGAN2 generator the built-in world (groundwork for issue 4).

The generator is the project's :class:`~stylerig.gan.Generator` (NVIDIA parameter names) at 128x128,
w_dim 512, 12 ws, with ``z_dim = NUM_FACTORS``: every z dimension is one world factor
(:mod:`stylerig.worlds.prior`). Each step draws a fresh batch of factor vectors from a seeded torch RNG,
renders their portraits (:func:`stylerig.worlds.scene.render_portrait`) and regresses
``G(z, noise_mode="const")`` onto them with ``L1 + L2`` (pixels weighted ``1 + face_weight * face mask +
feature_weight * feature map``, see :func:`feature_map`), Adam.

Optional **critic** (an imitative loss, as DiscoFaceGAN trains its generator with a face-reconstruction
network): a frozen world estimator (:class:`~stylerig.worlds.estimator.EstimatorNet` file, trained only
on renders) reads the generated images, and ``critic_weight * mean((critic(G(z)) - z)^2)`` over the
factors of ``critic_groups`` (names of :data:`~stylerig.worlds.prior.FACTOR_GROUPS` or single factors;
factors the prior version ignores are left out) pulls what the
generator *shows* towards its factors. Pixel losses give a 1-degree pose error or a 2-pixel mouth corner
almost no weight; the critic weighs them in the units of the factor. The critic must not be the network
that later measures the world (``world.estimate``): a generator taught by one estimator is measured by
another, and by the renderer-based fit, so that it cannot pass by drawing what fools one network.

Optional **pose pairs** (``pair_weight > 0``): each batch is drawn as pairs, a portrait and the same
portrait with its pose factors moved a little (:func:`pose_pairs`), and ``pair_weight`` times an
``L1 + L2`` loss on the difference between the generator's change within each pair and the targets'
change (:func:`_pair_loss`) is added. An error the generator makes on both images of a pair (its blur of
that face) cancels in the difference; what is left is how the image moves when only the head turns,
which is what a pose estimate reads. It is aimed at the world generator's per-face pose error (each face
turns at its own rate, about 13 % too much or too little). Measured (docs/world.md, session 17): 800
warm-started steps with ``pair_weight`` 2 did not narrow that spread; the shipped recipe does not use it.
Session 18 found the spread's cause, which no loss could reach: the scale of z (next paragraph).

**The scale of z** (``normalize_z``). StyleGAN2's mapping network divides z by its root mean square
first, so a generator that does so never sees ``|z|``, while the world's truth ``factors_to_world(z)``
depends on it: a face whose 38 factors have a large norm has a larger yaw, smile and light than the
generator can know. It can only draw the expected pose given the direction of z, which puts every
parameter off by the factor ``|z| / sqrt(38)`` (sd 0.114): each face turns about 12 % too much or too
little, the "per-face gain" of docs/world.md. ``normalize_z=False`` (``--no-normalize-z``; the TensorFlow
StyleGAN2's ``normalize_latents``) feeds z as it is. The setting is part of the network, so a resume must
keep it, but a warm start (``init``) may switch it off: the weights are the same, and a generator trained
with normalisation, given the raw z, already draws each face nearer its truth (docs/world.md, "the scale
of z").

Outputs in ``out_dir``: ``checkpoint.safetensors`` (generator + Adam state + step + RNG state + elapsed
time; resumed exactly), ``log.jsonl`` (one line per evaluation: held-out PSNR inside the face mask and
over the whole image, in [-1, 1] units with peak-to-peak 2, mean over :data:`HELD_OUT` seeds),
``generator.safetensors`` (:func:`stylerig.gan.save_generator`, written with every checkpoint) and
``run.json``.

Run for a time budget: ``python -m stylerig.worlds.train --out runs/world --minutes 10`` (it resumes
when ``out_dir`` holds a checkpoint, so a long build can be run in parts).

**Device.** ``device`` (``cpu`` by default; ``cuda`` / ``auto`` where a GPU exists) moves the generator,
the renderer of the targets and the critic; the training z still come from the seeded CPU RNG, so the
data stream is the same on every device and a run may move between devices at a resume. The weights a
GPU run reaches differ from a CPU run's in rounding only at first, then drift apart as any two
floating-point orders of summation do: a build is reproducible from its seed *on one kind of device*.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from stylerig.devices import resolve_device
from stylerig.errors import InputError
from stylerig.face import load_face_model
from stylerig.gan import Generator, save_generator
from stylerig.outputs import claim_output_dir, write_run_json
from stylerig.render import FaceRenderer
from stylerig.tensorfile import load_tensors, save_tensors
from stylerig.worlds.prior import (
    FACTOR_GROUPS,
    FACTOR_NAMES,
    NUM_FACTORS,
    PRIOR_VERSION,
    factors_to_world,
    inert_factors,
    sample_factors,
)
from stylerig.worlds.scene import render_portrait

__all__ = [
    "HELD_OUT",
    "TrainConfig",
    "build_generator",
    "check_config",
    "evaluate",
    "learning_rate",
    "pose_pairs",
    "psnr",
    "train_world_generator",
]

#: Held-out seeds for PSNR (z = ``z_from_seeds(HELD_OUT, NUM_FACTORS)``), never used for training
#: (training z come from a torch RNG, not from integer seeds).
HELD_OUT: tuple[int, ...] = tuple(range(1_000_000, 1_000_128))
RESOLUTION = 128
#: The ``command`` the ``run.json`` of a build records.
RUN_COMMAND = "stylerig.worlds.train"


@dataclass
class TrainConfig:
    """Settings of the recipe (all stored in the checkpoint; a resume must use the same ones)."""

    batch: int = 16
    lr: float = 2e-3
    beta1: float = 0.0
    beta2: float = 0.99
    channel_base: int = 4096
    channel_max: int = 128
    mapping_layers: int = 4
    mapping_lr_multiplier: float = 1.0
    normalize_z: bool = True  # the mapping scales z to unit second moment (StyleGAN2); see the module doc
    face_weight: float = 1.0  # extra L1 + L2 weight inside the face mask
    feature_weight: float = 0.0  # extra weight near the brow, eye, nose and mouth landmarks (17-67)
    edge_weight: float = 0.0  # weight of an L1 on the images' horizontal and vertical pixel differences
    decay_start: int = 0  # from this step on, lr * decay_factor (0 = no decay): a step schedule
    decay_factor: float = 0.25
    decay2_start: int = 0  # from this step on, lr * decay_factor ** 2 (0 = no second step)
    eval_every: int = 100  # steps
    checkpoint_every: int = 200  # steps
    eval_seeds: int = len(HELD_OUT)
    threads: int = 2  # torch threads of the command line (the library call leaves them alone)
    prior_version: int = PRIOR_VERSION  # the world prior the targets are drawn from (prior.factors_to_world)
    init: str = ""  # a generator.safetensors whose weights start a fresh run (a warm start); "" = random
    critic: str = ""  # estimator file(s), comma-separated, read on G(z) and pulled towards z ("" = none)
    critic_weight: float = 0.0  # weight of the critic's mean squared factor error
    critic_groups: str = "pose"  # comma-separated FACTOR_GROUPS names or factor names the critic covers
    critic_factor_weights: str = ""  # "yaw=20,...": those factors' squared errors count that much more
    pair_weight: float = 0.0  # weight of the pose-pair loss (0 = off; see the module doc, "pose pairs")
    pair_step: float = 0.3  # sd (z units) of the pose change between the two images of a pair
    device: str = "cpu"  # where to train: cpu, cuda, cuda:N or auto (free on resume; see the module doc)

    def generator_kwargs(self) -> dict[str, Any]:
        return {
            "z_dim": NUM_FACTORS,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": RESOLUTION,
            "img_channels": 3,
            "mapping_kwargs": {
                "num_layers": self.mapping_layers,
                "lr_multiplier": self.mapping_lr_multiplier,
                **({} if self.normalize_z else {"normalize_z": False}),  # old configs stay as they were
            },
            "synthesis_kwargs": {"channel_base": self.channel_base, "channel_max": self.channel_max},
        }


def check_config(cfg: TrainConfig) -> None:
    """Check every number and name of ``cfg`` (before anything is written or trained).

    Raises:
        InputError: a non-finite or out-of-range setting (a learning rate of ``inf`` would write a
            generator of NaN weights), or unknown ``critic_groups``.
    """

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def number(name: str, *, positive: bool = False, below_one: bool = False) -> None:
        v = getattr(cfg, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > 0 if positive else v >= 0) and (not below_one or v < 1)
        if not ok:
            what = "a finite number " + ("> 0" if positive else ">= 0") + (" and < 1" if below_one else "")
            raise InputError(
                f"--{name.replace('_', '-')} must be {what}, got {v!r}",
                hint="pass a finite value in range (e.g. --lr 2e-3)",
            )

    def integer(name: str, low: int, high: int | None = None) -> None:
        v = getattr(cfg, name)
        if not is_int(v) or v < low or (high is not None and v > high):
            span = f">= {low}" if high is None else f"in {low}..{high}"
            raise InputError(f"--{name.replace('_', '-')} must be an integer {span}, got {v!r}")

    for name in ("lr", "mapping_lr_multiplier", "decay_factor"):
        number(name, positive=True)
    for name in ("face_weight", "feature_weight", "edge_weight", "critic_weight", "pair_weight"):
        number(name)
    for name in ("beta1", "beta2"):
        number(name, below_one=True)
    number("pair_step", positive=True)
    for name in ("batch", "channel_base", "channel_max", "mapping_layers", "threads"):
        integer(name, 1)
    if cfg.pair_weight > 0 and cfg.batch % 2:  # after the batch is known to be an integer
        raise InputError(f"--pair-weight needs an even --batch (pairs of images), got {cfg.batch}")
    for name in ("decay_start", "decay2_start", "eval_every", "checkpoint_every"):
        integer(name, 0)
    integer("eval_seeds", 1, len(HELD_OUT))
    integer("prior_version", 1, PRIOR_VERSION)
    if not isinstance(cfg.normalize_z, bool):
        raise InputError(f"--normalize-z must be true or false, got {cfg.normalize_z!r}")
    critic_group_names(cfg.critic_groups)
    from stylerig.worlds.estimator_train import parse_factor_weights

    parse_factor_weights(cfg.critic_factor_weights)


def critic_group_names(groups: str) -> list[str]:
    """The names of a comma-separated ``critic_groups`` (:data:`FACTOR_GROUPS` groups or single factors).

    Raises:
        InputError: none given, or a name that is neither.
    """
    names = [g.strip() for g in str(groups).split(",") if g.strip()]
    unknown = [g for g in names if g not in FACTOR_GROUPS and g not in FACTOR_NAMES]
    if not names or unknown:
        raise InputError(
            f"critic groups {groups!r}: unknown {unknown or 'none given'}",
            hint=f"name groups ({', '.join(FACTOR_GROUPS)}) or single factors, separated by commas",
        )
    return names


def build_generator(cfg: TrainConfig, seed: int = 0) -> Generator:
    """A freshly initialised world generator (weights from ``torch.manual_seed(seed)``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(**cfg.generator_kwargs())
    return G


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR [B] in [-1, 1] units (peak-to-peak 2), over the pixels where ``mask`` [B,1,H,W] is 1."""
    se = (pred - target).pow(2)
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.expand_as(se)
        mse = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


def feature_map(landmarks: torch.Tensor, size: int, sigma: float = 2.5) -> torch.Tensor:
    """Soft map [B, 1, size, size] in [0, 1] around the inner-face landmarks (brows, eyes, nose, mouth).

    The facial features are a few percent of the face pixels, so a plain loss (and the face PSNR) is
    dominated by smooth skin; this map lets the recipe weight, and the log measure, the features alone.

    Args:
        landmarks: float [B, 68, 2] pixels (x right, y down).
        size: image size in pixels.
        sigma: Gaussian radius in pixels.
    """
    lm = landmarks[:, 17:]  # [B, 51, 2]
    c = torch.arange(size, device=lm.device, dtype=lm.dtype) + 0.5
    gx = torch.exp(-((c.view(1, 1, -1) - lm[..., 0:1]) ** 2) / (2 * sigma**2))  # [B, 51, W]
    gy = torch.exp(-((c.view(1, 1, -1) - lm[..., 1:2]) ** 2) / (2 * sigma**2))  # [B, 51, H]
    return (gy.unsqueeze(-1) * gx.unsqueeze(-2)).amax(1, keepdim=True)  # [B, 1, H, W]


class _World:
    """The renderer and the held-out targets (rendered once)."""

    def __init__(
        self, eval_seeds: int, prior_version: int = PRIOR_VERSION, device: torch.device | None = None
    ) -> None:
        dev = torch.device("cpu") if device is None else device
        self.prior_version = prior_version
        self.renderer = FaceRenderer(load_face_model(), RESOLUTION, backend="torch").to(dev)
        self.z_eval = sample_factors(HELD_OUT[:eval_seeds]).to(dev)
        with torch.no_grad():
            self.eval_images, self.eval_masks, self.eval_features = self.render(self.z_eval)

    def render(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Portraits [B,3,H,W], face masks [B,1,H,W] and feature maps [B,1,H,W] of factor vectors ``z``."""
        out_i, out_m, out_f = [], [], []
        for part in z.split(32):
            p, scene = factors_to_world(part, self.prior_version)
            img, mask, lm = render_portrait(self.renderer, p, scene)
            out_i.append(img)
            out_m.append(mask)
            out_f.append(feature_map(lm, RESOLUTION))
        return torch.cat(out_i), torch.cat(out_m), torch.cat(out_f)


def pose_pairs(batch: int, step: float, rng: torch.Generator) -> torch.Tensor:
    """Factor vectors [batch, NUM_FACTORS] (float32, CPU) drawn as ``batch // 2`` pairs: row ``2i`` from
    N(0, 1), row ``2i + 1`` the same portrait with its pose factors (yaw, pitch, roll) moved by
    N(0, step²) each (z units; at yaw 0, ``step`` 0.3 is about 7 degrees)."""
    base = torch.randn(batch // 2, NUM_FACTORS, generator=rng)
    moved = base.clone()
    pose = [FACTOR_NAMES.index(f) for f in FACTOR_GROUPS["pose"]]
    moved[:, pose] += step * torch.randn(batch // 2, len(pose), generator=rng)
    return torch.stack([base, moved], dim=1).reshape(batch, NUM_FACTORS)


def _pair_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, face_weight: float
) -> torch.Tensor:
    """L1 + L2 between the generator's and the targets' change within each pair of :func:`pose_pairs`
    (rows 2i and 2i + 1), weighted ``1 + face_weight * (either face mask)``."""
    d = (pred[1::2] - pred[0::2]) - (target[1::2] - target[0::2])
    weight = 1.0 + face_weight * torch.maximum(mask[0::2], mask[1::2])
    return ((d.abs() + d.pow(2)) * weight).mean()


@torch.no_grad()
def evaluate(G: Generator, world: _World) -> dict[str, float]:
    """Mean held-out PSNR of ``G`` against the world's renders: face mask, facial features, whole image."""
    preds = torch.cat([G(z, noise_mode="const") for z in world.z_eval.split(16)])
    return {
        "psnr_face": float(psnr(preds, world.eval_images, world.eval_masks).mean()),
        "psnr_features": float(psnr(preds, world.eval_images, (world.eval_features > 0.5).float()).mean()),
        "psnr_all": float(psnr(preds, world.eval_images).mean()),
    }


def _loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    features: torch.Tensor,
    face_weight: float,
    feature_weight: float,
    edge_weight: float = 0.0,
) -> torch.Tensor:
    d = pred - target
    per_pixel = d.abs() + d.pow(2)
    weight = 1.0 + face_weight * mask + feature_weight * features
    loss = (per_pixel * weight).mean()
    if edge_weight > 0:
        # A blurred edge (a mouth or lid drawn as the mean of its shapes) costs little in L1 + L2 but
        # much in the differences of neighbouring pixels.
        dx = (d[..., :, 1:] - d[..., :, :-1]).abs() * weight[..., :, 1:]
        dy = (d[..., 1:, :] - d[..., :-1, :]).abs() * weight[..., 1:, :]
        loss = loss + edge_weight * (dx.mean() + dy.mean())
    return loss


class _Critic:
    """Frozen estimator networks reading generated images; see the module docstring ("critic").

    ``paths``: one estimator file, or several separated by commas (an ensemble: the loss is the mean of
    each network's loss, so that the generator must satisfy all of them and cannot pass by drawing a
    pattern that fools one). ``groups``: comma-separated names, each a :data:`FACTOR_GROUPS` group (all
    its factors) or a single factor of :data:`FACTOR_NAMES` (e.g.
    ``pose,expression,light_azimuth,light_elevation``). Factors the prior ``version`` ignores
    (:func:`~stylerig.worlds.prior.inert_factors`) are left out: an image cannot show them, so pulling the
    critic's reading of them towards z could only teach an adversarial pattern. ``factor_weights``:
    ``"yaw=20,..."`` multiplies those factors' squared errors (each factor counts 1 otherwise; a factor
    weighted here must be one of the chosen groups).
    """

    def __init__(
        self,
        paths: str,
        groups: str,
        version: int = PRIOR_VERSION,
        device: torch.device | None = None,
        factor_weights: str = "",
    ) -> None:
        from stylerig.worlds.estimator import load_estimator
        from stylerig.worlds.estimator_train import parse_factor_weights

        names = critic_group_names(groups)
        files = critic_files(paths)
        inert = set(inert_factors(version))
        factors: list[str] = []
        for g in names:
            for f in FACTOR_GROUPS.get(g, (g,)):
                if f not in factors and f not in inert:
                    factors.append(f)
        if not factors:
            raise InputError(
                f"critic groups {groups!r} name only factors prior version {version} ignores",
                hint="name factors an image shows",
            )
        weights = parse_factor_weights(factor_weights)
        stray = sorted(set(weights) - set(factors))
        if stray:
            raise InputError(
                f"--critic-factor-weights names {', '.join(stray)}, which the critic does not cover",
                hint=f"weight factors of --critic-groups {groups!r}",
            )
        self.factors = tuple(factors)
        dev = torch.device("cpu") if device is None else device
        self.nets = [load_estimator(f, cache=False).to(dev) for f in files]  # eval mode, frozen
        for f, net in zip(files, self.nets, strict=True):
            missing = [x for x in factors if x not in net.answers_for]
            if missing:  # a specialist's other outputs are not readings (the eye network's smile: r 0.01)
                raise InputError(
                    f"--critic {f} is a specialist that answers only for {', '.join(net.answers_for)}, "
                    f"not for {', '.join(missing)}",
                    hint="use a general estimator as critic, or narrow --critic-groups to what it answers for",
                )
        self.index = torch.tensor([FACTOR_NAMES.index(f) for f in factors], device=dev)
        self.weight = torch.tensor([weights.get(f, 1.0) for f in factors], device=dev)

    def loss(self, pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Weighted mean squared error (z units) between each critic's factors of images ``pred``
        [B,3,H,W] and ``z`` [B, NUM_FACTORS] over the chosen factors, averaged over the critics;
        differentiable in ``pred``."""
        images, target = pred.float(), z[:, self.index]
        losses = [((net(images)[:, self.index] - target).pow(2) * self.weight).mean() for net in self.nets]
        return torch.stack(losses).mean()


def critic_files(paths: str) -> list[str]:
    """The estimator files of a comma-separated ``critic`` setting, each checked to exist.

    Raises:
        InputError: none given, a missing file, or one named twice.
    """
    files = [f.strip() for f in str(paths).split(",") if f.strip()]
    if not files:
        raise InputError(
            "--critic names no file", hint="pass one or more estimator.safetensors, comma-separated"
        )
    for f in files:
        if not Path(f).is_file():
            raise InputError(f"--critic {f}: no such file", hint="pass an estimator.safetensors")
    if len(set(files)) != len(files):
        raise InputError(f"--critic {paths}: a file named twice", hint="name each critic once")
    return files


def _save_checkpoint(
    path: Path, G: Generator, opt: torch.optim.Optimizer, rng: torch.Generator, step: int, elapsed: float, cfg
) -> None:
    tensors: dict[str, torch.Tensor] = {f"G.{k}": v for k, v in G.state_dict().items()}
    names = [n for n, _ in G.named_parameters()]
    for i, prm in enumerate(G.parameters()):
        st = opt.state.get(prm)
        if st:
            tensors[f"opt.{names[i]}.exp_avg"] = st["exp_avg"]
            tensors[f"opt.{names[i]}.exp_avg_sq"] = st["exp_avg_sq"]
            tensors[f"opt.{names[i]}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    tensors["rng_state"] = rng.get_state()
    meta = {
        "format": "stylerig-world-train-checkpoint",
        "step": str(step),
        "elapsed_s": repr(float(elapsed)),
        "config": json.dumps(asdict(cfg)),
        "generator_config": json.dumps(G.config),
    }
    save_tensors(path, tensors, meta)


def _load_checkpoint(
    path: Path, G: Generator, opt: torch.optim.Optimizer, rng: torch.Generator
) -> tuple[int, float, dict]:
    tensors, meta = load_tensors(path, what="world training checkpoint", hint="delete it to start afresh")
    G.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    named = dict(G.named_parameters())
    for name, prm in named.items():
        key = f"opt.{name}"
        if f"{key}.exp_avg" in tensors:
            opt.state[prm] = {  # Adam keeps a non-capturable step count on the CPU
                "step": tensors[f"{key}.step"].reshape(()).to(torch.float32),
                "exp_avg": tensors[f"{key}.exp_avg"].to(prm.device, copy=True),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(prm.device, copy=True),
            }
    rng.set_state(tensors["rng_state"])
    return int(meta["step"]), float(meta["elapsed_s"]), json.loads(meta["config"])


def train_world_generator(
    out_dir: str | os.PathLike[str],
    steps: int | None = None,
    *,
    minutes: float | None = None,
    resume: bool = True,
    seed: int = 0,
    config: TrainConfig | None = None,
    log: bool = True,
) -> Generator:
    """Train (or continue training) the world generator.

    Args:
        out_dir: output folder (checkpoint, log.jsonl, generator.safetensors, run.json).
        steps: stop when the total step count reaches this (None = no step limit).
        minutes: stop when the total training wall time (summed over resumed parts) reaches this.
        resume: continue from ``out_dir/checkpoint.safetensors`` when it exists.
        seed: seeds the weights and the training data stream.
        config: :class:`TrainConfig` (default settings when None); a resume must keep the network and the
            batch size; the learning rate may change between parts (a schedule run by hand).
        log: print one line per evaluation.

    Returns:
        The trained :class:`~stylerig.gan.Generator` (also saved in ``out_dir``).

    Raises:
        InputError: a non-finite or out-of-range setting (:func:`check_config`), ``out_dir`` holding
            another command's outputs, or a checkpoint of other settings; all but the last before
            anything is written.
    """
    if steps is None and minutes is None:
        raise ValueError("give steps or minutes")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise InputError(f"--steps must be an integer >= 0, got {steps!r}")  # 0: the initial generator
    if minutes is not None and not (math.isfinite(float(minutes)) and float(minutes) > 0):
        raise InputError(f"--minutes must be a finite number > 0, got {minutes!r}")
    cfg = config or TrainConfig()
    check_config(cfg)  # a bad setting fails before anything is written
    dev = resolve_device(cfg.device)
    # A bad critic or device fails before anything is written or rendered.
    critic = (
        _Critic(cfg.critic, cfg.critic_groups, cfg.prior_version, dev, cfg.critic_factor_weights)
        if cfg.critic and cfg.critic_weight > 0
        else None
    )
    out = claim_output_dir(out_dir, RUN_COMMAND)
    out.mkdir(parents=True, exist_ok=True)
    G = build_generator(cfg, seed).to(dev)  # initialised on the CPU: the same weights on every device
    G.train()
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    rng = torch.Generator().manual_seed(seed)
    step, elapsed = 0, 0.0
    ckpt = out / "checkpoint.safetensors"
    if resume and ckpt.is_file():
        step, elapsed, saved_cfg = _load_checkpoint(ckpt, G, opt, rng)
        saved_cfg = {
            "prior_version": 1,
            "init": "",
            "edge_weight": 0.0,
            "normalize_z": True,
            **saved_cfg,
        }  # checkpoints older than these settings
        # Settings that may change between parts (a learning-rate schedule, logging); the rest fix the
        # network and the data stream.
        free = {
            "threads",
            "lr",
            "beta1",
            "beta2",
            "face_weight",
            "feature_weight",
            "edge_weight",
            "init",  # only starts a fresh run; a resume takes the checkpoint's weights
            "critic",  # a loss term, like the weights above: it may change between parts
            "critic_weight",
            "critic_groups",
            "critic_factor_weights",
            "pair_weight",  # a loss term (its batches are drawn as pairs while it is on)
            "pair_step",
            "decay_start",
            "decay_factor",
            "decay2_start",
            "eval_every",
            "checkpoint_every",
            "eval_seeds",
            "device",
        }
        now = {k: v for k, v in asdict(cfg).items() if k not in free}
        if {k: v for k, v in saved_cfg.items() if k not in free} != now:
            raise InputError(
                f"{ckpt} was written with different settings: {saved_cfg}",
                hint="resume with the same settings, or pass --no-resume / another --out",
            )
    elif cfg.init:
        _warm_start(G, Path(cfg.init))
    write_run_json(out, command=RUN_COMMAND, arguments={**asdict(cfg), "seed": seed}, seed=seed)
    world = _World(cfg.eval_seeds, cfg.prior_version, dev)
    log_path = out / "log.jsonl"
    wall0 = time.perf_counter()

    def checkpoint() -> None:
        with torch.no_grad():  # w_avg for truncation: the mean w over the held-out factors
            G.mapping.w_avg.copy_(G.mapping(world.z_eval)[:, 0].mean(0))
        _save_checkpoint(ckpt, G, opt, rng, step, elapsed, cfg)
        save_generator(G, out / "generator.safetensors")

    def evaluation() -> None:
        rec = {"step": step, "minutes": round(elapsed / 60.0, 3), **evaluate(G, world)}
        rec["wall_minutes_this_run"] = round((time.perf_counter() - wall0) / 60.0, 3)
        rec["steps_per_min"] = round(step / max(elapsed / 60.0, 1e-9), 2)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if log:
            print(json.dumps(rec), flush=True)

    if step == 0 and cfg.eval_every > 0:
        evaluation()
    last_loss = math.nan
    while (steps is None or step < steps) and (minutes is None or elapsed < minutes * 60.0):
        t0 = time.perf_counter()
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        if cfg.pair_weight > 0:
            z = pose_pairs(cfg.batch, cfg.pair_step, rng).to(dev)
        else:
            z = torch.randn(cfg.batch, NUM_FACTORS, generator=rng).to(dev)
        with torch.no_grad():
            target, mask, features = world.render(z)
        pred = G(z, noise_mode="const")
        loss = _loss(pred, target, mask, features, cfg.face_weight, cfg.feature_weight, cfg.edge_weight)
        if cfg.pair_weight > 0:
            loss = loss + cfg.pair_weight * _pair_loss(pred, target, mask, cfg.face_weight)
        if critic is not None:
            loss = loss + cfg.critic_weight * critic.loss(pred, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last_loss = float(loss.detach())
        step += 1
        elapsed += time.perf_counter() - t0
        if cfg.eval_every > 0 and step % cfg.eval_every == 0:
            evaluation()
        if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    if log:
        print(
            f"stopped at step {step} after {elapsed / 60.0:.2f} min (last loss {last_loss:.4f})", flush=True
        )
    return G


def _warm_start(G: Generator, path: Path) -> None:
    """Copy the weights of the generator file ``path`` into G (same architecture), for ``init``."""
    from stylerig.gan import load_generator

    if not path.is_file():
        raise InputError(f"--init {path}: no such file", hint="pass a generator.safetensors of a world build")
    src = load_generator(path)
    if _without_normalize_z(src.config) != _without_normalize_z(G.config):
        raise InputError(
            f"--init {path} has another architecture: {src.config}",
            hint="warm-start from a generator of the same recipe (same channels, z_dim, resolution)",
        )
    G.load_state_dict(src.state_dict())


def _without_normalize_z(config: dict[str, Any]) -> dict[str, Any]:
    """A generator config without the mapping's ``normalize_z``: the one setting a warm start may change
    (the weights are the same; only what the first layer is given differs)."""
    mapping = {k: v for k, v in config.get("mapping_kwargs", {}).items() if k != "normalize_z"}
    return {**config, "mapping_kwargs": mapping}


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Adam's learning rate at ``step``: ``lr``, times ``decay_factor`` from each of ``decay_start`` and
    ``decay2_start`` on (a step schedule; a start of 0 never comes)."""
    return cfg.lr * cfg.decay_factor ** sum(0 < d <= step for d in (cfg.decay_start, cfg.decay2_start))


def main(argv: list[str] | None = None) -> None:
    from stylerig.worlds._recipe import recipe_main

    recipe_main(__doc__.splitlines()[0], TrainConfig, train_world_generator, argv)


if __name__ == "__main__":
    main()
