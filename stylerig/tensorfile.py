"""Tensors + JSON metadata in one safetensors file: the project's checkpoint container (no pickle).

Every model the project writes (face models, generators, and later DFR and RigNet) goes through
:func:`save_tensors` (atomic: temporary file + rename) and :func:`load_tensors` (one
:class:`~stylerig.errors.AssetError` for a missing, truncated or corrupt file).

Arrays a person passes in (a W+ code, an expression or light vector) are ``.npy`` files read by
:func:`read_npy`: numbers only, finite, one clear error for anything else.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from stylerig.errors import AssetError, InputError
from stylerig.outputs import atomic_write

__all__ = ["load_tensors", "looks_like_npy", "read_npy", "save_tensors"]

_NPY_MAGIC = b"\x93NUMPY"


def looks_like_npy(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is named ``.npy`` / ``.npz`` or starts like a numpy file (``.npy`` or zip)."""
    p = Path(path)
    if p.suffix.lower() in (".npy", ".npz"):
        return True
    try:
        with p.open("rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError:
        return False
    return head == _NPY_MAGIC or head.startswith(b"PK")


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


def read_npy(
    path: str | os.PathLike[str], *, what: str, hint: str, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """Read the one array of a ``.npy`` file as finite real numbers.

    Args:
        path: the file (``numpy.save``'s format; no pickles, no ``.npz`` archives).
        what: how error messages name the content ("latent", "expression").
        hint: how to fix a bad file (one line).
        dtype: the float type to return.

    Returns:
        The array, any shape (as stored), converted to ``dtype``; every value finite.

    Raises:
        AssetError: the file is missing, empty, truncated, or not a ``.npy`` file (an ``.npz``
            archive, a pickle, text).
        InputError: the array holds no real numbers (strings, objects, complex, records, booleans) or
            has NaN or infinite values.
    """
    p = Path(path)
    if not p.is_file():
        raise AssetError(f"{what} file {p} not found", hint=hint)
    try:
        with p.open("rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if not head:
                raise AssetError(f"{what} file {p} is empty", hint=hint)
            if head.startswith(b"PK"):
                raise AssetError(f"{what} file {p} is an .npz archive, not a .npy array", hint=hint)
            if head != _NPY_MAGIC:
                raise AssetError(f"{what} file {p} is not a .npy file", hint=hint)
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except AssetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise AssetError(
            f"{what} file {p} is not a readable .npy array ({type(e).__name__}: {detail})", hint=hint
        ) from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        kinds = {
            "U": "text",
            "S": "byte-string",
            "O": "Python-object",
            "c": "complex",
            "b": "boolean",
            "V": "record",
        }
        kind = (
            kinds.get(arr.dtype.kind, str(arr.dtype)) if isinstance(arr, np.ndarray) else type(arr).__name__
        )
        raise InputError(f"{what} file {p} holds {kind} values, not real numbers", hint=hint)
    with np.errstate(over="ignore"):
        out = arr.astype(dtype)
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise InputError(
            f"{what} file {p} has {bad} NaN or infinite value{'s' if bad != 1 else ''} (of {out.size})",
            hint=hint,
        )
    return out
