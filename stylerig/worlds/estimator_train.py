"""Training recipe of the world's fast estimator (:mod:`stylerig.worlds.estimator`).

Supervised regression of the 38 world factors on the world's *own renders* only: each step draws
``renders_per_step`` factor vectors from a seeded torch RNG (N(0, 1), a share ``wide_share`` of them
with sd ``wide_scale`` so that edited images outside the prior's bulk are covered), renders their
portraits (:func:`~stylerig.worlds.scene.render_portrait`, 128x128, area-downsampled to the network's
input) into a replay buffer of ``buffer`` images, and trains on ``batch`` images drawn from the buffer,
each augmented afresh (Gaussian blur of random width, pixel noise of random strength: the generator's
images are slightly soft). Loss: weighted L1 on the factors (rotation x ``rotation_weight``,
expression and light factors x ``detail_weight``, the rest x 1). Optionally (``expression_param_weight`` > 0; 0.3 in the
shipped recipe) an L1 on the expression *parameters* of the predicted factors as well: the smile and the
blink saturate in their factors, and measured on 256 world renders this lifts the correlation of the
estimated smile with the truth from 0.18 to 0.80 (4,000 steps, ``--input-size 128 --stem-stride 2``) --
on the first world's generator images it stayed at 0.03, because that generator hardly drew the smile. Adam, cosine learning-rate decay over
``schedule_steps`` to 5 %. Never trained on generator images, DFR or the generator's latents.

Outputs in ``out_dir``: ``checkpoint.safetensors`` (network + batch-norm statistics + Adam state + step
+ RNG state + elapsed time), ``estimator.safetensors`` (:func:`~stylerig.worlds.estimator.save_estimator`,
written with every checkpoint; copy it to ``stylerig/worlds/assets/world-estimator.safetensors`` to
ship it), ``log.jsonl`` (one line per evaluation on :data:`EVAL_SEEDS` world renders: median |rotation
error| per angle in degrees, expression / illumination RMSE) and ``run.json``.

Resumable: a run continues from ``out_dir/checkpoint.safetensors`` (``--minutes`` is the total training
time over all parts); the replay buffer is not stored but re-rendered from the resumed RNG.

The shipped network (``stylerig/worlds/assets/world-estimator.safetensors``, 0.7 M parameters, 1.4 MB)
is this recipe's defaults with seed 2 on prior version 2 (seed 0 is the critic that taught the generator,
see ``examples/build_world.sh``; prior 3's renders are a subset of prior 2's)::

    python -m stylerig.worlds.estimator_train --out runs/estimator --steps 6000 --schedule-steps 6000 \
        --seed 2 --prior-version 2

14.6 min on one thread of a shared 2-core machine. Its log on the 128 evaluation renders at step 6000:
median |rotation error| 0.57 / 0.28 / 0.24 deg, expression RMSE 0.119, illumination RMSE 0.027.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from stylerig._checks import parse_named_weights
from stylerig.devices import resolve_device
from stylerig.errors import InputError
from stylerig.face import load_face_model
from stylerig.render import FaceRenderer
from stylerig.tensorfile import load_tensors, save_tensors
from stylerig.worlds.estimator import (
    EstimatorConfig,
    EstimatorNet,
    check_answers_for,
    preprocess,
    save_estimator,
)
from stylerig.worlds.prior import (
    FACTOR_NAMES,
    NUM_FACTORS,
    PRIOR_VERSION,
    factors_to_world,
    inert_factors,
    sample_factors,
)
from stylerig.worlds.scene import render_portrait

__all__ = [
    "EVAL_SEEDS",
    "EstimatorTrainConfig",
    "augment",
    "evaluate_estimator",
    "parse_factor_weights",
    "train_estimator",
]

#: Seeds of the training log's evaluation renders (``z_from_seeds``; training factors come from a torch
#: RNG, never from integer seeds). Disjoint from the world report's 2 000 000+ and the generator's
#: 1 000 000+ held-out seeds.
EVAL_SEEDS: tuple[int, ...] = tuple(range(3_000_000, 3_000_256))
RESOLUTION = 128
_ROTATION = ("yaw", "pitch", "roll")
_DETAIL = (
    "jaw_open",
    "smile",
    "eye_close",
    "brow_raise",
    "smile_asym",
    "mouth_stretch",
    "light_azimuth",
    "light_elevation",
    "light_strength",
    "ambient",
    "light_warmth",
)


@dataclass
class EstimatorTrainConfig:
    """Settings of the recipe (stored in the checkpoint; a resume must keep the network and data ones)."""

    batch: int = 32
    renders_per_step: int = 8
    buffer: int = 2048
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule_steps: int = 3000  # cosine decay to 5 % of lr over this many steps
    wide_share: float = 0.2
    wide_scale: float = 1.5
    blur_max: float = 0.7  # Gaussian sigma, pixels of 64x64 (scaled to the input), drawn from U(0, max)
    noise_max: float = 0.03  # pixel noise sd ([-1, 1] units), drawn uniformly from [0, max]
    rotation_weight: float = 4.0
    detail_weight: float = 2.0
    # L1 on the expression parameters p (each in sd of the prior) of the predicted factors, on top of the
    # factor L1: smile, blinks and jaw opening saturate (sigmoid / softplus of their factor), so a factor
    # error where the image no longer changes costs as much as a visible one; in p it costs nothing.
    expression_param_weight: float = 0.3
    # Extra per-factor multipliers of the factor L1 on top of rotation / detail weights, "name=w,..."
    # (e.g. "eye_close=4": the lids move a few pixels, and most seeds of the recipe learn to ignore them).
    # A loss weight: it may change between the parts of a resumed run (a curriculum).
    factor_weights: str = ""
    # The factors the saved network answers for, "name,..." ("" = all): a *specialist* such as the shipped
    # eye network (``--factor-weights eye_close=4 --answers-for eye_close``), which reads the lids and
    # loses the mouth, is combined with the general network by fast_estimate_factors. Recorded in
    # estimator.safetensors; it does not change the training.
    answers_for: str = ""
    input_size: int = 128
    stem_stride: int = 2
    widths: str = "16,24,48,96,128"
    reduce: int = 64
    hidden: int = 256
    eval_every: int = 200  # steps
    checkpoint_every: int = 200  # steps
    eval_seeds: int = 128
    # torch threads of the command line (the library call leaves them alone); 1 on a shared CPU: with
    # more threads than free cores, OpenMP's barriers made the renderer ~50x slower here.
    threads: int = 1
    # The world prior the training renders come from (prior.factors_to_world); the shipped world's by default.
    prior_version: int = PRIOR_VERSION
    # Where to train (cpu, cuda, cuda:N, auto); free on resume. The random numbers (factors, batch picks,
    # augmentation) still come from the seeded CPU RNG, so the data stream is the same on every device.
    device: str = "cpu"

    def net_config(self) -> EstimatorConfig:
        return EstimatorConfig(
            input_size=self.input_size,
            stem_stride=self.stem_stride,
            widths=tuple(int(w) for w in self.widths.split(",")),
            reduce=self.reduce,
            hidden=self.hidden,
        )


def _loss_weights(cfg: EstimatorTrainConfig) -> torch.Tensor:
    w = torch.ones(NUM_FACTORS)
    for name in _ROTATION:
        w[FACTOR_NAMES.index(name)] = cfg.rotation_weight
    for name in _DETAIL:
        w[FACTOR_NAMES.index(name)] = cfg.detail_weight
    for name, value in parse_factor_weights(cfg.factor_weights).items():
        w[FACTOR_NAMES.index(name)] *= value
    for name in inert_factors(cfg.prior_version):  # fixed by the prior: nothing in the image shows them
        w[FACTOR_NAMES.index(name)] = 0.0
    return w / w.mean()


def parse_factor_weights(text: str) -> dict[str, float]:
    """``"eye_close=4,smile=2"`` -> {name: weight} of world factors; "" -> {}.

    Raises:
        InputError: an unknown factor, a malformed entry, or a weight that is not a finite number >= 0.
    """
    hint = f"write name=weight with a weight >= 0 and a name of {', '.join(FACTOR_NAMES)}"
    pairs = parse_named_weights(text, "factor weight", hint=hint)
    for name, _ in pairs:
        if name not in FACTOR_NAMES:
            raise InputError(f"bad factor weight {name!r}: no such factor", hint=hint)
    return dict(pairs)


def _answers_for(text: str) -> tuple[str, ...] | None:
    """``"eye_close,..."`` -> those factor names; "" -> None (all factors)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return check_answers_for(names) if names else None


