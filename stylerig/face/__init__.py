"""Morphable face models in the 257 layout (see :mod:`stylerig.face.model`)."""

from __future__ import annotations

from stylerig.face.model import MorphableModel, pad_basis

__all__ = ["MorphableModel", "pad_basis"]
