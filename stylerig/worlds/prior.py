"""The built-in world's prior: a factor vector z [B, K] (~N(0, 1)) -> face parameters p and a scene.

Every dimension of the generator's z is one *factor* of the world (``docs/world-convergence.md``,
``../shared/reference/world-training-notes.md``: such a z trains about 4x faster than a 512-d z of which
most dimensions are ignored). :func:`factors_to_world` is a fixed, deterministic, differentiable map
that squashes each standard-normal factor into the FFHQ-like range of the issue: yaw mostly within
+/-30 deg with tails to +/-45 deg, little roll, mostly neutral or smiling, some open jaws, mostly
frontal light, varied identity and skin tone. ``z_from_seeds(seeds, NUM_FACTORS)`` therefore always
maps to a valid portrait. Unlisted components of p are 0.

Notation: ``z`` is the factor, ``s(x) = 1 / (1 + exp(-x))``, ``sp(x) = log(1 + exp(x))``; "sd" = the
face model's standard deviations; angles in degrees (stored in radians in p); colours in the image's
[-1, 1] units unless stated.

=====  ====================  ======================================  ==========================================
index  factor                maps to                                 value = f(z) (range; distribution)
=====  ====================  ======================================  ==========================================
0      yaw                   rotation yaw                            45 tanh(0.5 z) deg (|.| < 45; 89% within 30)
1      pitch                 rotation pitch (+ = nose down)          20 tanh(0.4 z) deg (|.| < 20; 71% within 8)
2      roll                  rotation roll                           12 tanh(0.35 z) deg (|.| < 12; 68% within 4)
3      face_width            identity ``face_width``                 z sd
4      face_length           identity ``face_length``                z sd
5      jaw_width             identity ``jaw_width``                  z sd
6      nose_length           identity ``nose_length``                z sd
7      nose_width            identity ``nose_width``                 z sd
8      eye_size              identity ``eye_size``                   0.8 z sd
9      cheek_fullness        identity ``cheek_fullness``             z sd
10     jaw_open              expression ``jaw_open`` (one-sided)     1.6 sp(2.5 (z - 0.9)) / 2.5 sd (>= 0; ~0 for
                                                                     z < 0.5, 1.2 sd at z = 1.6; 17% > 0.5 sd)
11     smile                 expression ``smile``                    2.2 s(3 (z - 0.2)) - 0.15 sd (-0.15..2.05;
                                                                     46% below 0.5 sd, 42% above 1 sd)
12     eye_close             expression ``eye_close``                0.3 z + 2.6 s(5 (z - 2.2)) sd (2% blinks)
13     brow_raise            expression ``brow_raise``               0.6 z sd
14     smile_asym            expression ``smile_asym``               0.25 z sd
15     mouth_stretch         expression ``mouth_stretch``            0.3 z sd
16     skin_tone             reflectance ``skin_tone``               2.4 tanh(0.5 z) sd (-2.4..2.4: dark..light)
17     redness               reflectance ``redness``                 0.7 z sd
18     yellowness            reflectance ``yellowness``              0.7 z sd
19     lip_colour            reflectance ``lip_colour``              0.7 z sd
20     hair_lightness        reflectance ``hair_lightness``          z sd (also the hair silhouette's colour)
21     hair_redness          reflectance ``hair_redness``            0.7 z sd
22     light_azimuth         key light azimuth (+ = from image       35 tanh(0.6 z) deg (mostly frontal)
                             right)
23     light_elevation       key light elevation                     20 + 15 tanh(0.6 z) deg (5..35, from above)
24     light_strength        key light strength (SH band 1)          0.45 + 0.2 tanh(0.7 z) (0.25..0.65)
25     ambient               change of the SH constant band          0.15 tanh(0.7 z) (-0.15..0.15)
26     light_warmth          light colour: R x (1 + w), B x (1 - w)  w = 0.08 tanh(z) (warm / cool tint)
27     bg_lightness          background mean grey level              0.6 tanh(0.8 z) (-0.6..0.6)
28     bg_chroma_rg          background red-green offset             0.2 tanh(0.8 z)
29     bg_chroma_yb          background yellow-blue offset           0.2 tanh(0.8 z)
30     bg_gradient           background brightness change over the   0.35 tanh(0.8 z) (+ = lighter at the top)
                             gradient axis
31     bg_gradient_angle     gradient axis angle from vertical       40 tanh(0.6 z) deg
32     shirt_lightness       shirt grey level (linear RGB albedo)    0.08 + 0.55 s(1.4 z) (0.08..0.63)
33     shirt_hue             shirt hue angle                         180 tanh(0.5 z) deg (any hue; chroma below)
34     shirt_chroma          shirt colour saturation                 0.5 s(1.5 z) (0 = grey .. 0.5)
35     shoulder_width        torso half-width                        (0.95 + 0.12 tanh(0.8 z)) x image width / 2
36     hair_volume           hair silhouette size beyond the skull   0.5 + 0.5 tanh(0.8 z) (0 = cropped .. 1)
37     hair_length           how far the hair falls below the ears   s(1.5 (z - 0.3)) (0 = short .. 1 = long)
=====  ====================  ======================================  ==========================================

The table is version 1 of the prior, the first world's. The shipped world (:data:`PRIOR_VERSION`) is
version 2 (``factors_to_world(z, version=2)``): a world whose every factor an image shows (docs/world.md,
"prior version 2"). It differs from the table in two ways:

- smile ``3.2 s(3 (z - 0.2)) - 0.2``, eye_close ``0.8 z + 1.2 s(5 (z - 2.2))``, smile_asym ``0.8 z`` and
  mouth_stretch ``0.9 z`` sd: 1.5-3.2x larger. In version 1 one sd of the last three moves no landmark
  by more than 0.55 px at 128x128 and smile changes fewer than 30 pixels by more than 0.05, so no
  estimator reads them (correlation with the truth under 0.2 even on renders).
- the key light's strength is fixed at 0.45 (factor 24 is inert, so that z stays 38-d): with strength,
  ambient light and skin albedo all free, an image shows only their products.

Version 3 (the shipped world since 2026-11-26) is version 2 with the ambient change fixed at 0 as well
(factor 25 inert): only the face is lit by the SH light, so an image shows ambient light x skin albedo,
and no estimator read the ambient factor better than 0.42 on renders or 0.17 on generator images
(docs/world.md, "prior version 3"). The constant SH band then varies only with the light's warmth.

Fixed (not factors): translation ``(0, TRANSLATION_Y, TRANSLATION_Z)`` = (0, -0.04, -3.5) dm so the head
(crown to chin about 2.2 dm) fits the fixed camera's 128x128 view with a margin above it and room for
the shoulders below; all other p components are 0.

Example:
    >>> from stylerig.gan.latents import z_from_seeds
    >>> p, scene = factors_to_world(z_from_seeds([0, 1], NUM_FACTORS))
    >>> p.shape, scene["background"].shape
    (torch.Size([2, 257]), torch.Size([2, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from stylerig import params
from stylerig.errors import InputError
from stylerig.face.procedural import EXPRESSION_NAMES, IDENTITY_NAMES, REFLECTANCE_NAMES
from stylerig.render.shading import sh_basis

__all__ = [
    "FACTOR_GROUPS",
    "FACTOR_NAMES",
    "NUM_FACTORS",
    "PRIOR_VERSION",
    "PRIOR_VERSIONS",
    "SCENE_KEYS",
    "TRANSLATION_Y",
    "TRANSLATION_Z",
    "factors_to_world",
    "inert_factors",
    "light_statistics",
    "sample_factors",
]

#: The world's factors, in z order (see the table in the module docstring).
FACTOR_NAMES: tuple[str, ...] = (
    "yaw",
    "pitch",
    "roll",
    "face_width",
    "face_length",
    "jaw_width",
    "nose_length",
    "nose_width",
    "eye_size",
    "cheek_fullness",
    "jaw_open",
    "smile",
    "eye_close",
    "brow_raise",
    "smile_asym",
    "mouth_stretch",
    "skin_tone",
    "redness",
    "yellowness",
    "lip_colour",
    "hair_lightness",
    "hair_redness",
    "light_azimuth",
    "light_elevation",
    "light_strength",
    "ambient",
    "light_warmth",
    "bg_lightness",
    "bg_chroma_rg",
    "bg_chroma_yb",
    "bg_gradient",
    "bg_gradient_angle",
    "shirt_lightness",
    "shirt_hue",
    "shirt_chroma",
    "shoulder_width",
    "hair_volume",
    "hair_length",
)
NUM_FACTORS: int = len(FACTOR_NAMES)

#: The prior of the shipped world (its generator, estimator and truth): version 3 (visible expressions,
#: fixed key-light strength and ambient light; docs/world.md). Version 1, the table above, was the first
#: world's; version 2 the second's (ambient light free).
PRIOR_VERSION: int = 3
PRIOR_VERSIONS: tuple[int, ...] = (1, 2, 3)
_F = {name: i for i, name in enumerate(FACTOR_NAMES)}

#: Fixed head placement (decimetres): the camera is fixed (:mod:`stylerig.render.camera`).
TRANSLATION_Y = -0.04
TRANSLATION_Z = -3.5

#: Keys of the scene dict, each a float tensor [B, n].
SCENE_KEYS: tuple[str, ...] = (
    "background",  # [B, 3] mean background colour, [-1, 1]
    "bg_gradient",  # [B, 1] brightness change along the gradient axis ([-1, 1] units)
    "bg_gradient_angle",  # [B, 1] radians from vertical
    "shirt",  # [B, 3] shirt albedo, linear RGB [0, 1]
    "shoulder_width",  # [B, 1] torso half-width, fraction of the half image width
    "hair_volume",  # [B, 1] 0..1
    "hair_length",  # [B, 1] 0..1
)

_IDENTITY = {  # factor -> (identity component, sd per unit)
    "face_width": 1.0,
    "face_length": 1.0,
    "jaw_width": 1.0,
    "nose_length": 1.0,
    "nose_width": 1.0,
    "eye_size": 0.8,
    "cheek_fullness": 1.0,
}
_REFLECTANCE_LINEAR = {
    "redness": 0.7,
    "yellowness": 0.7,
    "lip_colour": 0.7,
    "hair_lightness": 1.0,
    "hair_redness": 0.7,
}


def sample_factors(seeds: Sequence[int]) -> torch.Tensor:
    """The factor vectors of ``seeds``: exactly the generator's z (``z_from_seeds(seeds, NUM_FACTORS)``)."""
    from stylerig.gan.latents import z_from_seeds

    return z_from_seeds(list(seeds), NUM_FACTORS)


