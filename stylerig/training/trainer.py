"""One small trainer shared by DFR and RigNet.

What it does, so that a network's recipe only says *what* to minimise:

* **the loop**: ``steps`` optimizer steps of Adam on ``task.loss(model, rows, step, rng)``, with a
  learning-rate schedule that is a pure function of the step (:func:`lr_factor`: linear warm-up, then
  constant or cosine decay) and optional gradient clipping;
* **data order**: the training rows are visited in epochs, each a permutation drawn from
  ``numpy.random.default_rng([seed, epoch])``; step ``s`` takes a fixed slice (:func:`batch_rows`), so the
  order needs no saved state and a resumed run sees exactly the batches the uninterrupted run saw;
* **checkpoints** (:mod:`stylerig.training.checkpoint`): every ``checkpoint_every`` steps, at the end,
  and on Ctrl-C; model + optimizer + step + RNG states + elapsed time, atomically;
* **exact resume**: with ``resume=True`` and a checkpoint in ``out_dir`` the run continues from it; on a
  CPU the final weights are bitwise equal to an uninterrupted run's (tested);
* **Ctrl-C** (SIGINT, and SIGTERM under torchrun): the current step finishes, a checkpoint is written,
  :meth:`Trainer.fit` returns with ``interrupted=True``; a second Ctrl-C aborts at once;
* **logs** (rank 0): ``log.jsonl`` (one JSON object per line: ``{"kind": "train" | "val", "step", ...}``;
  a resume drops the lines past the checkpoint) and TensorBoard events in ``out_dir/tb`` when the
  ``tensorboard`` package is installed (else a note); a progress callback (:class:`RichProgress`);
* **validation**: ``task.validate(model, step)`` on rank 0 every ``val_every`` steps and at the end;
* **torchrun / DDP**: under ``torchrun --nproc_per_node K`` the model is wrapped in
  DistributedDataParallel (gloo on CPU, nccl on CUDA); the global ``batch`` is split evenly over the ranks
  (rank r takes the r-th slice of each step's rows), gradients are averaged, rank 0 writes every file.

Using it (a sketch of what :func:`stylerig.training.dfr.fit_dfr` does)::

    class MyTask:
        def loss(self, model, rows, step, rng):      # rows: int64 numpy [b] training-row indices
            x = load(rows).to(device)                 # this rank's share of the step's batch
            loss = ((model(x) - target) ** 2).mean()
            return loss, {"mse": float(loss)}         # scalar to backward, numbers to log

        def validate(self, model, step):              # rank 0 only, under torch.no_grad()
            return {"val_mse": ...}

    dist = Distributed(device)
    trainer = Trainer(model, MyTask(), train_rows, TrainerConfig(steps=1000, batch=32, lr=1e-3),
                      out_dir, dist=dist, config={"what": "my-net"})
    result = trainer.fit(resume=True, progress=RichProgress("training"))

The task gets the (possibly DDP-wrapped) model in ``loss`` and the plain module in ``validate``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from stylerig.errors import InputError
from stylerig.training.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from stylerig.training.distributed import Distributed

__all__ = [
    "CHECKPOINT",
    "LOG",
    "ProgressFn",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "TrainerConfig",
    "batch_rows",
    "lr_factor",
]

#: File names inside the output folder.
CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"

#: ``progress(step, total_steps, record)``: called on rank 0 after every step (``record`` holds the
#: step's logged numbers, or is empty between log steps).
ProgressFn = Callable[[int, int, Mapping[str, float]], None]


class TrainTask(Protocol):
    """What a network's recipe gives the trainer."""

    def loss(
        self, model: torch.nn.Module, rows: np.ndarray, step: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, Mapping[str, float]]:
        """The scalar loss of one step on ``rows`` (int64 [b], this rank's share) and numbers to log.

        ``model`` may be DDP-wrapped (call it, don't reach into it); ``rng`` is the trainer's CPU
        generator (saved in checkpoints: draw random numbers from it to keep resumes exact).
        """
        ...

    def validate(self, model: torch.nn.Module, step: int) -> Mapping[str, float]:
        """Held-out numbers (rank 0 only, under ``torch.no_grad()``; ``model`` is the plain module)."""
        ...


