"""Writing outputs a person opens: atomic files, PNGs, JSON, and the ``run.json`` of every output folder.

Every writer goes through :func:`atomic_write`: the bytes land in a temporary file beside the target
and are renamed over it, so an interrupted run or a full disk never leaves a half-written file where a
good one was.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stylerig.errors import AssetError

__all__ = ["atomic_write", "run_info", "save_png", "write_json", "write_run_json"]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (creating parent folders).

    Raises:
        AssetError: the folder cannot be created or written (permissions, full disk); the previous file,
            if any, is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise AssetError(
            f"cannot write {path}: {e.strerror or e}",
            hint="check that the folder is writable and the disk has free space",
        ) from e
    return path


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Save a uint8 image [H, W, 3] (or [H, W]) as PNG, atomically."""
    import imageio.v3 as iio

    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"save_png expects uint8 [H, W(, 3)], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    iio.imwrite(buf, image, extension=".png")
    return atomic_write(path, buf.getvalue())


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (UTF-8), atomically."""
    return atomic_write(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def run_info(
    command: str,
    arguments: Mapping[str, Any],
    *,
    seed: int | None = None,
    assets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record every output folder carries: command, arguments, versions, seed, assets and licences."""
    import torch

    from stylerig import __version__

    return {
        "command": command,
        "argv": sys.argv,
        "arguments": dict(arguments),
        "seed": seed,
        "assets": dict(assets or {}),
        "versions": {
            "stylerig": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "machine": {"platform": platform.platform(), "cuda": torch.cuda.is_available()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_run_json(
    out_dir: str | os.PathLike[str], command: str, arguments: Mapping[str, Any], **kw: Any
) -> Path:
    """Write ``run.json`` (see :func:`run_info`) into ``out_dir``."""
    return write_json(Path(out_dir) / "run.json", run_info(command, arguments, **kw))
