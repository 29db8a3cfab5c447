"""The training checkpoint: everything an exact resume needs, in one safetensors file (no pickle).

Layout of ``checkpoint.safetensors`` (written atomically, replaced at every save):

* tensors ``model.<name>``: the model's ``state_dict()`` (parameters and buffers);
* tensors ``optim.<param index>.<key>``: the optimizer's per-parameter state (Adam's ``exp_avg``,
  ``exp_avg_sq``, ``step``...); non-tensor state values go to the metadata;
* tensors ``rng.torch`` (the global CPU generator), ``rng.task`` (the trainer's own
  :class:`torch.Generator` handed to the task) and ``rng.cuda.<i>`` (when CUDA is in use);
* metadata (strings): ``format`` = :data:`FORMAT`, ``version``, ``step``, ``elapsed_s``,
  ``optimizer`` (JSON: param groups and scalar state), ``config`` (JSON: trainer + task settings).

The data order needs no state: the rows of step ``s`` are a pure function of (seed, s)
(:func:`stylerig.training.trainer.batch_rows`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stylerig.errors import AssetError
from stylerig.tensorfile import load_tensors, save_tensors

__all__ = ["FORMAT", "TrainState", "load_checkpoint", "read_checkpoint_config", "save_checkpoint"]

FORMAT = "stylerig.train-checkpoint"
VERSION = 1
_HINT = "delete it (or pass --no-resume) to start the run afresh"


@dataclass
class TrainState:
    """What a checkpoint restores besides the model and optimizer (which are restored in place)."""

    step: int
    elapsed_s: float
    config: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task_rng: torch.Generator,
    *,
    step: int,
    elapsed_s: float,
    config: dict[str, Any],
) -> Path:
    """Write a training checkpoint (see the module docstring) atomically; returns its path."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.task"] = task_rng.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "step": str(int(step)),
        "elapsed_s": repr(float(elapsed_s)),
        "optimizer": json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}),
        "config": json.dumps(config, sort_keys=True, default=str),
    }
    return save_tensors(path, tensors, meta)


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config`` stored in a checkpoint (to compare with a resume's settings before loading)."""
    _, meta = _read(path)
    return json.loads(meta["config"])


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = load_tensors(path, what="stylerig training checkpoint", hint=_HINT)
    if meta.get("format") != FORMAT:
        raise AssetError(f"{path} is not a stylerig training checkpoint", hint=_HINT)
    if meta.get("version") != str(VERSION):
        raise AssetError(
            f"{path} has checkpoint version {meta.get('version')!r}; expected {VERSION}", hint=_HINT
        )
    return tensors, meta


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task_rng: torch.Generator,
) -> TrainState:
    """Restore ``model``, ``optimizer``, the global torch RNG and ``task_rng`` in place from ``path``.

    Raises:
        AssetError: missing, corrupt or wrong-kind file, or one whose tensors do not fit ``model``.
    """
    tensors, meta = _read(path)
    try:
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(model_state, strict=True)
        opt_meta = json.loads(meta["optimizer"])
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for key, value in opt_meta["scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
        step, elapsed = int(meta["step"]), float(meta["elapsed_s"])
        config = json.loads(meta["config"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise AssetError(
            f"{path} does not fit this run ({type(e).__name__}: {str(e).splitlines()[0]})", hint=_HINT
        ) from e
    torch.set_rng_state(tensors["rng.torch"])
    task_rng.set_state(tensors["rng.task"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return TrainState(step=step, elapsed_s=elapsed, config=config)
