"""The 257-parameter layout: the only module that slices a face-parameter vector ``p``.

``p`` float [..., 257] = identity 80 | expression 64 | reflectance 80 | illumination 27 | rotation 3 |
translation 3 (Basel 2009 + the 64-d expression basis of Deep3DFaceRecon; the public stand-in for the
StyleRig paper's model). Inside ``p``:

* identity, expression, reflectance: coefficients in units of standard deviations (~N(0, 1));
* illumination: 3 spherical-harmonics bands x RGB, laid out ``[channel, band-coefficient]`` = 3 x 9,
  added to the renderer's ambient default (see :mod:`stylerig.render.shading`);
* rotation: (yaw, pitch, roll) in **radians** (degrees are used at every interface a person touches);
* translation: (x, y, z) in the face model's unit (decimetres), in camera-aligned axes.

Rig modes name the groups RigNet controls: ``pose`` (the 3 rotation angles), ``expression`` (64),
``illumination`` (27) and ``all`` (the three together, 94 values).

Example:
    >>> import torch
    >>> from stylerig import params
    >>> p = params.zeros(2)
    >>> params.get(p, "rotation").shape
    torch.Size([2, 3])
    >>> params.LAYOUT["illumination"]
    slice(224, 251, None)
"""

from __future__ import annotations

import torch

__all__ = [
    "GROUPS",
    "LAYOUT",
    "MODES",
    "NUM_PARAMS",
    "ROTATION_NAMES",
    "SH_TERMS",
    "SIZES",
    "concat",
    "from_deep3d",
    "get",
    "mode_groups",
    "mode_index",
    "replace",
    "split",
    "zeros",
]

#: Group name -> number of values, in storage order.
SIZES: dict[str, int] = {
    "identity": 80,
    "expression": 64,
    "reflectance": 80,
    "illumination": 27,
    "rotation": 3,
    "translation": 3,
}
#: Group names in storage order.
GROUPS: tuple[str, ...] = tuple(SIZES)


def _build_layout() -> dict[str, slice]:
    out, start = {}, 0
    for group, size in SIZES.items():
        out[group] = slice(start, start + size)
        start += size
    return out


#: Group name -> its slice of p.
LAYOUT: dict[str, slice] = _build_layout()
NUM_PARAMS: int = sum(SIZES.values())
assert NUM_PARAMS == 257

#: Rig mode -> the parameter groups it controls.
MODES: dict[str, tuple[str, ...]] = {
    "pose": ("rotation",),
    "expression": ("expression",),
    "illumination": ("illumination",),
    "all": ("rotation", "expression", "illumination"),
}

#: Names of the three rotation angles, in storage order.
ROTATION_NAMES: tuple[str, str, str] = ("yaw", "pitch", "roll")
#: The 9 SH terms of each colour's block of ``illumination`` (channel-major: R 0-8, G 9-17, B 18-26), named
#: by their monomial in the world-space normal (x right, y up, z towards the camera): the constant band,
#: the three linear terms (y: light from above or below, z: from the front or behind, x: from the side)
#: and the five quadratic ones. See :func:`stylerig.render.shading.sh_basis`.
SH_TERMS: tuple[str, ...] = ("constant", "y", "z", "x", "xy", "yz", "3z2-1", "xz", "x2-y2")


def _check_group(group: str) -> None:
    if group not in LAYOUT:
        from stylerig.errors import InputError

        raise InputError(f"unknown parameter group {group!r}; expected one of {', '.join(GROUPS)}")


def get(p: torch.Tensor, group: str) -> torch.Tensor:
    """The view of ``p`` [..., 257] holding ``group`` -> [..., SIZES[group]]."""
    _check_group(group)
    return p[..., LAYOUT[group]]


def split(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """All groups of ``p`` [..., 257] as views, keyed by group name."""
    return {g: p[..., s] for g, s in LAYOUT.items()}


def concat(**groups: torch.Tensor) -> torch.Tensor:
    """Assemble p [..., 257] from named groups; a missing group is zeros.

    All given tensors must share leading dimensions, dtype and device.
    """
    if not groups:
        from stylerig.errors import InputError

        raise InputError("concat needs at least one parameter group")
    for g in groups:
        _check_group(g)
    ref = next(iter(groups.values()))
    lead = ref.shape[:-1]
    parts = [groups[g] if g in groups else ref.new_zeros(*lead, SIZES[g]) for g in GROUPS]
    return torch.cat(parts, dim=-1)


def replace(p: torch.Tensor, group: str, values: torch.Tensor) -> torch.Tensor:
    """A copy of ``p`` with ``group`` replaced by ``values`` [..., SIZES[group]] (differentiable in both)."""
    _check_group(group)
    s = LAYOUT[group]
    return torch.cat([p[..., : s.start], values, p[..., s.stop :]], dim=-1)


def mode_groups(mode: str) -> tuple[str, ...]:
    """The parameter groups a rig mode controls (``pose`` -> ``("rotation",)``)."""
    if mode not in MODES:
        from stylerig.errors import InputError

        raise InputError(f"unknown rig mode {mode!r}; expected one of {', '.join(MODES)}")
    return MODES[mode]


def mode_index(mode: str) -> torch.Tensor:
    """int64 indices into p of the values a rig mode controls (3, 64, 27 or 94 of them)."""
    idx = [torch.arange(LAYOUT[g].start, LAYOUT[g].stop) for g in mode_groups(mode)]
    return torch.cat(idx)


def zeros(
    batch: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The mean face, frontal, default light: p = 0, shape [batch, 257]."""
    return torch.zeros(batch, NUM_PARAMS, dtype=dtype, device=device)


#: Deep3DFaceRecon's coefficient order: (group, size); its angles are (x, y, z) = (pitch, yaw, roll).
DEEP3D_ORDER: tuple[tuple[str, int], ...] = (
    ("identity", 80),
    ("expression", 64),
    ("reflectance", 80),
    ("angles", 3),
    ("illumination", 27),
    ("translation", 3),
)


def from_deep3d(coeffs: torch.Tensor) -> torch.Tensor:
    """Deep3DFaceRecon coefficients [..., 257] -> stylerig ``p`` [..., 257].

    Deep3DFaceRecon stores ``id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3`` with the angles
    as rotations about (x, y, z) = (pitch, yaw, roll) in radians, composed ``Rz @ Ry @ Rx`` on column
    vectors in the same camera-aligned frame -- the composition stylerig uses -- so only the order changes.
    Its illumination (``gamma``, channel-major 3 x 9, with the 0.8 ambient added at render time) and
    translation mean the same here.
    """
    if coeffs.shape[-1] != NUM_PARAMS:
        from stylerig.errors import InputError

        raise InputError(f"Deep3DFaceRecon coefficients have {NUM_PARAMS} values, got {coeffs.shape[-1]}")
    parts, start = {}, 0
    for name, size in DEEP3D_ORDER:
        parts[name] = coeffs[..., start : start + size]
        start += size
    pitch, yaw, roll = parts.pop("angles").unbind(-1)
    parts["rotation"] = torch.stack([yaw, pitch, roll], dim=-1)
    return concat(**parts)