def _key_light(azimuth: torch.Tensor, elevation: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Band-1 SH coefficients [B, 9] (band 0 and 2 zero) of a white light from (azimuth, elevation)."""
    d = torch.stack(
        [
            torch.sin(azimuth) * torch.cos(elevation),
            torch.sin(elevation),
            torch.cos(azimuth) * torch.cos(elevation),
        ],
        -1,
    )
    y = sh_basis(d)  # [B, 9]
    y1 = y[:, 1:4] / y[:, :1]
    out = torch.zeros(d.shape[0], 9, dtype=d.dtype, device=d.device)
    out[:, 1:4] = strength[:, None] * y1 / y1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out


def factors_to_world(
    z: torch.Tensor, version: int = PRIOR_VERSION
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Map factor vectors to face parameters and scene parameters (deterministic, differentiable).

    Args:
        z: float [B, NUM_FACTORS], each factor ~N(0, 1) (any finite value is valid).
        version: the prior's version: 3 (:data:`PRIOR_VERSION`, the shipped world's: larger expressions,
            a fixed key-light strength and ambient light, see above), 2 (ambient light free) or 1 (the
            first world's, the table).

    Returns:
        ``(p, scene)``: p float [B, 257] (:mod:`stylerig.params`, rotation in radians) and a dict of
        float tensors keyed by :data:`SCENE_KEYS` (see there), all in z's dtype and device.
    """
    if z.ndim != 2 or z.shape[1] != NUM_FACTORS:
        raise InputError(f"factors must have shape [B, {NUM_FACTORS}], got {list(z.shape)}")
    if not torch.isfinite(z).all():
        raise InputError("factors must be finite")
    if version not in PRIOR_VERSIONS:
        raise InputError(f"unknown prior version {version}", hint="use 1, 2 or 3")
    B = z.shape[0]
    f = {name: z[:, i] for name, i in _F.items()}
    deg = math.pi / 180.0
    sig, tanh, sp = torch.sigmoid, torch.tanh, torch.nn.functional.softplus

    rotation = torch.stack(
        [
            45.0 * deg * tanh(0.5 * f["yaw"]),
            20.0 * deg * tanh(0.4 * f["pitch"]),
            12.0 * deg * tanh(0.35 * f["roll"]),
        ],
        -1,
    )
    identity = z.new_zeros(B, params.SIZES["identity"])
    for name, scale in _IDENTITY.items():
        identity[:, IDENTITY_NAMES.index(name)] = scale * f[name]
    expression = z.new_zeros(B, params.SIZES["expression"])
    e = EXPRESSION_NAMES.index
    expression[:, e("jaw_open")] = 1.6 * sp(2.5 * (f["jaw_open"] - 0.9)) / 2.5
    expression[:, e("brow_raise")] = 0.6 * f["brow_raise"]
    if version == 1:
        expression[:, e("smile")] = 2.2 * sig(3.0 * (f["smile"] - 0.2)) - 0.15
        expression[:, e("eye_close")] = 0.3 * f["eye_close"] + 2.6 * sig(5.0 * (f["eye_close"] - 2.2))
        expression[:, e("smile_asym")] = 0.25 * f["smile_asym"]
        expression[:, e("mouth_stretch")] = 0.3 * f["mouth_stretch"]
    else:
        expression[:, e("smile")] = 3.2 * sig(3.0 * (f["smile"] - 0.2)) - 0.2
        expression[:, e("eye_close")] = 0.8 * f["eye_close"] + 1.2 * sig(5.0 * (f["eye_close"] - 2.2))
        expression[:, e("smile_asym")] = 0.8 * f["smile_asym"]
        expression[:, e("mouth_stretch")] = 0.9 * f["mouth_stretch"]
    reflectance = z.new_zeros(B, params.SIZES["reflectance"])
    reflectance[:, REFLECTANCE_NAMES.index("skin_tone")] = 2.4 * tanh(0.5 * f["skin_tone"])
    for name, scale in _REFLECTANCE_LINEAR.items():
        reflectance[:, REFLECTANCE_NAMES.index(name)] = scale * f[name]

    key = _key_light(
        35.0 * deg * tanh(0.6 * f["light_azimuth"]),
        (20.0 + 15.0 * tanh(0.6 * f["light_elevation"])) * deg,
        0.45 + 0.2 * tanh(0.7 * f["light_strength"]) if version == 1 else torch.full_like(f["yaw"], 0.45),
    )
    key[:, 0] = 0.15 * tanh(0.7 * f["ambient"]) if version < 3 else 0.0
    warmth = 0.08 * tanh(f["light_warmth"])
    tint = torch.stack([1.0 + warmth, torch.ones_like(warmth), 1.0 - warmth], -1)  # [B, 3]
    # Channel-major 3 x 9; the tint scales each channel's whole light (ambient default included).
    from stylerig.render.shading import AMBIENT

    ambient = torch.zeros(9, dtype=z.dtype, device=z.device)
    ambient[0] = AMBIENT
    illumination = (tint[:, :, None] * (key[:, None, :] + ambient) - ambient).reshape(B, 27)

    translation = z.new_zeros(B, 3)
    translation[:, 1] = TRANSLATION_Y
    translation[:, 2] = TRANSLATION_Z
    p = params.concat(
        identity=identity,
        expression=expression,
        reflectance=reflectance,
        illumination=illumination,
        rotation=rotation,
        translation=translation,
    )

    lum = 0.6 * tanh(0.8 * f["bg_lightness"])
    rg = 0.2 * tanh(0.8 * f["bg_chroma_rg"])
    yb = 0.2 * tanh(0.8 * f["bg_chroma_yb"])
    background = torch.stack([lum + rg + 0.5 * yb, lum - rg + 0.5 * yb, lum - yb], -1)
    light = 0.08 + 0.55 * sig(1.4 * f["shirt_lightness"])
    hue = math.pi * tanh(0.5 * f["shirt_hue"])
    chroma = 0.5 * sig(1.5 * f["shirt_chroma"])
    phases = torch.tensor([0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0], dtype=z.dtype, device=z.device)
    shirt = light[:, None] * (1.0 + chroma[:, None] * torch.cos(hue[:, None] - phases))
    scene = {
        "background": background,
        "bg_gradient": (0.35 * tanh(0.8 * f["bg_gradient"]))[:, None],
        "bg_gradient_angle": (40.0 * deg * tanh(0.6 * f["bg_gradient_angle"]))[:, None],
        "shirt": shirt.clamp(0.0, 1.0),
        "shoulder_width": (0.95 + 0.12 * tanh(0.8 * f["shoulder_width"]))[:, None],
        "hair_volume": (0.5 + 0.5 * tanh(0.8 * f["hair_volume"]))[:, None],
        "hair_length": sig(1.5 * (f["hair_length"] - 0.3))[:, None],
    }
    return p, scene


def light_statistics(
    version: int = PRIOR_VERSION, n: int = 20000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the world's SH light under prior ``version`` (the statistical light prior
    of :class:`stylerig.dfr.DFR`'s light model, as the Basel Illumination Prior is for real photos).

    Args:
        version: the prior's version. n: how many factor vectors to draw. seed: the draws' seed.

    Returns:
        (mean float64 [27], cov float64 [27, 27]) in the :mod:`stylerig.params` illumination layout;
        deterministic for given arguments (~0.05 s for 20,000 draws).
    """
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), NUM_FACTORS, generator=g, dtype=torch.float64)
    light = params.get(factors_to_world(z, version)[0], "illumination")
    return light.mean(0), torch.cov(light.T)


#: The coefficient groups :func:`used_coefficients` answers for.
COEFFICIENT_GROUPS: tuple[str, ...] = ("identity", "expression", "reflectance")


def used_coefficients(
    groups: Sequence[str] = COEFFICIENT_GROUPS, version: int = PRIOR_VERSION, n: int = 4096, seed: int = 0
) -> torch.Tensor:
    """Which face-model coefficients the world's faces use: bool [257] (:mod:`stylerig.params` layout),
    True outside ``groups`` and, inside them, where the coefficient varies over ``n`` prior draws.

    The world's faces use 7 of the face model's 80 identity components, 6 of its 64 expression components
    and 6 of its 80 reflectance components (``FACTOR_GROUPS``); the rest are always 0. This is the
    world's statistical coefficient model, as :func:`light_statistics` is its light model: a DFR
    confined to it (``fit-dfr --confine``) reads no coefficient the world never draws.

    Args:
        groups: some of :data:`COEFFICIENT_GROUPS`. version: the prior's version. n, seed: the draws.

    Raises:
        InputError: a group that is not a coefficient group.
    """
    bad = [g for g in groups if g not in COEFFICIENT_GROUPS]
    if bad:
        raise InputError(
            f"cannot confine {', '.join(map(repr, bad))}", hint=f"use some of {', '.join(COEFFICIENT_GROUPS)}"
        )
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), NUM_FACTORS, generator=g, dtype=torch.float64)
    varies = factors_to_world(z, version)[0].std(0) > 0
    keep = torch.ones(params.NUM_PARAMS, dtype=torch.bool)
    for group in groups:
        keep[params.LAYOUT[group]] = varies[params.LAYOUT[group]]
    return keep


def inert_factors(version: int = PRIOR_VERSION) -> tuple[str, ...]:
    """Names of the factors prior ``version`` ignores (no image shows them): ``light_strength`` from
    version 2 on, ``ambient`` from version 3 on."""
    if version not in PRIOR_VERSIONS:
        raise InputError(f"unknown prior version {version}", hint="use 1, 2 or 3")
    return () if version == 1 else ("light_strength",) if version == 2 else ("light_strength", "ambient")


#: Which world factors (:data:`~stylerig.worlds.prior.FACTOR_NAMES`) make each parameter group.
FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "pose": ("yaw", "pitch", "roll"),
    "expression": ("jaw_open", "smile", "eye_close", "brow_raise", "smile_asym", "mouth_stretch"),
    "illumination": ("light_azimuth", "light_elevation", "light_strength", "ambient", "light_warmth"),
    "identity": (
        "face_width",
        "face_length",
        "jaw_width",
        "nose_length",
        "nose_width",
        "eye_size",
        "cheek_fullness",
    ),
    "reflectance": ("skin_tone", "redness", "yellowness", "lip_colour", "hair_lightness", "hair_redness"),
}