def _expression_scale(n: int = 20000, version: int = PRIOR_VERSION) -> torch.Tensor:
    """float [64]: the prior's sd of each expression parameter (1 where it never varies), seed 0."""
    from stylerig import params

    z = torch.randn(n, NUM_FACTORS, generator=torch.Generator().manual_seed(0))
    sd = params.get(factors_to_world(z, version)[0], "expression").std(0)
    return torch.where(sd > 1e-6, sd, torch.ones_like(sd))


def _expression_param_loss(
    pred: torch.Tensor, true: torch.Tensor, scale: torch.Tensor, version: int = PRIOR_VERSION
) -> torch.Tensor:
    """Mean L1 between the expression parameters (in prior sd) of predicted and true factors [B, 38]."""
    from stylerig import params

    e_pred = params.get(factors_to_world(pred, version)[0], "expression")
    e_true = params.get(factors_to_world(true, version)[0], "expression")
    used = scale != 1.0
    return ((e_pred - e_true).abs() / scale)[:, used].mean()


def augment(x: torch.Tensor, gen: torch.Generator, blur_max: float, noise_max: float) -> torch.Tensor:
    """Per-image Gaussian blur (sigma ~ U(0, blur_max) pixels, 7-tap separable) and Gaussian pixel noise
    (sd ~ U(0, noise_max)) of images [B, 3, H, W] in [-1, 1] on any device, drawn from the CPU generator
    ``gen``; returns a new tensor (same shape and device)."""
    B, C, H, W = x.shape
    if blur_max > 0:
        sigma = torch.rand(B, generator=gen) * blur_max
        t = torch.arange(-3, 4, dtype=x.dtype).view(1, 7)
        k = torch.exp(-(t**2) / (2 * sigma.clamp_min(1e-3).view(B, 1) ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0).to(x.device)  # [B*C, 7]
        y = F.pad(x.reshape(1, B * C, H, W), (3, 3, 3, 3), mode="replicate")
        y = F.conv2d(y, k.view(B * C, 1, 1, 7), groups=B * C)
        y = F.conv2d(y, k.view(B * C, 1, 7, 1), groups=B * C)
        x = y.view(B, C, H, W)
    if noise_max > 0:
        sd = torch.rand(B, 1, 1, 1, generator=gen) * noise_max
        x = x + (sd * torch.randn(x.shape, generator=gen)).to(x.device)
    return x


class _Renders:
    """The world's renderer and the evaluation renders."""

    def __init__(self, cfg: EstimatorTrainConfig, device: torch.device | None = None) -> None:
        dev = torch.device("cpu") if device is None else device
        self.renderer = FaceRenderer(load_face_model(), RESOLUTION, backend="torch").to(dev)
        self.input_size = cfg.input_size
        self.prior_version = cfg.prior_version
        self.z_eval = sample_factors(EVAL_SEEDS[: cfg.eval_seeds]).to(dev)
        self.x_eval = self.render(self.z_eval)

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        """Portraits of factors z [B, 38], area-downsampled to the network input [B, 3, s, s]."""
        out = []
        for part in z.split(32):
            p, scene = factors_to_world(part, self.prior_version)
            out.append(preprocess(render_portrait(self.renderer, p, scene)[0], self.input_size))
        return torch.cat(out)


@torch.no_grad()
def evaluate_estimator(
    net: EstimatorNet, images: torch.Tensor, z_true: torch.Tensor, prior_version: int = PRIOR_VERSION
) -> dict[str, float]:
    """Errors of ``net`` on images [B, 3, s, s] (or 128x128) with true factors z_true [B, 38]: median
    |rotation error| per angle (degrees) and expression / illumination RMSE (coefficient units), the
    factors read through the world prior of version ``prior_version``."""
    from stylerig import params

    was = net.training
    net.eval()
    z = torch.cat([net(c) for c in images.split(64)])
    net.train(was)
    est, true = factors_to_world(z, prior_version)[0], factors_to_world(z_true, prior_version)[0]
    rot = (params.get(est, "rotation") - params.get(true, "rotation")).abs() * (180.0 / math.pi)
    med = rot.median(0).values.tolist()
    out = {f"{n}_med_deg": round(v, 4) for n, v in zip(_ROTATION, med, strict=True)}
    for g in ("expression", "illumination"):
        out[f"{g}_rmse"] = round(float((params.get(est, g) - params.get(true, g)).pow(2).mean().sqrt()), 5)
    return out


def _save_checkpoint(
    path: Path,
    net: EstimatorNet,
    opt: torch.optim.Optimizer,
    rng: torch.Generator,
    step: int,
    elapsed: float,
    cfg: EstimatorTrainConfig,
) -> None:
    tensors: dict[str, torch.Tensor] = {f"net.{k}": v for k, v in net.state_dict().items()}
    for name, prm in net.named_parameters():
        st = opt.state.get(prm)
        if st:
            tensors[f"opt.{name}.exp_avg"] = st["exp_avg"]
            tensors[f"opt.{name}.exp_avg_sq"] = st["exp_avg_sq"]
            tensors[f"opt.{name}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    tensors["rng_state"] = rng.get_state()
    meta = {
        "format": "stylerig-world-estimator-checkpoint",
        "step": str(step),
        "elapsed_s": repr(float(elapsed)),
        "config": json.dumps(asdict(cfg)),
    }
    save_tensors(path, tensors, meta)


#: Settings that may change between resumed parts (the rest fix the network and the data stream).
_FREE = {
    "threads",
    "eval_every",
    "checkpoint_every",
    "eval_seeds",
    "lr",
    "schedule_steps",
    "factor_weights",
    "answers_for",
    "device",
}


def _load_checkpoint(
    path: Path, net: EstimatorNet, opt: torch.optim.Optimizer, rng: torch.Generator, cfg: EstimatorTrainConfig
) -> tuple[int, float]:
    tensors, meta = load_tensors(path, what="world estimator checkpoint", hint="delete it to start afresh")
    defaults = {f.name: f.default for f in fields(EstimatorTrainConfig)}
    # Settings added later take their defaults, except those whose default changed with prior version 2:
    # a checkpoint without them was written with the first world's recipe.
    first_recipe = {"prior_version": 1, "expression_param_weight": 0.0, "input_size": 64, "stem_stride": 1}
    saved = {**defaults, **first_recipe, **json.loads(meta["config"])}
    if {k: v for k, v in saved.items() if k not in _FREE} != {
        k: v for k, v in asdict(cfg).items() if k not in _FREE
    }:
        raise InputError(
            f"{path} was written with different settings: {saved}",
            hint="resume with the same settings, or pass --no-resume / another --out",
        )
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    for name, prm in net.named_parameters():
        key = f"opt.{name}"
        if f"{key}.exp_avg" in tensors:
            opt.state[prm] = {
                "step": tensors[f"{key}.step"].reshape(()).to(torch.float32),
                "exp_avg": tensors[f"{key}.exp_avg"].to(prm.device, copy=True),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(prm.device, copy=True),
            }
    rng.set_state(tensors["rng_state"])
    return int(meta["step"]), float(meta["elapsed_s"])


def _draw_factors(n: int, cfg: EstimatorTrainConfig, rng: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, NUM_FACTORS, generator=rng)
    wide = torch.rand(n, 1, generator=rng) < cfg.wide_share
    return torch.where(wide, z * cfg.wide_scale, z)


def train_estimator(
    out_dir: str | os.PathLike[str],
    steps: int | None = None,
    *,
    minutes: float | None = None,
    resume: bool = True,
    seed: int = 0,
    config: EstimatorTrainConfig | None = None,
    log: bool = True,
) -> EstimatorNet:
    """Train (or continue training) the fast estimator (see the module docstring).

    Args:
        out_dir: output folder (checkpoint, estimator.safetensors, log.jsonl, run.json).
        steps: stop when the total step count reaches this (None = no step limit).
        minutes: stop when the total training wall time (summed over resumed parts) reaches this.
        resume: continue from ``out_dir/checkpoint.safetensors`` when it exists.
        seed: seeds the weights and the training data stream.
        config: :class:`EstimatorTrainConfig` (defaults when None).
        log: print one line per evaluation.

    Returns:
        The trained :class:`~stylerig.worlds.estimator.EstimatorNet` (eval mode; also saved in ``out_dir``).
    """
    if steps is None and minutes is None:
        raise InputError("give steps or minutes")
    cfg = config or EstimatorTrainConfig()
    if cfg.batch < 1 or cfg.renders_per_step < 1 or cfg.buffer < cfg.renders_per_step:
        raise InputError("need batch >= 1 and buffer >= renders_per_step >= 1")
    parse_factor_weights(cfg.factor_weights)  # a bad entry fails before anything is written
    answers_for = _answers_for(cfg.answers_for)
    dev = resolve_device(cfg.device)  # and so does a missing GPU
    from stylerig.outputs import claim_output_dir, write_run_json

    out = claim_output_dir(out_dir, "stylerig.worlds.estimator_train")
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = EstimatorNet(cfg.net_config(), answers_for)
    net.to(dev).train()  # initialised on the CPU: the same weights on every device
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = torch.Generator().manual_seed(seed)
    step, elapsed = 0, 0.0
    ckpt = out / "checkpoint.safetensors"
    if resume and ckpt.is_file():
        step, elapsed = _load_checkpoint(ckpt, net, opt, rng, cfg)
    write_run_json(
        out, command="stylerig.worlds.estimator_train", arguments={**asdict(cfg), "seed": seed}, seed=seed
    )
    world = _Renders(cfg, dev)
    weights = _loss_weights(cfg).to(dev)
    exp_scale = _expression_scale(version=cfg.prior_version).to(dev)
    log_path = out / "log.jsonl"

    def checkpoint() -> None:
        _save_checkpoint(ckpt, net, opt, rng, step, elapsed, cfg)
        rec = evaluate_estimator(net, world.x_eval, world.z_eval, cfg.prior_version)
        save_estimator(
            net,
            out / "estimator.safetensors",
            {
                "recipe": "stylerig.worlds.estimator_train",
                "train_config": json.dumps(asdict(cfg)),
                "seed": str(seed),
                "step": str(step),
                "train_minutes": f"{elapsed / 60.0:.2f}",
                "eval_on_world_renders": json.dumps(rec),
            },
        )

    def evaluation() -> None:
        rec = {
            "step": step,
            "minutes": round(elapsed / 60.0, 3),
            **evaluate_estimator(net, world.x_eval, world.z_eval, cfg.prior_version),
        }
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if log:
            print(json.dumps(rec), flush=True)

    def more() -> bool:
        return (steps is None or step < steps) and (minutes is None or elapsed < minutes * 60.0)

    # The replay buffer (re-rendered on resume, from the resumed RNG). A finished part run again (as
    # examples/build_world.sh does) trains nothing: it renders no buffer, so its checkpoint keeps its RNG
    # state and time, and only re-saves its outputs (with an ``answers_for`` given now).
    if more():
        t0 = time.perf_counter()
        z_buf = _draw_factors(cfg.buffer, cfg, rng).to(dev)
        x_buf = world.render(z_buf)
        elapsed += time.perf_counter() - t0
    pos = 0
    last = math.nan
    while more():
        t0 = time.perf_counter()
        frac = min(step / max(cfg.schedule_steps, 1), 1.0)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        z_new = _draw_factors(cfg.renders_per_step, cfg, rng).to(dev)
        idx = (torch.arange(cfg.renders_per_step, device=dev) + pos) % cfg.buffer
        z_buf[idx] = z_new
        x_buf[idx] = world.render(z_new)
        pos = (pos + cfg.renders_per_step) % cfg.buffer
        pick = torch.randint(0, cfg.buffer, (cfg.batch,), generator=rng).to(dev)
        n = min(cfg.batch, cfg.renders_per_step)
        pick[:n] = idx[:n]  # every fresh render is used at once
        x = augment(x_buf[pick], rng, cfg.blur_max * cfg.input_size / 64.0, cfg.noise_max)
        pred = net(x)
        loss = ((pred - z_buf[pick]).abs() * weights).mean()
        if cfg.expression_param_weight > 0:
            loss = loss + cfg.expression_param_weight * _expression_param_loss(
                pred, z_buf[pick], exp_scale, cfg.prior_version
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = float(loss.detach())
        step += 1
        elapsed += time.perf_counter() - t0
        if cfg.eval_every > 0 and step % cfg.eval_every == 0:
            evaluation()
        if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    if log:
        print(f"stopped at step {step} after {elapsed / 60.0:.2f} min (last loss {last:.4f})", flush=True)
    return net.eval()


def main(argv: list[str] | None = None) -> None:
    from stylerig.worlds._recipe import recipe_main

    recipe_main(__doc__.splitlines()[0], EstimatorTrainConfig, train_estimator, argv)


if __name__ == "__main__":
    main()
