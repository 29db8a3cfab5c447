"""dlib's HOG frontal face detector + 68-point shape predictor as a :class:`~stylerig.data.LandmarkDetector`.

The ``dlib`` extra installs ``dlib-bin`` (prebuilt dlib) and ``face-recognition-models``, which ships
``models/shape_predictor_68_face_landmarks.dat`` (~100 MB). The file is located from the distribution's
file list (``importlib.metadata``), falling back to the package folder from ``importlib.util.find_spec``;
``face_recognition_models`` itself is never imported (its ``__init__`` needs pkg_resources).

Licences: dlib is Boost-licensed; the 68-point predictor is trained on iBUG 300-W, whose images are
for research (non-commercial) use only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np

from stylerig.data import NUM_LANDMARKS
from stylerig.errors import AssetError, BackendUnavailableError, InputError
from stylerig.landmarks.base import Availability, check_detections, check_images

__all__ = ["PREDICTOR_FILE", "DlibDetector", "dlib_predictor_path", "dlib_status"]

#: The predictor's file name inside face-recognition-models (``face_recognition_models/models/``).
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_DIST = "face-recognition-models"
_PACKAGE = "face_recognition_models"
_INSTALL = "pip install 'stylerig[dlib]'"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def dlib_predictor_path() -> Path | None:
    """Where face-recognition-models keeps the 68-point predictor, or None when it is not installed or the
    file is absent. Found without importing ``face_recognition_models``."""
    return dlib_model_file(PREDICTOR_FILE)


def dlib_model_file(name: str) -> Path | None:
    """The path of one of face-recognition-models' files (e.g. the predictor or the recognition ResNet),
    or None: from the distribution's file list, then the package folder of ``importlib.util.find_spec``;
    the package itself is never imported (its ``__init__`` needs pkg_resources)."""
    try:
        files = importlib.metadata.distribution(_DIST).files or []
        for f in files:
            if f.name == name:
                path = Path(str(f.locate()))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    return None


def dlib_status() -> Availability:
    """Whether :class:`DlibDetector` can start here (dlib importable, predictor file found); imports
    neither dlib nor face_recognition_models."""
    if not _has("dlib"):
        return Availability("dlib", False, "not installed", _INSTALL)
    path = dlib_predictor_path()
    if path is None:
        return Availability(
            "dlib",
            False,
            f"dlib installed, but {PREDICTOR_FILE} not found (face-recognition-models not installed)",
            "pip install face-recognition-models (ships the predictor, ~100 MB)",
            (PREDICTOR_FILE,),
        )
    return Availability("dlib", True, f"68-point predictor at {path} (iBUG 300-W: non-commercial)")


class DlibDetector:
    """dlib's frontal face detector and 68-point shape predictor; the largest face of each image is kept.

    Args:
        predictor_path: the ``shape_predictor_68_face_landmarks.dat`` file (default: the one shipped by
            face-recognition-models, :func:`dlib_predictor_path`).
        upsample: times the detector upsamples each image before looking (dlib's HOG detector finds
            faces of about 80 px and larger; each upsampling halves that, and costs 4x the time).

    Call: ``detector(images)`` with uint8 [N, R, R, 3] RGB images returns (float32 [N, 68, 2], bool
    [N]): iBUG-68 points in pixels of ``images`` (x right, y down, pixel centres at +0.5; NaN where no
    face was found) and whether a face was found. dlib gives integer pixel indices (pixel centres at
    integers); they are shifted by +0.5 to the convention of :mod:`stylerig.data`. Among several faces the
    one with the largest box is kept, ties broken by the detector's score.

    Raises:
        BackendUnavailableError: dlib not installed. AssetError: the predictor file missing or unreadable.
        InputError: ``upsample`` not in 0..4.
    """

    name = "dlib"

    def __init__(self, predictor_path: str | os.PathLike[str] | None = None, *, upsample: int = 1) -> None:
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 4:
            raise InputError(f"upsample must be an integer in 0..4, got {upsample!r}")
        if predictor_path is None:
            status = dlib_status()
            if not status.ok:
                kind = AssetError if status.missing_files else BackendUnavailableError
                raise kind(f"dlib landmark detector: {status.detail}", hint=status.fix)
            path = dlib_predictor_path()
        else:
            path = Path(predictor_path)
            if not path.is_file():
                raise AssetError(
                    f"dlib shape predictor not found: {path}",
                    hint=f"pass the path of {PREDICTOR_FILE}, or {_INSTALL} to use the shipped one",
                )
        try:
            import dlib
        except Exception as e:
            raise BackendUnavailableError(
                f"dlib failed to import ({type(e).__name__}: {e})", hint=_INSTALL
            ) from e
        assert path is not None
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as e:
            raise AssetError(
                f"{path} is not a dlib shape predictor ({e})",
                hint="pip install --force-reinstall face-recognition-models",
            ) from e
        self._detector = dlib.get_frontal_face_detector()
        self.predictor_path = path
        self.upsample = upsample

    def __repr__(self) -> str:
        return f"DlibDetector(predictor_path={str(self.predictor_path)!r}, upsample={self.upsample})"

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, R, R, 3] RGB -> (float32 [N, 68, 2] pixels, bool [N] found); see the class docstring."""
        imgs = check_images(images)
        n = len(imgs)
        lms = np.full((n, NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        for i in range(n):
            img = np.ascontiguousarray(imgs[i])
            rects, scores, _ = self._detector.run(img, self.upsample, 0.0)
            if len(rects) == 0:
                continue
            best = max(range(len(rects)), key=lambda k: (rects[k].area(), scores[k]))
            shape = self._predictor(img, rects[best])
            pts = [(shape.part(k).x, shape.part(k).y) for k in range(shape.num_parts)]
            if len(pts) != NUM_LANDMARKS:
                raise AssetError(
                    f"{self.predictor_path} predicts {len(pts)} points, not {NUM_LANDMARKS}",
                    hint=f"use {PREDICTOR_FILE}",
                )
            lms[i] = np.asarray(pts, dtype=np.float32) + 0.5
            found[i] = True
        return check_detections(lms, found, n, self.name)
