"""Writing outputs a person opens: atomic files, PNGs, JSON, and the ``run.json`` of every output folder.

Every writer goes through :func:`atomic_write`: the bytes land in a temporary file beside the target
and are renamed over it, so an interrupted run or a full disk never leaves a half-written file where a
good one was.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stylerig.errors import AssetError, InputError

__all__ = [
    "atomic_write",
    "claim_output_dir",
    "run_info",
    "save_png",
    "staged_outputs",
    "write_json",
    "write_run_json",
]


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


def claim_output_dir(out_dir: str | os.PathLike[str], command: str, *, accept: Iterable[str] = ()) -> Path:
    """Check, before anything is written, that ``out_dir`` may take ``command``'s outputs.

    A folder may be used when it does not exist yet, or when it holds no ``run.json`` and no sample set,
    or when its ``run.json`` was written by ``command`` itself (a rerun or a resume) or by one of
    ``accept``. Each command writes a folder of its own: a DFR trained into a rig's folder would
    overwrite the rig's ``checkpoint.safetensors``, ``metrics.json`` and ``run.json``.

    Args:
        out_dir: the output folder. command: the ``command`` its ``run.json`` records (``fit-dfr`` ...).
        accept: other commands whose folders this one may write into.

    Returns:
        ``Path(out_dir)``.

    Raises:
        InputError: ``out_dir`` is a file, or holds another command's outputs (or a sample set).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"the output folder {out} is a file", hint="pass a folder path to --out")
    run = out / "run.json"
    other: str | None = None
    try:
        other = str(json.loads(run.read_text()).get("command"))
    except FileNotFoundError:  # (also when another process removes it while we look)
        if (out / "manifest.json").is_file() and (out / "ws.npy").exists():
            other = "sample"
    except (OSError, ValueError, AttributeError):
        other = "an unreadable run.json"
    if other is not None and other != command and other not in set(accept):
        what = other if other.startswith("an ") else f"`{_typed(other)}`"
        raise InputError(
            f"{out} already holds the outputs of {what}; `{_typed(command)}` would overwrite them",
            hint="choose another --out folder (every command writes a folder of its own)",
        )
    return out


#: How a person types the commands whose ``run.json`` records a module name.
_TYPED = {
    "stylerig.worlds.estimator_train": "python -m stylerig.worlds.estimator_train",
    "stylerig.worlds.train": "stylerig world build",
}


def _typed(command: str) -> str:
    """The command line of a ``run.json`` ``command`` (``fit-dfr`` -> ``stylerig fit-dfr``)."""
    return _TYPED.get(command, f"stylerig {command}")


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a set of files as one: all of them, or (on any error) none.

    Yields a staging folder inside ``out_dir``; write every file of the set there (any writer of this
    module). When the block finishes, each file is renamed into ``out_dir`` (renames need no disk space,
    so a full disk cannot stop them halfway); when it raises, the staging folder is removed and
    ``out_dir`` keeps the previous run's files, all of them. Without this, a full disk half-way through
    a set leaves a new ``edited.png`` beside an old ``edit.json``, each file whole but the set mixed.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with staged_outputs(d) as stage:
        ...     _ = write_json(stage / "a.json", {"x": 1})
        >>> sorted(p.name for p in d.iterdir())
        ['a.json']

    Raises:
        AssetError: ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    hint = "check that the folder is writable and the disk has free space"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob(".staging-*"):  # left by a killed run (an hour old: not a live one's)
            if old.is_dir() and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as e:
        raise AssetError(f"cannot write into {out}: {e.strerror or e}", hint=hint) from e
    try:
        yield stage
        try:
            for f in sorted(p for p in stage.rglob("*") if p.is_file()):
                dest = out / f.relative_to(stage)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
        except OSError as e:
            raise AssetError(f"cannot move the new files into {out}: {e.strerror or e}", hint=hint) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
