"""Tensors + JSON metadata in one safetensors file: the project's checkpoint container (no pickle).

Every model the project writes (face models, generators, and later DFR and RigNet) goes through
:func:`save_tensors` (atomic: temporary file + rename) and :func:`load_tensors` (one
:class:`~stylerig.errors.AssetError` for a missing, truncated or corrupt file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from stylerig.errors import AssetError
from stylerig.outputs import atomic_write

__all__ = ["load_tensors", "save_tensors"]


def save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write ``tensors`` (moved to CPU, made contiguous) and string ``metadata`` to ``path`` atomically."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    return atomic_write(path, data)


def load_tensors(
    path: str | os.PathLike[str], *, what: str, hint: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file (on CPU).

    Args:
        path: the file.
        what: how error messages name the expected content ("stylerig generator").
        hint: how to fix a bad file.

    Raises:
        AssetError: the file is missing, truncated or not safetensors.
    """
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{what} file not found: {path}", hint=hint)
    try:
        raw = path.read_bytes()
        tensors = load(raw)
        # The header is an 8-byte little-endian length followed by JSON; metadata is "__metadata__".
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises several types for corrupt files
        raise AssetError(f"{path} is not a readable {what} ({type(e).__name__}: {e})", hint=hint) from e
    return tensors, dict(meta)
