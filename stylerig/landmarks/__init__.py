"""68-point landmark detectors: one protocol, three adapters.

* :class:`~stylerig.data.LandmarkDetector` -- the protocol: a ``name`` and ``detector(images)`` with
  uint8 [N, R, R, 3] RGB images -> (float32 [N, 68, 2], bool [N] found);
* :class:`FaceAlignmentDetector` -- face-alignment's FAN (the ``landmarks`` extra; weights placed by hand);
* :class:`DlibDetector` -- dlib's shape predictor (the ``dlib`` extra);
* :class:`WorldLandmarks` -- the built-in world's exact landmarks, asked with seeds.

Convention (that of :mod:`stylerig.data`): iBUG-68 order, pixels of the image, x to the right, y down,
origin at the top-left corner of the top-left pixel (pixel centres at +0.5); NaN rows where no face was
found. Importing this package imports neither face_alignment nor dlib; the ``*_status`` functions find
packages and weights without importing them, and constructing a detector never downloads anything.

Example:
    >>> from stylerig.landmarks import load_detector
    >>> det = load_detector("auto")  # doctest: +SKIP
    >>> lms, found = det(images)  # images: uint8 [N, R, R, 3]  # doctest: +SKIP
"""

from __future__ import annotations

from stylerig.data import LandmarkDetector
from stylerig.errors import BackendUnavailableError, InputError
from stylerig.landmarks.base import Availability, check_detections, check_images
from stylerig.landmarks.dlib_shape import PREDICTOR_FILE, DlibDetector, dlib_predictor_path, dlib_status
from stylerig.landmarks.fan import (
    FAN_FILES,
    FaceAlignmentDetector,
    face_alignment_status,
    face_alignment_weights_dir,
)
from stylerig.landmarks.world import WorldLandmarks, world_status

from stylerig.landmarks import dlib_shape as _dlib_shape  # isort: skip
from stylerig.landmarks import fan as _fan  # isort: skip

__all__ = [
    "DETECTORS",
    "FAN_FILES",
    "PREDICTOR_FILE",
    "Availability",
    "DlibDetector",
    "FaceAlignmentDetector",
    "LandmarkDetector",
    "WorldLandmarks",
    "best_detector",
    "check_detections",
    "check_images",
    "detector_status",
    "dlib_predictor_path",
    "dlib_status",
    "face_alignment_status",
    "face_alignment_weights_dir",
    "load_detector",
    "world_status",
]

#: Image detectors by name, in the order ``auto`` prefers them.
DETECTORS = ("face-alignment", "dlib")


def detector_status(name: str) -> Availability:
    """Whether the image detector ``name`` ('face-alignment' or 'dlib') can run here (imports neither).

    Raises:
        InputError: an unknown name.
    """
    if name == "face-alignment":
        return _fan.face_alignment_status()
    if name == "dlib":
        return _dlib_shape.dlib_status()
    raise InputError(f"unknown landmark detector {name!r}", hint=f"use one of {', '.join(DETECTORS)}")


def best_detector() -> tuple[str | None, list[Availability]]:
    """The first available detector of :data:`DETECTORS` (face-alignment with its weights, then dlib).

    Returns:
        (its name or None, the status of every detector in :data:`DETECTORS` order).
    """
    statuses = [detector_status(n) for n in DETECTORS]
    chosen = next((s.name for s in statuses if s.ok), None)
    return chosen, statuses


def load_detector(name: str = "auto", *, device: str = "cpu") -> LandmarkDetector:
    """Construct an image detector by name (never downloads).

    Args:
        name: 'face-alignment', 'dlib', or 'auto' (the first available, see :func:`best_detector`).
        device: where face-alignment runs ('cpu', 'cuda', 'cuda:N', 'auto'); dlib runs on the CPU.

    Returns:
        a :class:`~stylerig.data.LandmarkDetector`.

    Raises:
        BackendUnavailableError: the package (or, for 'auto', every detector) is not available.
        AssetError: the package is there but its weights are not (the message names files and folder).
        InputError: an unknown name.
    """
    key = name.strip().lower()
    if key == "auto":
        chosen, statuses = best_detector()
        if chosen is None:
            raise BackendUnavailableError(
                "no landmark detector is available: " + "; ".join(f"{s.name}: {s.detail}" for s in statuses),
                hint=" or ".join(s.fix for s in statuses if s.fix),
            )
        key = chosen
    if key == "face-alignment":
        return FaceAlignmentDetector(device=device)
    if key == "dlib":
        return DlibDetector()
    raise InputError(f"unknown landmark detector {name!r}", hint=f"use one of auto, {', '.join(DETECTORS)}")