@dataclass
class TrainerConfig:
    """Settings of the loop (stored in every checkpoint).

    ``steps``, ``log_every``, ``val_every`` and ``checkpoint_every`` may change when a run is resumed
    (more steps continue it; note that a cosine schedule then stretches); the rest must not.
    """

    steps: int  # total optimizer steps
    batch: int  # global batch (all ranks together)
    lr: float  # peak learning rate
    seed: int = 0  # data order and the task's RNG
    warmup: int = 0  # steps of linear learning-rate warm-up from 0
    # A second linear warm-up of ``rewarm`` steps from step ``rewarm_at`` on (0 = none): Adam's step does
    # not scale with a loss weight, so a loss term switched on late (DFR's photometric term) moves the
    # parameters only it reaches by several learning rates per step at first; ramping its weight does not
    # help, ramping the learning rate does.
    rewarm_at: int = 0
    rewarm: int = 0
    schedule: str = "cosine"  # "constant" | "cosine" (decay to min_lr_ratio * lr at the last step)
    min_lr_ratio: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    grad_clip: float = 0.0  # max global gradient norm (0 = no clipping)
    log_every: int = 25
    val_every: int = 0  # 0 = validate only at the end
    checkpoint_every: int = 500  # 0 = only at the end and on Ctrl-C
    # Adam's fused kernel (one pass over all parameters; CPU and CUDA) instead of the per-tensor loop: the
    # same update up to rounding, and the same state, so it may differ between the parts of a resumed run.
    # On the built-in world's mode-all rig (5.5 M parameters, 2 CPU threads) one step of the optimizer
    # takes 2.6 ms instead of 24 (docs/rignet.md, session 16).
    fused: bool = True

    #: Fields that may differ between the parts of a resumed run.
    FREE: ClassVar[tuple[str, ...]] = ("steps", "log_every", "val_every", "checkpoint_every", "fused")

    def check(self) -> None:
        """Raise :class:`InputError` for values that cannot train."""
        if self.steps < 1 or self.batch < 1:
            raise InputError(f"steps and batch must be >= 1 (got steps={self.steps}, batch={self.batch})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"the learning rate must be a positive number, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"unknown schedule {self.schedule!r}", hint="use constant or cosine")
        if self.rewarm < 0 or self.rewarm_at < 0:
            raise InputError(f"rewarm and rewarm_at must be >= 0 (got {self.rewarm}, {self.rewarm_at})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def lr_factor(step: int, cfg: TrainerConfig) -> float:
    """Learning-rate multiplier of step ``step`` (0-based): warm-up, then constant or cosine decay; times
    the second warm-up (``rewarm_at``, ``rewarm``) where it runs."""
    second = 1.0
    if cfg.rewarm > 0 and cfg.rewarm_at <= step < cfg.rewarm_at + cfg.rewarm:
        second = (step - cfg.rewarm_at + 1) / cfg.rewarm
    if cfg.warmup > 0 and step < cfg.warmup:
        return second * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return second
    span = max(cfg.steps - cfg.warmup - 1, 1)
    t = min(max(step - cfg.warmup, 0) / span, 1.0)
    return second * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


def batch_rows(train_rows: np.ndarray, step: int, batch: int, seed: int) -> np.ndarray:
    """The global batch of step ``step``: int64 [batch] training rows (a pure function of its arguments).

    Epoch ``e`` visits ``train_rows`` in the order ``default_rng([seed, e]).permutation``; each epoch
    holds ``len(train_rows) // batch`` steps (the remainder of a permutation is skipped).
    """
    n = len(train_rows)
    per_epoch = n // batch
    if per_epoch < 1:
        raise InputError(
            f"the batch {batch} is larger than the {n} training rows", hint="use a smaller --batch"
        )
    epoch, k = divmod(int(step), per_epoch)
    perm = np.random.default_rng([int(seed), epoch]).permutation(n)
    return np.asarray(train_rows)[perm[k * batch : (k + 1) * batch]].astype(np.int64)


@dataclass(frozen=True)
class TrainResult:
    """How :meth:`Trainer.fit` ended.

    Attributes:
        step: steps done in total (over all resumed parts).
        interrupted: True when Ctrl-C stopped it (a checkpoint was saved).
        resumed_from: the step the run continued from (0 = fresh start).
        elapsed_s: training wall time over all parts, seconds.
        last: the last logged training record; validation: the last validation record.
        notes: things a person should know (TensorBoard missing, ...).
    """

    step: int
    interrupted: bool
    resumed_from: int
    elapsed_s: float
    last: dict[str, float]
    validation: dict[str, float]
    notes: tuple[str, ...] = ()


class _Logger:
    """log.jsonl (+ TensorBoard when installed), rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.path = out_dir / LOG
        self.tb: Any = None
        self.note: str | None = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():  # keep what the checkpoint covers, drop what it does not
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    if int(json.loads(line).get("step", 0)) <= resume_step:
                        kept.append(line)
            from stylerig.outputs import atomic_write

            atomic_write(self.path, ("\n".join(kept) + "\n" if kept else "").encode())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step)
        except ImportError:
            self.note = "TensorBoard is not installed (pip install tensorboard); logging to log.jsonl only"

    def write(self, kind: str, step: int, record: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "step": step, **record}) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class _StopFlag:
    """Ctrl-C handling: the first SIGINT (or SIGTERM) sets a flag, the second raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        sigs = [signal.SIGINT] + ([signal.SIGTERM] if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else [])
        for s in sigs:
            self._old[s] = signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)


