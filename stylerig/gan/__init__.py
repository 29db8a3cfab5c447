"""The generator room: StyleGAN2 in pure PyTorch, latents, and checkpoint readers that never run code.

* :mod:`stylerig.gan.networks` -- :class:`Generator` (parameter names = NVIDIA's ``G_ema``);
* :mod:`stylerig.gan.latents` -- z from seeds (as NVIDIA's ``generate.py``), style mixing;
* :mod:`stylerig.gan.loading` -- :func:`load_generator` (NVIDIA ``.pkl``, rosinality ``.pt``, own
  ``.safetensors``), :func:`save_generator`, :func:`convert`;
* :mod:`stylerig.gan.testing` -- tiny generators and fabricated checkpoints for tests.

This room imports nothing from the face or render rooms.
"""

from __future__ import annotations

from stylerig.gan.latents import DEFAULT_MIX_MAX, draw_mixing, mix_ws, sample_ws, z_from_seed, z_from_seeds
from stylerig.gan.loading import convert, detect_format, load_generator, save_generator
from stylerig.gan.networks import NOISE_MODES, Generator

__all__ = [
    "DEFAULT_MIX_MAX",
    "NOISE_MODES",
    "Generator",
    "convert",
    "detect_format",
    "draw_mixing",
    "load_generator",
    "mix_ws",
    "sample_ws",
    "save_generator",
    "z_from_seed",
    "z_from_seeds",
]
