"""face-alignment (FAN, Bulat & Tzimiropoulos 2017) as a :class:`~stylerig.data.LandmarkDetector`.

The ``landmarks`` extra installs ``face-alignment>=1.5``. Its weights are never downloaded here: the
package keeps them in torch hub's checkpoint folder (``torch.hub.get_dir()/checkpoints``, i.e.
``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) under the file names of
:data:`FAN_FILES`, and :class:`FaceAlignmentDetector` refuses to start unless both files are there. It
hands the face detector its file explicitly and resolves the landmark network's file itself, so
constructing it cannot start a download even if a file disappears in between.

Licences: the face-alignment code is BSD-3-Clause; the FAN and S3FD weights are trained on 300-W /
WIDER FACE data (research use). ``stylerig doctor`` reports what is found.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stylerig.data import NUM_LANDMARKS
from stylerig.errors import AssetError, BackendUnavailableError
from stylerig.landmarks.base import Availability, check_detections, check_images

__all__ = ["FAN_FILES", "FaceAlignmentDetector", "face_alignment_status", "face_alignment_weights_dir"]

#: The files face-alignment 1.5 loads for 2D landmarks with its default (SFD) face detector, and where
#: they come from: ``{file name: URL}``. Both go in :func:`face_alignment_weights_dir`.
FAN_FILES = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}
_LANDMARK_FILE, _DETECTOR_FILE = FAN_FILES
_MIN_VERSION = (1, 5)
_INSTALL = "pip install 'stylerig[landmarks]'"


def face_alignment_weights_dir() -> Path:
    """The folder face-alignment reads its weights from: ``torch.hub.get_dir()/checkpoints``.

    torch hub's folder follows ``torch.hub.set_dir``, then ``$TORCH_HOME/hub``, then
    ``$XDG_CACHE_HOME/torch/hub``, then ``~/.cache/torch/hub``.
    """
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _installed_version() -> str | None:
    """face-alignment's version string, or None when it is not importable (found without importing it)."""
    try:
        if importlib.util.find_spec("face_alignment") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version("face-alignment")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _fix_for(missing: list[str], folder: Path) -> str:
    urls = ", ".join(FAN_FILES[f] for f in missing)
    return f"on a machine with internet, download {urls} and copy {', '.join(missing)} into {folder}"


def face_alignment_status() -> Availability:
    """Whether :class:`FaceAlignmentDetector` can start here: package ≥ 1.5 installed, both weight files
    in :func:`face_alignment_weights_dir`. Imports neither face_alignment nor its dependencies."""
    version = _installed_version()
    if version is None:
        return Availability("face-alignment", False, "not installed", _INSTALL)
    if version != "unknown" and _version_tuple(version) < _MIN_VERSION:
        return Availability(
            "face-alignment",
            False,
            f"version {version} installed; stylerig reads the weight files of 1.5 and later",
            "pip install -U 'face-alignment>=1.5'",
        )
    folder = face_alignment_weights_dir()
    missing = [f for f in FAN_FILES if not (folder / f).is_file()]
    if missing:
        return Availability(
            "face-alignment",
            False,
            f"{version} installed, but {', '.join(missing)} not in {folder}",
            _fix_for(missing, folder),
            tuple(missing),
        )
    return Availability("face-alignment", True, f"{version}, weights in {folder}")


@contextlib.contextmanager
def _no_downloads(api: Any, folder: Path) -> Iterator[None]:
    """Within the block, face_alignment.api resolves weight URLs to files in ``folder`` or fails; it never
    downloads (the package's own resolver downloads a missing file)."""
    original = getattr(api, "load_file_from_url", None)

    def local_only(url: str, *args: Any, **kwargs: Any) -> str:
        path = folder / url.rsplit("/", 1)[-1]
        if not path.is_file():
            raise AssetError(
                f"face-alignment wants {path.name}, not found in {folder}", hint=_fix_for([], folder)
            )
        return str(path)

    if original is not None:
        api.load_file_from_url = local_only
    try:
        yield
    finally:
        if original is not None:
            api.load_file_from_url = original


class FaceAlignmentDetector:
    """face-alignment's 2D FAN with its SFD face detector; the largest face of each image is kept.

    Args:
        device: where the networks run: 'cpu', 'cuda', 'cuda:N' or 'auto'.
        flip_input: also run FAN on the mirrored crop and average (face-alignment's option; slower).

    Call: ``detector(images)`` with uint8 [N, R, R, 3] RGB images returns (float32 [N, 68, 2], bool
    [N]): iBUG-68 points in pixels of ``images`` (x right, y down, pixel centres at +0.5; NaN where no
    face was found) and whether a face was found. face-alignment truncates its points to integer pixel
    indices; they are taken as the centres of those pixels (+0.5). A sub-pixel offset of FAN's own crop
    arithmetic (about ``face size / 200`` px, below its heatmap resolution) is left as it is.

    Raises:
        BackendUnavailableError: face-alignment missing or older than 1.5.
        AssetError: a weight file missing (the message names the files and the folder).
    """

    name = "face-alignment"

    def __init__(self, device: str = "cpu", *, flip_input: bool = False) -> None:
        status = face_alignment_status()
        if not status.ok:
            kind = AssetError if status.missing_files else BackendUnavailableError
            raise kind(f"face-alignment landmark detector: {status.detail}", hint=status.fix)
        from stylerig.devices import resolve_device

        dev = str(resolve_device(device))
        folder = face_alignment_weights_dir()
        try:
            import face_alignment
            import face_alignment.api as api
        except Exception as e:  # a broken install (cv2, numba, ...) is one clear error
            raise BackendUnavailableError(
                f"face-alignment is installed but failed to import ({type(e).__name__}: {e})",
                hint="pip install --force-reinstall 'face-alignment>=1.5'",
            ) from e
        types = face_alignment.LandmarksType
        two_d = getattr(types, "TWO_D", None) or getattr(types, "_2D")  # noqa: B009 (older name)
        kwargs: dict[str, Any] = {
            "device": dev,
            "flip_input": flip_input,
            "face_detector": "sfd",
            "face_detector_kwargs": {"path_to_detector": str(folder / _DETECTOR_FILE)},
        }
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False
        with _no_downloads(api, folder):
            self._fa = face_alignment.FaceAlignment(two_d, **kwargs)
        self.device = dev

    def __repr__(self) -> str:
        return f"FaceAlignmentDetector(device={self.device!r})"

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N, R, R, 3] RGB -> (float32 [N, 68, 2] pixels, bool [N] found); see the class docstring."""
        imgs = check_images(images)
        n = len(imgs)
        lms = np.full((n, NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        for i in range(n):
            with _quiet():
                points, _, boxes = self._fa.get_landmarks_from_image(imgs[i], return_bboxes=True)
            if not points:
                continue
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes] if boxes is not None else [0.0]
            best = int(np.argmax(areas))
            lms[i] = np.asarray(points[best], dtype=np.float32)[:, :2] + 0.5
            found[i] = True
        return check_detections(lms, found, n, self.name)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence face-alignment's "No faces were detected" warning (a missed face is counted instead)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No faces were detected")
        yield
