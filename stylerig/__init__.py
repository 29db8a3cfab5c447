"""stylerig: face-rig control over a frozen StyleGAN through a 3D morphable model.

Rooms (see ``docs/conventions.md`` and the design map):

* :mod:`stylerig.params` -- the 257-parameter layout, the one place that slices ``p``;
* :mod:`stylerig.face` -- morphable face models (built-in procedural, Basel 2009/2017, Deep3DFaceRecon);
* :mod:`stylerig.render` -- camera, rasterizer backends, interpolation, SH shading, ``FaceRenderer``.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from stylerig.errors import StylerigError

__all__ = ["StylerigError", "__version__"]
