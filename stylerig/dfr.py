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

**Light model** (optional, ``light_dims = k > 0``; not in the paper). The 27 SH coefficients are
confined to an affine subspace of plausible lights: ``L = light_mean + B Bᵀ (L_mlp − light_mean)`` with
``B`` [27, k] the top k principal directions of a statistical light prior (:func:`light_model`,
:meth:`DFR.set_light_model`), as real-data systems use a statistical illumination prior such as the
Basel Illumination Prior. Without it the frontal SH term and the constant band shade a face almost
alike (cosine 0.90) and trade off against the albedo, so a photometric fit cannot tell them apart; the
prior ties them to each other as plausible lights do. On the built-in world the light's statistics
come from the world's prior (:func:`stylerig.worlds.prior.light_statistics`), and with k = 4 the DFR reads
the light at a correlation of 0.65 instead of 0.48 (``docs/rignet.md``). The model says which lights are plausible, not how
far along each direction: ``fit-dfr --light-prior-weight`` adds the prior's Gaussian along its
directions (:func:`light_spread`, :func:`stylerig.losses.light_prior_loss`), which on the world keeps F
from reading a dark skin as light from above (``docs/rignet.md``, session 13).

**Coefficient model** (optional, ``confined=True``; not in the paper). Some outputs are held at
``p_init``: ``p = p_init + p_keep * p_scale * fc2(...)`` with ``p_keep`` [257] 1 for a free output and 0
for a held one (:meth:`DFR.set_confinement`). On the built-in world ``fit-dfr --confine`` holds the
identity, expression and reflectance components the world's faces never use
(:func:`stylerig.worlds.prior.used_coefficients`: 7 of 80, 6 of 64 and 6 of 80 are used), as a
statistical face model keeps only the components its data span. Unconfined, F puts part of what it sees
into unused components (most of all a frown for the smile) and reads the used ones short; confined, it
reads them at nearly their full size (smile slope 0.67 -> 0.85), and the demo's rig edits the expression
at an error ratio of 0.34 instead of 0.44 (``docs/rignet.md``, session 14).

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

__all__ = [
    "DEFAULT_HIDDEN",
    "DFR",
    "FORMAT",
    "OUTPUT_SCALE",
    "light_model",
    "light_spread",
    "load_dfr",
    "project_light",
    "read_light_statistics",
    "save_dfr",
    "ws_statistics",
]

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