class Trainer:
    """Train ``model`` on ``task`` (see the module docstring).

    Args:
        model: the network (moved to ``dist.device``); its ``state_dict`` is what checkpoints hold.
        task: the :class:`TrainTask`.
        train_rows: int64 [N_train] indices of the training rows (the validation rows are the task's).
        config: :class:`TrainerConfig`.
        out_dir: where ``checkpoint.safetensors``, ``log.jsonl`` and ``tb/`` go.
        dist: the :class:`~stylerig.training.distributed.Distributed` of this run (default: one process
            on the CPU).
        run_config: the task's settings, stored in checkpoints next to the trainer's; a resume refuses
            a checkpoint whose stored task settings differ (keys in ``free_keys`` may differ).
        free_keys: task settings that may change between resumed parts.
        added_task_keys: task settings added after checkpoints were already written, with the value
            an older checkpoint (which lacks them) stands for.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: TrainTask,
        train_rows: np.ndarray,
        config: TrainerConfig,
        out_dir: str | os.PathLike[str],
        *,
        dist: Distributed | None = None,
        run_config: Mapping[str, Any] | None = None,
        free_keys: tuple[str, ...] = (),
        added_task_keys: Mapping[str, Any] | None = None,
    ) -> None:
        config.check()
        self.dist = dist or Distributed(torch.device("cpu"))
        self.local_batch = self.dist.check_batch(config.batch)
        if len(train_rows) < config.batch:
            raise InputError(
                f"the batch {config.batch} is larger than the {len(train_rows)} training rows",
                hint="use a smaller --batch or a larger sample set",
            )
        self.model = model.to(self.dist.device)
        self.task = task
        self.train_rows = np.asarray(train_rows, dtype=np.int64)
        self.config = config
        self.out_dir = Path(out_dir)
        self.run_config = dict(run_config or {})
        self.free_keys = tuple(free_keys)
        self.added_task_keys = dict(added_task_keys or {})
        self.rng = torch.Generator().manual_seed(int(config.seed))
        opt_cls = torch.optim.AdamW if config.weight_decay > 0 else torch.optim.Adam
        weights = list(self.model.parameters())
        fused = config.fused and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in weights
        )
        self.optimizer = opt_cls(
            weights,
            lr=config.lr,
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
            fused=fused or None,
        )

    # ------------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def _stored_config(self) -> dict[str, Any]:
        return {"trainer": self.config.to_dict(), "task": self.run_config}

    def _check_resumable(self, saved: Mapping[str, Any]) -> None:
        now = self._stored_config()
        diffs = []
        # Settings added later read as their defaults in older checkpoints (rewarm_at, rewarm: 0 = off).
        # A task adds its own (``added_task_keys``), e.g. fit-dfr's light_model: "none" before it existed.
        added = {"trainer": {"rewarm_at": 0, "rewarm": 0}, "task": dict(self.added_task_keys)}
        for part, free in (("trainer", TrainerConfig.FREE), ("task", self.free_keys)):
            a = {k: v for k, v in (added[part] | dict(saved.get(part, {}))).items() if k not in free}
            b = {k: v for k, v in json.loads(json.dumps(now[part], default=str)).items() if k not in free}
            diffs += [
                f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
            ]
        if diffs:
            raise InputError(
                f"{self.checkpoint_path} was written with other settings ({'; '.join(diffs[:4])})",
                hint="resume with the same settings, or pass --no-resume (or another --out) to start afresh",
            )

    def save(self, step: int, elapsed: float) -> None:
        """Write the checkpoint (rank 0)."""
        if self.dist.is_main:
            save_checkpoint(
                self.checkpoint_path,
                self.model,
                self.optimizer,
                self.rng,
                step=step,
                elapsed_s=elapsed,
                config=self._stored_config(),
            )

    def _validate(self, step: int) -> dict[str, float]:
        record: dict[str, float] = {}
        if self.dist.is_main:
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                record = {k: float(v) for k, v in self.task.validate(self.model, step).items()}
            self.model.train(was)
        self.dist.barrier()
        return record

    # ------------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = True, progress: ProgressFn | None = None) -> TrainResult:
        """Run (or continue) the loop until ``config.steps``; see the module docstring.

        Args:
            resume: continue from ``out_dir/checkpoint.safetensors`` when it exists (else start afresh
                and overwrite it).
            progress: rank-0 callback after every step (see :data:`ProgressFn`).

        Returns:
            :class:`TrainResult`.

        Raises:
            InputError: a checkpoint written with other settings. AssetError: an unreadable checkpoint.
        """
        cfg, dist = self.config, self.dist
        if dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        step, elapsed = 0, 0.0
        have = resume and self.checkpoint_path.is_file()
        if have:
            self._check_resumable(read_checkpoint_config(self.checkpoint_path))
            state = load_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.rng)
            step, elapsed = state.step, state.elapsed_s
        resumed_from = step
        logger = _Logger(self.out_dir, dist.is_main, step if have else None)
        notes = (logger.note,) if logger.note else ()
        net = dist.wrap(self.model)
        self.model.train()
        last: dict[str, float] = {}
        validation: dict[str, float] = {}
        stop = _StopFlag()
        interrupted = False
        window_t, window_steps = 0.0, 0
        try:
            with stop.installed():
                while step < cfg.steps:
                    if dist.any(stop.set):
                        interrupted = True
                        break
                    t0 = time.perf_counter()
                    lr = cfg.lr * lr_factor(step, cfg)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    rows = batch_rows(self.train_rows, step, cfg.batch, cfg.seed)
                    mine = rows[dist.rank * self.local_batch : (dist.rank + 1) * self.local_batch]
                    loss, parts = self.task.loss(net, mine, step, self.rng)
                    if not torch.isfinite(loss):
                        raise InputError(
                            f"the loss became {float(loss)} at step {step}",
                            hint="lower --lr; the last checkpoint is still in the output folder",
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = None
                    if cfg.grad_clip > 0:
                        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    step += 1
                    dt = time.perf_counter() - t0
                    elapsed += dt
                    window_t += dt
                    window_steps += 1
                    record: dict[str, float] = {}
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        record = {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}
                        if grad_norm is not None:
                            record["grad_norm"] = float(grad_norm)  # before clipping
                        record.update(lr=lr, elapsed_s=round(elapsed, 3), s_per_step=window_t / window_steps)
                        window_t, window_steps = 0.0, 0
                        last = record
                        logger.write("train", step, record)
                    if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                        validation = self._validate(step)
                        logger.write("val", step, validation)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                        self.save(step, elapsed)
                    if progress is not None and dist.is_main:
                        progress(step, cfg.steps, record)
            self.save(step, elapsed)
            if not interrupted:
                validation = self._validate(step)
                logger.write("val", step, validation)
        finally:
            logger.close()
        dist.barrier()
        return TrainResult(
            step=step,
            interrupted=interrupted,
            resumed_from=resumed_from,
            elapsed_s=elapsed,
            last=last,
            validation=validation,
            notes=notes,
        )
