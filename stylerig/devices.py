"""Device selection shared by every command (``--device auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

from stylerig.errors import BackendUnavailableError, InputError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device when available, else the CPU; other specs are checked.

    Raises:
        InputError: an unparsable spec. BackendUnavailableError: CUDA requested but not available.
    """
    if isinstance(spec, torch.device):
        dev = spec
    elif spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError) as e:
            raise InputError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {spec} requested but CUDA is not available here",
                hint="use --device cpu (or auto); `stylerig doctor` shows what this machine has",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"no CUDA device {dev.index}: {torch.cuda.device_count()} present")
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {spec!r}", hint="use auto, cpu, cuda or cuda:N")
    return dev
