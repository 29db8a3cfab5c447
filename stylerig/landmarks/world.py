"""The built-in world's exact landmarks, in the detectors' convention.

The world knows the face behind each seed's image (:meth:`stylerig.worlds.World.landmarks`), so it needs
no detector. Unlike a detector it is asked with seeds, not images: its landmarks are exact for the
unmixed, untruncated image of each seed (``world.images(seeds)``). ``stylerig sample`` does not call this
class; it reads the same truth through the world generator's ``ground_truth`` hook
(:class:`stylerig.worlds.world.WorldTruth`), which also checks every row's W+ code and leaves style-mixed
or truncated rows without landmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stylerig.errors import BackendUnavailableError, InputError
from stylerig.landmarks.base import Availability, check_detections

__all__ = ["WorldLandmarks", "world_status"]


def world_status() -> Availability:
    """Whether the built-in world ships with this install (its generator file exists); loads nothing."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("stylerig.worlds.world")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return Availability(
            "world", False, "the built-in world is not part of this version", "upgrade stylerig"
        )
    from stylerig.worlds.world import GENERATOR_FILE

    if not GENERATOR_FILE.is_file():
        return Availability(
            "world",
            False,
            f"the built-in world's generator is missing ({GENERATOR_FILE})",
            "reinstall stylerig",
            (GENERATOR_FILE.name,),
        )
    return Availability("world", True, "exact landmarks for the built-in world's samples")


class WorldLandmarks:
    """Exact 68-point landmarks of a world's seeds.

    Args:
        world: a world with ``landmarks(seeds)`` -> [B, 68, 2] pixels at ``world.resolution`` (a
            :class:`stylerig.worlds.World`); default: ``stylerig.worlds.load_world()``, loaded on first use.

    Call: ``adapter(seeds, resolution=None)`` returns (float32 [B, 68, 2], bool [B]): the iBUG-68 points of
    the seeds' images in pixels of a ``resolution``-sized copy of them (default: the world's own, 128),
    x right, y down, pixel centres at +0.5; ``found`` is True for every finite row. A resized image's
    points are the world's scaled by ``resolution / world.resolution`` (exact for any resize that maps
    the image square onto the square, as :func:`stylerig.sampling.resize_images` does).

    Raises:
        BackendUnavailableError: no world given and the built-in one is not available.
        InputError: empty seeds or a non-positive resolution.
    """

    name = "world"

    def __init__(self, world: Any | None = None) -> None:
        self._world = world

    @property
    def world(self) -> Any:
        """The world (loaded on first use when none was given)."""
        if self._world is None:
            status = world_status()
            if not status.ok:
                raise BackendUnavailableError(f"world landmarks: {status.detail}", hint=status.fix)
            from stylerig.worlds import load_world

            self._world = load_world()
        return self._world

    def __repr__(self) -> str:
        return f"WorldLandmarks(world={self._world!r})"

    def __call__(self, seeds: Sequence[int], resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """seeds [B] -> (float32 [B, 68, 2] pixels at ``resolution``, bool [B] found); see the class docstring."""
        seed_list = [int(s) for s in np.asarray(seeds).reshape(-1)]
        if not seed_list:
            raise InputError("no seeds given")
        if resolution is not None and (isinstance(resolution, bool) or int(resolution) < 1):
            raise InputError(f"resolution must be a positive integer, got {resolution!r}")
        world = self.world
        lms = world.landmarks(seed_list)
        if hasattr(lms, "detach"):
            lms = lms.detach().cpu().numpy()
        lms = np.asarray(lms, dtype=np.float32)
        if resolution is not None:
            lms = lms * (float(resolution) / float(world.resolution))
        found = np.isfinite(lms).all(axis=(1, 2)) if lms.ndim == 3 else np.zeros(len(seed_list), bool)
        return check_detections(lms, found, len(seed_list), self.name)
