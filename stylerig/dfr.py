"""DFR: the differentiable face reconstruction network F: W+ code -> 257 face parameters (``method.md`` §2).

F is the paper's 3-layer MLP with ELU after the two hidden layers. Two fixed (buffer) affine maps
around it make it easy to train and start sensible:

``p = p_init + p_scale * fc2(elu(fc1(elu(fc0((ws - w_mean) / w_std)))))``

* **input normalisation** ``(ws - w_mean) / w_std`` per W+ slot and channel, from the training codes
  (:func:`ws_statistics`): the codes of a StyleGAN's W space have per-channel offsets and scales far from
  0 and 1, which an MLP trained with Adam handles poorly;
* **output init**: ``fc2`` starts at zero, so before training F predicts ``p_init`` for every code: the
  mean face (identity, expression, reflectance 0), frontal (rotation 0), the renderer's default ambient
  light (illumination 0), at a head translation fitted to the training set's mean landmarks
  (:func:`stylerig.training.dfr.initial_params`) -- the world's head placement for the built-in world;
* **output scale** ``p_scale`` per group (:data:`OUTPUT_SCALE`): the typical spread of each group in its
  own units (rotation 0.3 rad, translation 0.1 dm, illumination 0.3, coefficients 1 sd), so one
  learning rate suits every group.

Example:
    >>> import torch
    >>> F = DFR(num_ws=2, w_dim=8, hidden=(16, 16))
    >>> F(torch.zeros(3, 2, 8)).shape
    torch.Size([3, 257])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import AssetError, InputError
from stylerig.tensorfile import load_tensors, save_tensors

__all__ = ["DEFAULT_HIDDEN", "DFR", "FORMAT", "OUTPUT_SCALE", "load_dfr", "save_dfr", "ws_statistics"]

#: ``format`` metadata value of a saved DFR.
FORMAT = "stylerig.dfr"
_VERSION = 1
#: Default hidden widths (``method.md`` §2 suggests 1024, 512 for 18 x 512 inputs).
DEFAULT_HIDDEN: tuple[int, ...] = (1024, 512)
#: Per-group output scale (units of each group; see the module docstring).
OUTPUT_SCALE: dict[str, float] = {
    "identity": 1.0,
    "expression": 1.0,
    "reflectance": 1.0,
    "illumination": 0.3,
    "rotation": 0.3,
    "translation": 0.1,
}
_HINT = "train one with `stylerig fit-dfr --data DIR --out DIR` (it writes DIR/dfr.safetensors)"


def ws_statistics(ws: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot, per-channel mean and standard deviation of W+ codes.

    Args:
        ws: float [N, num_ws, w_dim] (N >= 2).
        eps: the std is clamped below at ``eps`` times its mean over all entries (constant channels
            would otherwise blow up).

    Returns:
        (mean, std): float32 [num_ws, w_dim] each, on ``ws``'s device.
    """
    check_tensor(ws, "ws", [None, None, None], dtypes=(torch.float32, torch.float64), finite=True)
    if ws.shape[0] < 2:
        raise InputError("ws statistics need at least 2 codes")
    x = ws.double()
    mean, std = x.mean(0), x.std(0)
    std = std.clamp_min(eps * float(std.mean()) + 1e-12)
    return mean.float(), std.float()


