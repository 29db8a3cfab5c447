"""Morphable face models in the 257 layout (see :mod:`stylerig.face.model`)."""

from __future__ import annotations

from stylerig.face.model import MorphableModel, pad_basis
from stylerig.face.readers import (
    load_face_model,
    orient_outward,
    read_bfm2009,
    read_bfm2017,
    read_deep3d_front,
)

__all__ = [
    "MorphableModel",
    "load_face_model",
    "orient_outward",
    "pad_basis",
    "read_bfm2009",
    "read_bfm2017",
    "read_deep3d_front",
]
