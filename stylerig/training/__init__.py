"""The trainer shared by DFR and RigNet, and the DFR recipe (see :mod:`stylerig.training.trainer`).

* :mod:`stylerig.training.trainer` -- :class:`Trainer`, :class:`TrainerConfig`, :class:`TrainTask`;
* :mod:`stylerig.training.checkpoint` -- the exact-resume checkpoint (safetensors, no pickle);
* :mod:`stylerig.training.distributed` -- torchrun / DDP (gloo on CPU, nccl on CUDA);
* :mod:`stylerig.training.progress` -- :class:`RichProgress`, a progress bar for the trainer;
* :mod:`stylerig.training.dfr` -- :func:`fit_dfr`, the recipe behind ``stylerig fit-dfr``.
"""

from __future__ import annotations

from stylerig.training.distributed import Distributed
from stylerig.training.progress import RichProgress
from stylerig.training.trainer import (
    CHECKPOINT,
    LOG,
    ProgressFn,
    Trainer,
    TrainerConfig,
    TrainResult,
    TrainTask,
    batch_rows,
    lr_factor,
)

__all__ = [
    "CHECKPOINT",
    "LOG",
    "Distributed",
    "ProgressFn",
    "RichProgress",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "TrainerConfig",
    "batch_rows",
    "lr_factor",
]