class DFR(nn.Module):
    """F: W+ codes [B, num_ws, w_dim] -> face parameters [B, 257] (see the module docstring).

    Args:
        num_ws: number of W+ slots (12 for the built-in world's 128x128 generator, 18 at 1024x1024).
        w_dim: width of each w (512).
        hidden: widths of the hidden layers (``method.md``: 3 linear layers, i.e. 2 hidden widths).
        w_mean, w_std: float [num_ws, w_dim] input statistics (default 0 and 1; set them from the
            training codes with :func:`ws_statistics`).
        p_init: float [257], the prediction before training (default: zeros = mean face, frontal,
            default light, translation 0).
        output_scale: group -> scale (default :data:`OUTPUT_SCALE`).

    Parameter names: ``fc0``, ``fc1``, ..., ``fc{len(hidden)}`` (``nn.Linear``); buffers ``w_mean``,
    ``w_std``, ``p_init``, ``p_scale``.
    """

    def __init__(
        self,
        num_ws: int,
        w_dim: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        *,
        w_mean: torch.Tensor | None = None,
        w_std: torch.Tensor | None = None,
        p_init: torch.Tensor | None = None,
        output_scale: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if int(num_ws) < 1 or int(w_dim) < 1 or not hidden or any(int(h) < 1 for h in hidden):
            raise InputError(f"bad DFR sizes: num_ws={num_ws}, w_dim={w_dim}, hidden={list(hidden)}")
        self.num_ws, self.w_dim, self.hidden = int(num_ws), int(w_dim), tuple(int(h) for h in hidden)
        scale = dict(OUTPUT_SCALE if output_scale is None else output_scale)
        if set(scale) != set(params.GROUPS):
            raise InputError(f"output_scale needs every group: {', '.join(params.GROUPS)}")
        self.output_scale = scale
        #: Facts recorded with the saved network (filled by :func:`load_dfr`).
        self.info: dict[str, Any] = {}
        widths = (self.num_ws * self.w_dim, *self.hidden, params.NUM_PARAMS)
        for i in range(len(widths) - 1):
            setattr(self, f"fc{i}", nn.Linear(widths[i], widths[i + 1]))
        last: nn.Linear = getattr(self, f"fc{len(widths) - 2}")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        shape = (self.num_ws, self.w_dim)
        self.register_buffer(
            "w_mean", torch.zeros(shape) if w_mean is None else w_mean.float().reshape(shape)
        )
        self.register_buffer("w_std", torch.ones(shape) if w_std is None else w_std.float().reshape(shape))
        p0 = torch.zeros(params.NUM_PARAMS) if p_init is None else p_init.float().reshape(params.NUM_PARAMS)
        self.register_buffer("p_init", p0.clone())
        self.register_buffer(
            "p_scale", torch.cat([torch.full((params.SIZES[g],), float(scale[g])) for g in params.GROUPS])
        )

    @property
    def config(self) -> dict[str, Any]:
        """Constructor settings (JSON-able) that rebuild this network's shape."""
        return {
            "num_ws": self.num_ws,
            "w_dim": self.w_dim,
            "hidden": list(self.hidden),
            "output_scale": self.output_scale,
        }

    def extra_repr(self) -> str:
        return f"num_ws={self.num_ws}, w_dim={self.w_dim}, hidden={list(self.hidden)}"

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """Face parameters of W+ codes.

        Args:
            ws: float [B, num_ws, w_dim] W+ codes, on this module's device (float32 or float64).

        Returns:
            p float [B, 257] (:mod:`stylerig.params`: rotation in radians, translation in decimetres),
            same dtype as the weights.
        """
        check_tensor(ws, "ws", [None, self.num_ws, self.w_dim], dtypes=(torch.float32, torch.float64))
        x = ((ws.to(self.w_mean.dtype) - self.w_mean) / self.w_std).flatten(1)
        n = len(self.hidden)
        for i in range(n):
            x = nnf.elu(getattr(self, f"fc{i}")(x))
        return self.p_init + self.p_scale * getattr(self, f"fc{n}")(x)


def save_dfr(F: DFR, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save ``F`` as safetensors (its ``state_dict``) + JSON config in the metadata, atomically.

    Args:
        F: the network.
        path: the file (``.safetensors``).
        metadata: extra JSON-able facts to record (the face model, the sample set...), under ``info``.
    """
    meta = {
        "format": FORMAT,
        "version": str(_VERSION),
        "config": json.dumps(F.config),
        "info": json.dumps(dict(metadata or {}), default=str),
    }
    return save_tensors(path, F.state_dict(), meta)


def load_dfr(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> DFR:
    """Load a DFR written by :func:`save_dfr` (no pickle; in eval mode, gradients off).

    Args:
        path: the ``.safetensors`` file (``dfr.safetensors`` in a ``fit-dfr`` output folder; a folder
            holding that file is accepted too).
        device: where to put it.

    Returns:
        :class:`DFR` with ``F.info`` holding the recorded metadata dict.

    Raises:
        AssetError: missing, truncated, corrupt, or not a DFR file (another stylerig model, say).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "dfr.safetensors"
    tensors, meta = load_tensors(p, what="DFR network", hint=_HINT)
    if meta.get("format") != FORMAT:
        kind = meta.get("format") or "no stylerig format tag"
        raise AssetError(f"{p} is not a DFR network ({kind})", hint=_HINT)
    if meta.get("version") != str(_VERSION):
        raise AssetError(
            f"{p} has DFR version {meta.get('version')!r}; this stylerig reads {_VERSION}", hint=_HINT
        )
    try:
        cfg = json.loads(meta["config"])
        F = DFR(cfg["num_ws"], cfg["w_dim"], cfg["hidden"], output_scale=cfg.get("output_scale"))
        F.load_state_dict(tensors, strict=True)
        info = json.loads(meta.get("info") or "{}")
    except (KeyError, TypeError, ValueError, RuntimeError, InputError) as e:
        raise AssetError(
            f"{p} is a damaged DFR file ({type(e).__name__}: {str(e).splitlines()[0]})", hint=_HINT
        ) from e
    F.info = info
    F.eval().requires_grad_(False)
    return F.to(device)
