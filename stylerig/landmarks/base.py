"""The detector contract shared by every adapter, and the checks that enforce it.

Convention (the one of :mod:`stylerig.data`): landmarks are the 68 iBUG points in pixels of the image
they were found in, x to the right, y down, origin at the top-left corner of the top-left pixel, so the
centre of pixel (row i, column j) is (j + 0.5, i + 0.5). Rows where no face was found have ``found =
False`` and NaN landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stylerig.data import NUM_LANDMARKS, LandmarkDetector
from stylerig.errors import InputError

__all__ = ["Availability", "LandmarkDetector", "check_detections", "check_images"]


@dataclass(frozen=True)
class Availability:
    """Whether a detector can run on this machine, found without importing it.

    Attributes:
        name: the detector's name ("face-alignment", "dlib", "world").
        ok: it can be constructed here (package importable and weights present).
        detail: what was found (paths, versions) or what is missing.
        fix: the exact step that makes it available ("" when ``ok``).
        missing_files: weight files that are absent (the package itself is there).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    missing_files: tuple[str, ...] = ()


def check_images(images: Any) -> np.ndarray:
    """Check a detector's input and return it as a C-contiguous array.

    Args:
        images: uint8 [N, R, R, 3] RGB, rows top to bottom (a sample set's ``images``).

    Returns:
        the same images, uint8 [N, R, R, 3], C-contiguous.

    Raises:
        InputError: another dtype, rank, channel count, or a non-square / empty image.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(
            f"a landmark detector takes uint8 images [N, R, R, 3]; got {arr.dtype} {tuple(arr.shape)}",
            hint="pass RGB images as stored in a sample set (stylerig.viz.to_uint8 converts [-1, 1] floats)",
        )
    if arr.shape[1] != arr.shape[2] or arr.shape[1] < 1:
        raise InputError(f"landmark detectors take square images; got {arr.shape[1]}x{arr.shape[2]}")
    return np.ascontiguousarray(arr)


def check_detections(landmarks: Any, found: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a detector's output against the contract and normalise its dtypes.

    Args:
        landmarks: [n, 68, 2] pixel coordinates (convention in the module docstring).
        found: [n] booleans.
        n: the number of images the detector was given.
        what: the detector's name, for the message.

    Returns:
        (float32 [n, 68, 2] with NaN in rows not found, bool [n]).

    Raises:
        InputError: a shape mismatch, or a found row with non-finite landmarks.
    """
    lms = np.asarray(landmarks, dtype=np.float32)
    ok = np.asarray(found, dtype=bool)
    if lms.shape != (n, NUM_LANDMARKS, 2) or ok.shape != (n,):
        raise InputError(
            f"{what} returned landmarks {tuple(lms.shape)} and found {tuple(ok.shape)}; "
            f"expected ({n}, {NUM_LANDMARKS}, 2) and ({n},)"
        )
    bad = ok & ~np.isfinite(lms).all(axis=(1, 2))
    if bad.any():
        raise InputError(f"{what} marked {int(bad.sum())} row(s) found but gave non-finite landmarks")
    lms = lms.copy()
    lms[~ok] = np.nan
    return lms, ok
