"""The morphable face model as an ``nn.Module`` of buffers.

Every face model (the built-in procedural one, Basel 2009 + expression basis, Deep3DFaceRecon's
``BFM_model_front.mat``, Basel 2017) becomes one :class:`MorphableModel` that speaks the 257 layout of
:mod:`stylerig.params`. A model with fewer real components pads its bases with zero columns.

Conventions (all of them in ``docs/conventions.md``):

* model space: right-handed, **x** towards the subject's left (image right in a frontal view), **y** up,
  **z** out of the face towards the camera; the unit is the **decimetre** (Basel's micrometres / 1e5,
  as in Deep3DFaceRecon); the mean shape is centred near the origin;
* triangles: 0-based int64 vertex indices, **counter-clockwise seen from outside** (so
  ``cross(v1 - v0, v2 - v0)`` points out of the surface); readers fix the winding of files that differ;
* bases are sigma-scaled: a coefficient of 1 moves one standard deviation;
* albedo: linear RGB in [0, 1] (Basel's 0-255 divided by 255);
* landmarks: 68 vertex indices in iBUG / Multi-PIE order (0-16 jaw, 17-26 brows, 27-35 nose,
  36-47 eyes, 48-67 mouth).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import AssetError, InputError

__all__ = ["MorphableModel", "pad_basis"]

_FORMAT = "stylerig.face_model"
_FORMAT_VERSION = 1


def pad_basis(basis: torch.Tensor, k: int) -> torch.Tensor:
    """Pad (with zero columns) or truncate a basis [3V, K'] to exactly ``k`` columns -> [3V, k]."""
    if basis.shape[1] >= k:
        return basis[:, :k].contiguous()
    return torch.cat([basis, basis.new_zeros(basis.shape[0], k - basis.shape[1])], dim=1)


class MorphableModel(nn.Module):
    """A linear 3D morphable face model (shape, expression, albedo) in the 257 layout.

    Args:
        mean_shape: float [V, 3], decimetres, model space (see module docstring).
        id_basis: float [3V, k_id <= 80], decimetres per standard deviation, rows xyz-interleaved
            (row ``3*i + c`` is coordinate ``c`` of vertex ``i``).
        exp_basis: float [3V, k_exp <= 64], same units.
        mean_albedo: float [V, 3], linear RGB in [0, 1].
        alb_basis: float [3V, k_alb <= 80], albedo per standard deviation.
        triangles: int [F, 3], 0-based, counter-clockwise seen from outside.
        landmarks: int [68], vertex indices in iBUG order.
        skin_mask: bool [V], True on skin (used by photometric losses and the albedo prior).
        name: short human name ("procedural", "bfm2009", ...).
        licence: the licence of the data the model was built from (shown by ``stylerig doctor``).
        source: where it was loaded from (a path, or "built-in").
        component_names: optional names of the components per group (``{"expression": ["jaw_open",
            ...]}``), shown in grids and reports; missing names read "expression 12".

    Buffers are stored in float32 (bases), int64 (indices) and bool (mask) and move with ``.to()``.
    """

    def __init__(
        self,
        mean_shape: torch.Tensor,
        id_basis: torch.Tensor,
        exp_basis: torch.Tensor,
        mean_albedo: torch.Tensor,
        alb_basis: torch.Tensor,
        triangles: torch.Tensor,
        landmarks: torch.Tensor,
        skin_mask: torch.Tensor,
        *,
        name: str = "face-model",
        licence: str = "unknown",
        source: str = "",
        component_names: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        sizes: dict[str, int] = {}
        check_tensor(mean_shape, "mean_shape", ["V", 3], sizes=sizes)
        nv = sizes["V"]
        for nm, b in (("id_basis", id_basis), ("exp_basis", exp_basis), ("alb_basis", alb_basis)):
            check_tensor(b, nm, [3 * nv, None])
        check_tensor(mean_albedo, "mean_albedo", ["V", 3], sizes=sizes)
        check_tensor(triangles, "triangles", [None, 3])
        check_tensor(landmarks, "landmarks", [68])
        check_tensor(skin_mask, "skin_mask", ["V"], sizes=sizes)
        if triangles.is_floating_point() or landmarks.is_floating_point():
            raise InputError("triangles and landmarks must be integer vertex indices")
        for nm, idx in (("triangles", triangles), ("landmarks", landmarks)):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= nv):
                raise InputError(
                    f"{nm} index out of range [0, {nv}): min {int(idx.min())}, max {int(idx.max())}"
                )
        for nm, t in (("mean_shape", mean_shape), ("mean_albedo", mean_albedo)):
            check_tensor(t, nm, finite=True)

        f32 = dict(dtype=torch.float32)
        self.register_buffer("mean_shape", mean_shape.to(**f32).contiguous())
        self.register_buffer("mean_albedo", mean_albedo.to(**f32).contiguous())
        self.register_buffer("id_basis", pad_basis(id_basis.to(**f32), params.SIZES["identity"]))
        self.register_buffer("exp_basis", pad_basis(exp_basis.to(**f32), params.SIZES["expression"]))
        self.register_buffer("alb_basis", pad_basis(alb_basis.to(**f32), params.SIZES["reflectance"]))
        self.register_buffer("triangles", triangles.to(torch.int64).contiguous())
        self.register_buffer("landmarks", landmarks.to(torch.int64).contiguous())
        self.register_buffer("skin_mask", skin_mask.to(torch.bool).contiguous())
        #: Number of real (non-padding) components per group.
        self.num_components = {
            "identity": min(id_basis.shape[1], 80),
            "expression": min(exp_basis.shape[1], 64),
            "reflectance": min(alb_basis.shape[1], 80),
        }
        self.name = name
        self.licence = licence
        self.source = source
        #: Optional component names per group (see the constructor).
        self.component_names: dict[str, list[str]] = {g: list(v) for g, v in (component_names or {}).items()}

    # ------------------------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def num_triangles(self) -> int:
        return self.triangles.shape[0]

    def extra_repr(self) -> str:
        nc = self.num_components
        return (
            f"name={self.name!r}, vertices={self.num_vertices}, triangles={self.num_triangles}, "
            f"components=(id {nc['identity']}, exp {nc['expression']}, alb {nc['reflectance']})"
        )

    # ------------------------------------------------------------------------------------------------
    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """Vertex positions in model space.

        Args:
            identity: float [B, 80] (sigma units).
            expression: float [B, 64] (sigma units).

        Returns:
            float [B, V, 3] in decimetres, on the buffers' device.
        """
        offs = identity @ self.id_basis.T + expression @ self.exp_basis.T  # [B, 3V]
        return self.mean_shape + offs.view(-1, self.num_vertices, 3)

    def albedo(self, reflectance: torch.Tensor) -> torch.Tensor:
        """Per-vertex albedo, float [B, V, 3] linear RGB (nominally [0, 1]; not clamped, to keep gradients).

        Args:
            reflectance: float [B, 80] (sigma units).
        """
        offs = reflectance @ self.alb_basis.T
        return self.mean_albedo + offs.view(-1, self.num_vertices, 3)

    def forward(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometry and albedo of the faces described by ``p`` [B, 257] (pose and light are ignored here).

        Returns:
            (vertices float [B, V, 3] model space, decimetres; albedo float [B, V, 3] in [0, 1]).
        """
        check_tensor(p, "p", [None, params.NUM_PARAMS], finite=True)
        if p.dtype != self.mean_shape.dtype or p.device != self.mean_shape.device:
            raise InputError(
                f"p is {p.dtype} on {p.device} but the face model is {self.mean_shape.dtype} on "
                f"{self.mean_shape.device}",
                hint="move one to the other, e.g. face_model.to(p.device, p.dtype)",
            )
        g = params.split(p)
        return self.shape(g["identity"], g["expression"]), self.albedo(g["reflectance"])

    # ------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, object]:
        """JSON-serialisable description (stored beside the tensors)."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "name": self.name,
            "licence": self.licence,
            "source": self.source,
            "num_components": self.num_components,
            "component_names": self.component_names,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as one safetensors file (tensors + JSON config in the metadata), atomically."""
        from stylerig.tensorfile import save_tensors

        save_tensors(path, self.state_dict(), {"config": json.dumps(self.config())})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MorphableModel:
        """Read a model written by :meth:`save` (no pickle involved)."""
        from stylerig.tensorfile import load_tensors

        tensors, meta = load_tensors(
            path, what="safetensors face model", hint="delete the file and convert the source model again"
        )
        try:
            cfg = json.loads(meta["config"])
            assert cfg.get("format") == _FORMAT
        except Exception as e:
            raise AssetError(
                f"{path} is a safetensors file but not a stylerig face model",
                hint="pass a face model written by stylerig (or the original .mat/.h5 file)",
            ) from e
        return cls.from_state(tensors, cfg, source=str(path))

    @classmethod
    def from_state(
        cls, tensors: Mapping[str, torch.Tensor], cfg: Mapping[str, object], *, source: str = ""
    ) -> MorphableModel:
        """Build from a state dict (as written by :meth:`save`) and its config."""
        need = [
            "mean_shape",
            "id_basis",
            "exp_basis",
            "mean_albedo",
            "alb_basis",
            "triangles",
            "landmarks",
            "skin_mask",
        ]
        missing = [k for k in need if k not in tensors]
        if missing:
            raise AssetError(f"face model {source or ''} lacks tensors: {', '.join(missing)}")
        try:
            nc = dict(cfg.get("num_components", {}))  # type: ignore[arg-type]
            trim = {"id_basis": "identity", "exp_basis": "expression", "alb_basis": "reflectance"}
            bases = {k: tensors[k][:, : int(nc.get(g, tensors[k].shape[1]))] for k, g in trim.items()}
            return cls(
                tensors["mean_shape"],
                bases["id_basis"],
                bases["exp_basis"],
                tensors["mean_albedo"],
                bases["alb_basis"],
                tensors["triangles"],
                tensors["landmarks"],
                tensors["skin_mask"],
                name=str(cfg.get("name", "face-model")),
                licence=str(cfg.get("licence", "unknown")),
                source=source,
                component_names=dict(cfg.get("component_names") or {}),  # type: ignore[arg-type]
            )
        except (IndexError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise AssetError(
                f"face model {source or ''} has malformed tensors or config ({type(e).__name__}: {e})",
                hint="delete the file and convert the source model again",
            ) from e