def project_light(p: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """p float [N, 257] with its 27 SH coefficients L replaced by ``mean + B Bᵀ (L − mean)``: the light
    confined to a light model's affine subspace (mean [27], basis B [27, k] with orthonormal columns,
    :func:`light_model`); differentiable; same dtype and device as p."""
    s = params.LAYOUT["illumination"]
    mean, basis = mean.to(p), basis.to(p)
    light = mean + ((p[:, s] - mean) @ basis) @ basis.T
    return torch.cat([p[:, : s.start], light, p[:, s.stop :]], dim=1)


def light_model(mean: torch.Tensor, cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine subspace of a statistical light prior that :class:`DFR`'s light model confines to.

    Args:
        mean: float [27] mean SH light (:mod:`stylerig.params` illumination layout: 9 coefficients per
            colour channel, R then G then B).
        cov: float [27, 27] its covariance (symmetric, positive semi-definite).
        k: how many principal directions to keep (1..27).

    Returns:
        (mean float32 [27], basis float32 [27, k] with orthonormal columns, largest variance first).

    Raises:
        InputError: wrong shapes, non-finite values, an asymmetric covariance or a bad k.
    """
    n = params.SIZES["illumination"]
    check_tensor(mean, "light mean", [n], finite=True)
    check_tensor(cov, "light covariance", [n, n], finite=True)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise InputError(f"the light model keeps 1..{n} directions, got {k!r}")
    c = cov.double()
    if not torch.allclose(c, c.T, atol=1e-9 + 1e-6 * float(c.abs().max())):
        raise InputError("the light covariance must be symmetric")
    _, vecs = torch.linalg.eigh(c)  # ascending
    return mean.float().clone(), vecs[:, -k:].flip(1).float().contiguous()


def light_spread(cov: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The prior's standard deviation along each direction of a light model.

    Args:
        cov: float [27, 27] the light prior's covariance (:func:`light_model`'s ``cov``).
        basis: float [27, k] the light model's directions (orthonormal columns).

    Returns:
        float32 [k], ``sqrt(diag(basisᵀ cov basis))`` in SH units (for the light prior of
        :func:`stylerig.losses.light_prior_loss`).
    """
    n = params.SIZES["illumination"]
    check_tensor(cov, "light covariance", [n, n], finite=True)
    check_tensor(basis, "light basis", [n, None], finite=True)
    var = ((basis.double().T @ cov.double()) * basis.double().T).sum(1)
    if bool((var <= 0).any()):
        raise InputError(
            "the light prior has no spread along a direction of the light model; keep fewer dims"
        )
    return var.sqrt().float()


def read_light_statistics(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A light prior file: an ``.npz`` with ``mean`` [27] and ``cov`` [27, 27] SH light statistics (the
    :mod:`stylerig.params` illumination layout), e.g. fitted to the Basel Illumination Prior's samples.

    Raises:
        AssetError: missing or unreadable file, missing arrays, wrong shapes or non-finite values.
    """
    import numpy as np

    hint = "write one with numpy.savez(path, mean=<[27] SH light>, cov=<[27, 27] covariance>)"
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            mean, cov = np.asarray(z["mean"], dtype=np.float64), np.asarray(z["cov"], dtype=np.float64)
    except FileNotFoundError as e:
        raise AssetError(f"light prior {p}: no such file", hint=hint) from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # a .npy: a bare array
        raise AssetError(
            f"light prior {p} is not an .npz with mean and cov ({type(e).__name__}: {e})", hint=hint
        ) from e
    n = params.SIZES["illumination"]
    if mean.shape != (n,) or cov.shape != (n, n) or not (np.isfinite(mean).all() and np.isfinite(cov).all()):
        raise AssetError(
            f"light prior {p}: mean must be [{n}] and cov [{n}, {n}], finite; got {list(mean.shape)} and "
            f"{list(cov.shape)}",
            hint=hint,
        )
    return torch.from_numpy(mean), torch.from_numpy(cov)


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
        light_dims: k > 0 confines the light to a k-dimensional affine subspace (the module docstring's
            light model; buffers ``light_mean`` [27] and ``light_basis`` [27, k], set with
            :meth:`set_light_model`); 0 = 27 free SH coefficients, as in the paper.
        confined: hold some outputs at ``p_init`` (the module docstring's coefficient model; buffer
            ``p_keep`` float [257] of 1 = free, 0 = held, set with :meth:`set_confinement`); False = every
            output free, as in the paper.

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
        light_dims: int = 0,
        confined: bool = False,
    ) -> None:
        super().__init__()
        self.confined = bool(confined)
        n_light = params.SIZES["illumination"]
        if not isinstance(light_dims, int) or isinstance(light_dims, bool) or not 0 <= light_dims <= n_light:
            raise InputError(f"DFR light_dims must be an integer in 0..{n_light}, got {light_dims!r}")
        self.light_dims = light_dims
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
        if light_dims:  # placeholders until set_light_model (or load_dfr) fills them
            self.register_buffer("light_mean", torch.zeros(n_light))
            self.register_buffer("light_basis", torch.eye(n_light, light_dims))
        if self.confined:  # every output free until set_confinement (or load_dfr) says otherwise
            self.register_buffer("p_keep", torch.ones(params.NUM_PARAMS))

    def set_confinement(self, keep: torch.Tensor) -> None:
        """Which outputs F may move (``confined=True``): keep bool [257], True = free, False = held at
        ``p_init`` (e.g. :func:`stylerig.worlds.prior.used_coefficients`)."""
        if not self.confined:
            raise InputError("this DFR is not confined (confined=False)")
        check_tensor(keep, "keep", [params.NUM_PARAMS], dtypes=(torch.bool,))
        self.p_keep.copy_(keep.to(self.p_keep))

    def set_light_model(self, mean: torch.Tensor, basis: torch.Tensor) -> None:
        """Set the light model (``light_dims > 0``): mean float [27] and basis float [27, light_dims] with
        orthonormal columns (:func:`light_model`)."""
        if not self.light_dims:
            raise InputError("this DFR has no light model (light_dims=0)")
        n = params.SIZES["illumination"]
        check_tensor(mean, "light mean", [n], finite=True)
        check_tensor(basis, "light basis", [n, self.light_dims], finite=True)
        gram = basis.double().T @ basis.double()
        if not torch.allclose(gram, torch.eye(self.light_dims, dtype=gram.dtype), atol=1e-4):
            raise InputError("the light basis must have orthonormal columns (see stylerig.dfr.light_model)")
        self.light_mean.copy_(mean)
        self.light_basis.copy_(basis)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor settings (JSON-able) that rebuild this network's shape."""
        return (
            {
                "num_ws": self.num_ws,
                "w_dim": self.w_dim,
                "hidden": list(self.hidden),
                "output_scale": self.output_scale,
            }
            | ({"light_dims": self.light_dims} if self.light_dims else {})
            | ({"confined": True} if self.confined else {})
        )

    def extra_repr(self) -> str:
        light = f", light_dims={self.light_dims}" if self.light_dims else ""
        if self.confined:
            light += f", free outputs={int(self.p_keep.sum())}"
        return f"num_ws={self.num_ws}, w_dim={self.w_dim}, hidden={list(self.hidden)}{light}"

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
        d = self.p_scale * getattr(self, f"fc{n}")(x)
        p = self.p_init + (d * self.p_keep if self.confined else d)
        if not self.light_dims:
            return p
        return project_light(p, self.light_mean, self.light_basis)


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
        F = DFR(
            cfg["num_ws"],
            cfg["w_dim"],
            cfg["hidden"],
            output_scale=cfg.get("output_scale"),
            light_dims=cfg.get("light_dims", 0),
            confined=bool(cfg.get("confined", False)),
        )
        F.load_state_dict(tensors, strict=True)
        info = json.loads(meta.get("info") or "{}")
    except (KeyError, TypeError, ValueError, RuntimeError, InputError) as e:
        raise AssetError(
            f"{p} is a damaged DFR file ({type(e).__name__}: {str(e).splitlines()[0]})", hint=_HINT
        ) from e
    F.info = info
    F.eval().requires_grad_(False)
    return F.to(device)
