"""torchrun / DDP bookkeeping for the trainer: join the process group, pick the device, agree on flags.

Under ``torchrun --nproc_per_node K`` the environment holds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :class:`Distributed` joins the group with **gloo** on a CPU and
**nccl** on CUDA (each rank on ``cuda:LOCAL_RANK``). Without them it is a single process and every
collective is a no-op.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

from stylerig.errors import BackendUnavailableError, InputError

__all__ = ["Distributed"]

_TIMEOUT = datetime.timedelta(minutes=30)


class Distributed:
    """The process group of a training run (or a single process).

    Args:
        device: the resolved device spec (``torch.device``); under torchrun a plain ``cuda`` becomes
            ``cuda:LOCAL_RANK``.

    Attributes:
        rank, world_size, local_rank: ints (0, 1, 0 for a single process).
        device: the device this rank trains on.
        owned: True when this object created the process group (and :meth:`close` destroys it).
    """

    def __init__(self, device: torch.device) -> None:
        self.rank, self.world_size, self.local_rank, self.owned = 0, 1, 0, False
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        dist = torch.distributed
        if world > 1 or (dist.is_available() and dist.is_initialized()):
            if not dist.is_available():
                raise BackendUnavailableError("WORLD_SIZE > 1 but torch.distributed is not available here")
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", self.local_rank)
            if not dist.is_initialized():
                backend = "nccl" if device.type == "cuda" else "gloo"
                try:
                    if device.type == "cuda":
                        torch.cuda.set_device(device)
                    dist.init_process_group(
                        backend,
                        init_method="env://",
                        rank=int(os.environ["RANK"]),
                        world_size=world,
                        timeout=_TIMEOUT,
                    )
                except (KeyError, ValueError, RuntimeError) as e:
                    raise BackendUnavailableError(
                        f"cannot join the torchrun process group ({type(e).__name__}: {e})",
                        hint="launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT",
                    ) from e
                self.owned = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes files and prints)."""
        return self.rank == 0

    def check_batch(self, batch: int) -> int:
        """This rank's share of a global ``batch`` (which must divide evenly)."""
        if batch % self.world_size:
            raise InputError(
                f"the batch {batch} does not split evenly over {self.world_size} processes",
                hint=f"use a batch that is a multiple of {self.world_size}",
            )
        return batch // self.world_size

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` wrapped in DistributedDataParallel when there are several processes, else itself."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on some rank (a Ctrl-C seen by one rank stops all)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._coll_device)
        torch.distributed.all_reduce(t)
        return bool(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects only)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, device=self._coll_device)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.world_size > 1:
            if self.device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.device.index or 0])
            else:
                torch.distributed.barrier()

    @property
    def _coll_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def close(self) -> None:
        """Leave the process group if this object joined it."""
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owned = False
