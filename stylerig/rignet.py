"""RigNet: edit a W+ code so that the generator's image obeys target face-rig parameters (paper §3).

Structure (Tewari et al., CVPR 2020, "a linear two-layer perceptron" applied per ws slot)::

    ws [B, S, D] ─► encoder: S independent linears w_i ─► l_i [B, S, latent]
    p  [B, 257] ─► τ block p^τ [B, k] ─► normalise ─► x [B, k]  (the same x for every slot)
    decoder: S independent linears [l_i ; x] ─► d_i [B, S, D]          ŵ = ws + d

with S = ``num_ws``, D = ``w_dim`` and k = |τ| the size of the mode's block (:data:`stylerig.params.MODES`:
``pose`` 3 rotation angles, ``expression`` 64, ``illumination`` 27, ``all`` their 94 together, in that
storage order of p). There is no non-linearity: ŵ is an affine function of (w, p^τ). (``hidden=H > 0``
is an option outside the paper: each decoder gets a hidden layer of width H with LeakyReLU 0.2.)

**The steering baseline** (``arch="steering"``, the paper's §8.4 comparison after Jahanian et al.): no
encoder and no w input; each slot's decoder maps only the *change* of the parameters to a latent change,
``d_i = D_i ((p^τ_target − p^τ_current) / scale)`` (no bias, so "no change" is exactly ŵ = w). RigNet's
call carries one parameter vector, so the steering rig needs the current parameters from the caller:
``rig(ws, p_target, p_current=F(ws))`` -- in training and editing that is the DFR's estimate of the
code being edited. The RigNet arch ignores ``p_current``, so callers may always pass it.

**The change-conditioned RigNet** (``arch="delta"``; not in the paper). RigNet's encoder and decoders, but
each decoder reads the change ``Δx = x_target − x_current`` instead of the target, and the residual is
``d_i(l_i, Δx) − d_i(l_i, 0)``: "no change" is exactly ŵ = w by construction instead of by L_rec, while
the edit still depends on w (through l_i, when the decoders have a hidden layer; with linear decoders
the difference cancels l_i and the arch is the steering baseline with an encoder that does nothing).
With ``split`` decoders, a group whose block is not changed adds exactly nothing, so an ``all`` rig's
single-group edits leave the other groups' decoders out. Like the steering rig it needs ``p_current``.

**Normalisation of p^τ** (:meth:`RigNet.set_statistics`). Angles are radians (spread ~0.1-0.4), expression
coefficients standard deviations (~1), SH coefficients ~0.05-0.3: one linear layer sees them at very
different scales, and dimensions the data never moves (the padding of a face model with fewer
components, which a DFR reproduces as near-constant noise) would be blown up by a per-dimension
whitening. So the decoder sees ``x = (p^τ − mean) / scale`` with, per dimension, ``mean`` the training
mean of F(w)^τ and ``scale = max(std, 0.1 × rms std of its group)`` (the group being rotation,
expression or illumination): dimensions that vary are whitened, near-constant ones stay near 0 instead
of becoming unit-size noise. Before statistics are set, mean = 0 and scale = 1 (raw units). The
statistics (``mean``, ``std``, ``scale``, ``lo``, ``hi``, ``count``) are buffers: they are saved with the rig,
and :meth:`RigNet.outside_range` tells an editor when a target lies outside what the rig saw in training.

**Initialisation.** Encoders like :class:`torch.nn.Linear` (uniform, ±1/sqrt(D)), biases 0, decoder
weights N(0, (init_scale² / fan_in)): with the default ``init_scale = 0.01`` ŵ differs from w by ~1 % of
its spread at start, while the gradient still reaches the encoders at the first step (with
``init_scale = 0`` ŵ = w exactly, but the encoders get no gradient until the decoders have moved).

**Tied slots** (``tied=True``; not in the paper). A generator trained without style mixing (the built-in
world's, whose sample sets are unmixed because only unmixed codes have ground truth) only ever sees W+
codes whose slots are all equal, and so does a DFR trained on its samples. Per-slot residuals then open
a channel the DFR was never trained on: a rig can make the slots disagree in ways that move F(ŵ) but not
the generator's image (it fools the frozen DFR instead of editing the face). ``tied=True`` adds the same
residual to every slot (the mean of the per-slot decoders' outputs), which keeps ŵ on the codes' own
"all slots equal" subspace; :func:`stylerig.training.rignet.train_rignet` turns it on when every training
code has identical slots. (On the built-in world it did not change the measured edits: the rig fools F
within the slots' w too; see ``docs/rignet.md``.)

**Edit subspace** (``subspace=k > 0``; not in the paper). Each slot's residual is projected onto the
top k principal directions of the training codes' w (:meth:`RigNet.set_subspace`): a DFR is only trained
on the codes' own distribution, and a rig free to move w along directions the codes never use can move
F(ŵ) without moving the generator's image (when the codes fill a low-dimensional manifold, as the
built-in world's 38-factor codes do).

**Losses** (:func:`rig_losses`; ``../shared/DESIGN.md``): with a frozen DFR F, for a pair (w, v) and a
group g of the mode, target t = p_w with g replaced by p_v^g, ŵ = rig(w, t), p_ŵ = F(ŵ):

* L_rec = mean over slots and channels of (rig(w, p_w) − w)² (the squared L2 norm / (S·D): per-element
  MSE in mapping-output units, like the render loss's per-pixel mean; with the sum over the 512 channels
  instead, weight 1 anchored the rig so hard that the world's pose edits reached a quarter of the
  requested yaw, see ``docs/rignet.md``);
* L_edit = L_render(I_v, p_v with g replaced by p_ŵ^g);
* L_consist = L_render(I_w, p_ŵ with g replaced by p_w^g);

each in both directions (w→v and v→w). For a single-group mode there is one g (the rig's own block, so t^τ =
p_v^τ: exactly the paper's Eq. 2); for ``all`` each pair gives three samples, one per group, each changing
exactly that group (paper §8.5). No generator is in the loop: I_w, I_v and their landmarks come from
the sample set.

Optional, not in the paper: L_param (``param_weight``) = mean over g's values of ((p_ŵ − t) / s)² + the
same mean over the other values, with s F's output scale (or, ``param_scale``, any unit per value such as
:func:`spread_scale` of F(w)): the conditions of L_edit and L_consist on the parameters themselves, where
every value counts alike (``docs/rignet.md``, sessions 11 and 15).

Example:
    >>> import torch
    >>> from stylerig.rignet import RigNet
    >>> rig = RigNet(num_ws=12, w_dim=512, mode="pose")
    >>> rig(torch.randn(2, 12, 512), torch.zeros(2, 257)).shape
    torch.Size([2, 12, 512])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylerig import params
from stylerig._checks import check_tensor
from stylerig.errors import AssetError, InputError

__all__ = [
    "ARCHS",
    "FORMAT",
    "FORMAT_VERSION",
    "PairBatch",
    "RigLossConfig",
    "RigLossOutput",
    "RigNet",
    "SlotLinear",
    "load_rignet",
    "rig_losses",
    "save_rignet",
]

#: ``format`` value in the metadata of every saved rig.
FORMAT = "stylerig.rignet"
#: Version of the saved layout (tensor names + config keys).
FORMAT_VERSION = "1"
#: Network architectures: the paper's RigNet, its latent-steering baseline, and RigNet conditioned on the
#: parameter change (see the module docstring).
ARCHS = ("rignet", "steering", "delta")
#: A dimension's normalisation scale is at least this fraction of its group's rms standard deviation.
SCALE_FLOOR = 0.1


def spread_scale(x: torch.Tensor, groups: tuple[str, ...] | list[str]) -> torch.Tensor:
    """Per-value normalisation scale of parameter values: max(spread, :data:`SCALE_FLOOR` × the rms
    spread of the value's group, 1e-8).

    Args:
        x: float [N, K] (N >= 2), whose columns are the blocks of ``groups`` in order (K = their sizes'
            sum; all of :data:`stylerig.params.GROUPS` for a whole parameter vector).
        groups: group names of :mod:`stylerig.params`.

    Returns:
        float64 [K]: the population std per column, floored per group, so that values the data never
        moves (a face model's unused components) are not blown up to unit noise.
    """
    x = x.detach().to(torch.float64)
    std = x.std(0, unbiased=False)
    scale = torch.empty_like(std)
    start = 0
    for group in groups:
        s = slice(start, start + params.SIZES[group])
        floor = max(SCALE_FLOOR * float(std[s].pow(2).mean().sqrt()), 1e-8)
        scale[s] = std[s].clamp_min(floor)
        start = s.stop
    return scale


_HINT_FILE = "pass a rig written by `stylerig train-rignet` (its rig.safetensors)"


# ----------------------------------------------------------------------------------------------------
# Layers.


class SlotLinear(nn.Module):
    """S independent affine maps, one per ws slot: x [B, S, in] -> y [B, S, out].

    ``y[:, i] = x[:, i] @ weight[i].T + bias[i]``. Parameters: ``weight`` float32 [S, out, in],
    ``bias`` float32 [S, out] (absent when ``bias=False``).
    """

    def __init__(
        self,
        num_slots: int,  # S: number of ws slots
        in_features: int,  # input width per slot
        out_features: int,  # output width per slot
        *,
        bias: bool = True,  # learn a per-slot bias
        weight_std: float | None = None,  # None: nn.Linear's uniform(±1/sqrt(in)); else N(0, weight_std²)
    ) -> None:
        super().__init__()
        self.num_slots, self.in_features, self.out_features = num_slots, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_slots, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_slots, out_features)) if bias else None
        with torch.no_grad():
            if weight_std is None:
                bound = 1.0 / math.sqrt(in_features)
                self.weight.uniform_(-bound, bound)
            else:
                self.weight.normal_(0.0, weight_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bsi,soi->bso", x, self.weight.to(x.dtype))
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


# ----------------------------------------------------------------------------------------------------
# RigNet.


class RigNet(nn.Module):
    """The paper's RigNet (or its steering baseline) for one rig mode; see the module docstring.

    Call: ``rig(ws, p, p_current=None) -> ŵ``.

    Args of the call:
        ws: float [B, num_ws, w_dim], the W+ codes to edit (mapping-output units), on the rig's device.
        p: float [B, 257], full target parameter vectors (layout :mod:`stylerig.params`; rotation in
            radians). Only the rig's own block (:attr:`index`) is read.
        p_current: float [B, 257], the current parameters of ``ws`` (normally F(ws)); required by the
            steering and delta archs (which read its τ block), ignored by the RigNet arch.

    Returns:
        ŵ = ws + d, float [B, num_ws, w_dim], same dtype and device as ``ws``.

    Attributes:
        mode: ``pose``, ``expression``, ``illumination`` or ``all``.
        arch: ``rignet``, ``steering`` or ``delta``.
        index: int64 [k], the positions in p of the values the rig reads (:func:`stylerig.params.mode_index`).
        mean, std, scale, lo, hi: float32 [k] buffers, training statistics of F(w)^τ (see
            :meth:`set_statistics`); ``count`` int64 [] the number of samples they came from (0 = unset).
    """

    def __init__(
        self,
        num_ws: int,  # S: number of ws slots of the generator
        w_dim: int,  # D: width of each w
        mode: str,  # rig mode: pose | expression | illumination | all
        latent: int = 32,  # width of each slot's encoding l_i (paper: 32)
        arch: str = "rignet",  # rignet (paper) | steering (baseline: Δp -> Δw, no w input) | delta
        init_scale: float = 0.01,  # decoder weights ~ N(0, init_scale² / fan_in); 0 -> ŵ = w exactly
        tied: bool = False,  # one residual for every slot: d = mean_i d_i (for codes with identical slots)
        subspace: int = 0,  # > 0: project each slot's residual onto this many principal directions of w
        hidden: int = 0,  # > 0: a hidden layer (LeakyReLU 0.2) of this width in each decoder (paper: 0)
        split: bool = False,  # mode all: one decoder per group, each reading its own block; d = their sum
    ) -> None:
        super().__init__()
        params.mode_groups(mode)  # raises InputError for an unknown mode
        if arch not in ARCHS:
            raise InputError(f"unknown RigNet arch {arch!r}; expected one of {', '.join(ARCHS)}")
        for name, value in (("num_ws", num_ws), ("w_dim", w_dim), ("latent", latent)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"RigNet {name} must be a positive integer, got {value!r}")
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale >= 0):
            raise InputError(f"RigNet init_scale must be a finite number >= 0, got {init_scale!r}")
        self.num_ws, self.w_dim, self.mode, self.latent, self.arch = num_ws, w_dim, mode, latent, arch
        self.init_scale = float(init_scale)
        self.tied = bool(tied)
        if not isinstance(subspace, int) or isinstance(subspace, bool) or not 0 <= subspace <= w_dim:
            raise InputError(f"RigNet subspace must be an integer in 0..{w_dim}, got {subspace!r}")
        self.subspace = subspace
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
            raise InputError(f"RigNet hidden must be an integer >= 0, got {hidden!r}")
        self.hidden = hidden
        self.split = bool(split)
        if self.split and len(params.mode_groups(mode)) < 2:
            raise InputError(f"split decoders need a rig of several groups (mode all), not {mode!r}")
        self.extra_config: dict[str, Any] = {}  # facts stored with a saved rig (see save_rignet)
        index = params.mode_index(mode)
        k = int(index.numel())
        self.num_params = k
        self.register_buffer("index", index, persistent=False)

        # Networks.
        reads_w = arch != "steering"
        self.encoder: SlotLinear | None = SlotLinear(num_ws, w_dim, latent) if reads_w else None
        widths = [params.SIZES[g] for g in self.groups] if self.split else [k]
        self._blocks = [(sum(widths[:i]), sum(widths[: i + 1])) for i in range(len(widths))]
        hiddens, decoders = [], []
        for width in widths:
            dec_in = (latent if reads_w else 0) + width
            if hidden:  # a non-linear decoder (an option; the paper's is linear)
                hiddens.append(SlotLinear(num_ws, dec_in, hidden, bias=reads_w))
                dec_in = hidden
            decoders.append(
                SlotLinear(
                    num_ws,
                    dec_in,
                    w_dim,
                    bias=reads_w,
                    weight_std=self.init_scale / math.sqrt(dec_in),
                )
            )
        # One decoder (the paper's), or with ``split`` one per group in ModuleLists.
        self.decoder_hidden: SlotLinear | nn.ModuleList | None = None
        if self.split:
            self.decoder_hidden = nn.ModuleList(hiddens) if hidden else None
            self.decoder: SlotLinear | nn.ModuleList = nn.ModuleList(decoders)
        else:
            self.decoder_hidden = hiddens[0] if hidden else None
            self.decoder = decoders[0]

        # Training statistics of F(w)^τ (normalisation and the range an editor may trust).
        for name, fill in (("mean", 0.0), ("std", 1.0), ("scale", 1.0), ("lo", 0.0), ("hi", 0.0)):
            self.register_buffer(name, torch.full((k,), fill))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        if subspace:  # orthonormal columns; set from the training codes with set_subspace
            self.register_buffer("basis", torch.eye(w_dim, subspace))

    # ------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable); ``RigNet(**rig.config())`` rebuilds the network."""
        return {
            "num_ws": self.num_ws,
            "w_dim": self.w_dim,
            "mode": self.mode,
            "latent": self.latent,
            "arch": self.arch,
            "init_scale": self.init_scale,
            "tied": self.tied,
            "subspace": self.subspace,
            "hidden": self.hidden,
            "split": self.split,
        }

    @property
    def needs_current(self) -> bool:
        """True when the call needs ``p_current`` (the steering and delta archs read the change)."""
        return self.arch in ("steering", "delta")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    @property
    def groups(self) -> tuple[str, ...]:
        """The parameter groups this rig controls, in storage order (``all`` -> rotation, expression, illumination)."""
        return params.mode_groups(self.mode)

    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_statistics(self, p: torch.Tensor) -> None:
        """Store the training statistics of the rig's block from parameter vectors ``p``.

        Args:
            p: float [N, 257] (N >= 2), normally F(w) over the training samples; rotation in radians.

        Sets, per controlled dimension, ``mean``, ``std`` (population), ``scale`` = max(std,
        :data:`SCALE_FLOOR` × the rms std of the dimension's group, tiny floor 1e-8), ``lo`` / ``hi``
        (min / max) and ``count`` = N. The decoder input is ``(p^τ - mean) / scale``.
        """
        check_tensor(p, "p", [None, params.NUM_PARAMS], finite=True)
        if p.shape[0] < 2 or not p.is_floating_point():
            raise InputError(
                f"statistics need at least 2 floating-point parameter vectors, got {p.shape[0]} of {p.dtype}"
            )
        x = p.detach().to(self.mean.device, torch.float64)[:, self.index.to(self.mean.device)]
        mean, std = x.mean(0), x.std(0, unbiased=False)
        scale = spread_scale(x, self.groups)
        for name, value in (
            ("mean", mean),
            ("std", std),
            ("scale", scale),
            ("lo", x.min(0).values),
            ("hi", x.max(0).values),
        ):
            getattr(self, name).copy_(value.float())
        self.count.fill_(int(p.shape[0]))

    @torch.no_grad()
    def set_subspace(self, ws: torch.Tensor) -> None:
        """Set the edit subspace (``subspace > 0``) to the top principal directions of training codes.

        Args:
            ws: float [N, num_ws, w_dim] training W+ codes (all slots pooled; N × num_ws >= subspace).
        """
        if not self.subspace:
            raise InputError("this rig has no edit subspace (subspace=0)")
        check_tensor(ws, "ws", [None, self.num_ws, self.w_dim], finite=True)
        x = ws.detach().reshape(-1, self.w_dim).double().cpu()
        x = x - x.mean(0)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        if vh.shape[0] < self.subspace:
            raise InputError(f"{x.shape[0]} code slots cannot span a {self.subspace}-d subspace")
        self.basis.copy_(vh[: self.subspace].T.float())

    def normalise(self, p: torch.Tensor) -> torch.Tensor:
        """The decoder's view of p: ``(p^τ - mean) / scale``, float [B, k] from p float [B, 257]."""
        x = p[:, self.index]
        return (x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)

    @torch.no_grad()
    def outside_range(self, p: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """Which controlled values of ``p`` lie outside the training range.

        Args:
            p: float [B, 257] target parameters (radians for rotation).
            margin: widen [lo, hi] by ``margin × scale`` on each side.

        Returns:
            bool [B, k]: True where p^τ < lo − margin·scale or > hi + margin·scale. All False when the rig
            has no statistics (``count == 0``).
        """
        check_tensor(p, "p", [None, params.NUM_PARAMS])
        x = p[:, self.index.to(p.device)].to(self.lo.device, torch.float32)
        if int(self.count) == 0:
            return torch.zeros_like(x, dtype=torch.bool)
        pad = margin * self.scale
        return (x < self.lo - pad) | (x > self.hi + pad)

    # ------------------------------------------------------------------------------------------------
    def forward(
        self, ws: torch.Tensor, p: torch.Tensor, p_current: torch.Tensor | None = None
    ) -> torch.Tensor:
        sizes: dict[str, int] = {}
        check_tensor(ws, "ws", ["B", self.num_ws, self.w_dim], sizes=sizes)
        check_tensor(p, "p", ["B", params.NUM_PARAMS], sizes=sizes)
        if not ws.is_floating_point() or not p.is_floating_point():
            raise InputError(f"ws and p must be floating point, got {ws.dtype} and {p.dtype}")
        device = self.mean.device
        if ws.device != device or p.device != ws.device:
            raise InputError(
                f"ws ({ws.device}), p ({p.device}) and the rig ({device}) must share a device",
                hint="move the tensors with .to(device) or the rig with rig.to(device)",
            )
        x = self.normalise(p.to(ws.dtype))  # [B, k]
        if self.needs_current:
            if p_current is None:
                raise InputError(
                    f"the {self.arch} rig edits by parameter change and needs p_current (the parameters of ws)",
                    hint="pass p_current=F(ws), the DFR's estimate of the code being edited",
                )
            check_tensor(p_current, "p_current", ["B", params.NUM_PARAMS], sizes=sizes)
            x = x - self.normalise(p_current.to(device=ws.device, dtype=ws.dtype))
        latent = self.encoder(ws) if self.encoder is not None else None  # [B, S, latent]
        d = self._residual(latent, x, ws)
        if self.arch == "delta":  # no change -> exactly no edit
            d = d - self._residual(latent, torch.zeros_like(x), ws)
        if self.tied:
            d = d.mean(1, keepdim=True).expand_as(d)
        if self.subspace:
            u = self.basis.to(d.dtype)  # [D, k]
            d = (d @ u) @ u.T
        return ws + d

    def _residual(self, latent: torch.Tensor | None, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """The decoders' sum d [B, S, D] from the slot encodings (or None) and the decoder input x [B, k]."""
        decoders = self.decoder if isinstance(self.decoder, nn.ModuleList) else [self.decoder]
        hiddens = (
            self.decoder_hidden
            if isinstance(self.decoder_hidden, nn.ModuleList)
            else [self.decoder_hidden] * len(decoders)
        )
        d = ws.new_zeros(())
        for (a, b), hid, dec in zip(self._blocks, hiddens, decoders, strict=True):
            dec_in = x[:, None, a:b].expand(-1, self.num_ws, -1)
            if latent is not None:
                dec_in = torch.cat([latent, dec_in], dim=-1)
            if hid is not None:
                # No bias in the steering arch: a zero change still gives exactly d = 0.
                dec_in = torch.nn.functional.leaky_relu(hid(dec_in), 0.2)
            d = d + dec(dec_in)  # [B, S, D]
        return d


# ----------------------------------------------------------------------------------------------------
# Save / load.


def save_rignet(
    rig: RigNet, path: str | os.PathLike[str], extra_config: Mapping[str, Any] | None = None
) -> Path:
    """Write ``rig`` as one safetensors file (tensors + JSON config), atomically.

    Args:
        rig: the rig (any device; tensors are written as float32 / int64 on CPU).
        path: output file, conventionally ``rig.safetensors``.
        extra_config: JSON-serialisable facts stored beside the config (training data, DFR, steps, ...);
            :func:`load_rignet` puts them back on ``rig.extra_config``.

    Returns:
        the path written.
    """
    from stylerig.tensorfile import save_tensors

    if not isinstance(rig, RigNet):
        raise InputError(f"save_rignet needs a RigNet, got {type(rig).__name__}")
    try:
        extra = json.dumps(dict(extra_config or {}), sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InputError(f"extra_config is not JSON-serialisable ({e})") from e
    tensors = {k: v.detach().cpu() for k, v in rig.state_dict().items()}
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(rig.config(), sort_keys=True),
        "extra": extra,
    }
    return save_tensors(path, tensors, meta)


def load_rignet(path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> RigNet:
    """Read a rig written by :func:`save_rignet` (no pickle involved), in eval mode on ``device``.

    ``path`` may also be a ``train-rignet`` output folder (its ``rig.safetensors`` is read). The stored ``extra_config`` is available as ``rig.extra_config`` (a dict).

    Raises:
        AssetError: the file is missing, corrupt, not a rig, of another format version, or its tensors
            do not match its config.
    """
    from stylerig.tensorfile import load_tensors

    path = Path(path)
    if path.is_dir():
        path = path / "rig.safetensors"
    tensors, meta = load_tensors(path, what="stylerig rig", hint=_HINT_FILE)
    if meta.get("format") != FORMAT:
        raise AssetError(
            f"{path} is a safetensors file but not a stylerig rig (format: {meta.get('format') or 'unknown'})",
            hint=_HINT_FILE,
        )
    if meta.get("version") != FORMAT_VERSION:
        raise AssetError(
            f"{path} has rig format version {meta.get('version')!r}; this stylerig reads {FORMAT_VERSION!r}",
            hint="train the rig again with this version of stylerig",
        )
    try:
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra") or "{}")
        rig = RigNet(**config)
    except (KeyError, ValueError, TypeError) as e:  # InputError is a ValueError
        raise AssetError(f"{path} has an unusable rig config ({e})", hint=_HINT_FILE) from e
    ours = rig.state_dict()
    if set(ours) != set(tensors):
        missing, unexpected = sorted(set(ours) - set(tensors)), sorted(set(tensors) - set(ours))
        raise AssetError(
            f"{path}: the tensors do not match the rig config (missing: {missing or 'none'}; "
            f"unexpected: {unexpected or 'none'})",
            hint="the file is corrupt; train the rig again",
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(ours[k].shape) or v.dtype != ours[k].dtype:
            raise AssetError(
                f"{path}: tensor {k} is {v.dtype} {tuple(v.shape)}, expected {ours[k].dtype} {tuple(ours[k].shape)}",
                hint="the file is corrupt; train the rig again",
            )
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise AssetError(
                f"{path}: tensor {k} contains NaN or infinite values", hint="the file is corrupt"
            )
    rig.load_state_dict(tensors, strict=True)
    rig.extra_config = extra if isinstance(extra, dict) else {"value": extra}
    return rig.to(device).eval()


# ----------------------------------------------------------------------------------------------------
# Losses.


@dataclass(frozen=True)
class PairBatch:
    """A batch of B training pairs (w, v) from the sample set, all on one device.

    Attributes:
        ws_w, ws_v: float [B, num_ws, w_dim], the two codes of each pair.
        images_w, images_v: [B, ...] the codes' images, in whatever form ``render_loss_fn`` takes
            (e.g. float [B, 3, R, R] in [-1, 1]); only concatenated along dim 0 here.
        landmarks_w, landmarks_v: [B, ...] their landmarks (e.g. float [B, 68, 2] pixels), likewise.
        p_w, p_v: optional float [B, 257], F(ws_w) and F(ws_v) if already known (F is frozen, so they
            may be precomputed once per sample); computed by :func:`rig_losses` when None.
    """

    ws_w: torch.Tensor
    ws_v: torch.Tensor
    images_w: torch.Tensor
    images_v: torch.Tensor
    landmarks_w: torch.Tensor
    landmarks_v: torch.Tensor
    p_w: torch.Tensor | None = None
    p_v: torch.Tensor | None = None


@dataclass(frozen=True)
class RigLossConfig:
    """Which RigNet loss terms are on (the paper's ablation switches) and their weights (default 1).

    A switched-off L_rec is still computed (cheaply, without gradient) for the log; switched-off L_edit /
    L_consist are not computed at all (each costs renders).
    """

    rec: bool = True
    edit: bool = True
    consist: bool = True
    rec_weight: float = 1.0
    edit_weight: float = 1.0
    consist_weight: float = 1.0
    #: ``((group, weight), ...)``: per-group weights of the L_edit and L_consist terms of the edits of
    #: that group (mode ``all``; groups of :mod:`stylerig.params`: rotation, expression, illumination;
    #: unnamed groups weigh 1). The edits' render losses differ by orders of magnitude between groups (a
    #: 20-degree turn moves every landmark, a smile two mouth corners), so one sum lets pose starve the
    #: rest. Each term is ``Σ_g w_g mean_g / G``: all weights 1 is the plain mean.
    group_weights: tuple[tuple[str, float], ...] = ()
    #: Weight of L_param (not in the paper; 0 = off): the edit and consistency conditions stated on F's
    #: parameters instead of through the renderer, ``mean_g |(F(ŵ)_g − target_g) / s|^2`` over the edited
    #: group's values plus the same over every other value against the source's F(w), with ``s`` F's
    #: output scale (1 sd for coefficients, 0.3 rad / 0.3 for rotation and light). Every value then counts
    #: alike, where the render loss sees a small expression component only through a fraction of a pixel.
    param_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rec_weight", "edit_weight", "consist_weight", "param_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        for g, v in self.group_weights:
            if g not in params.LAYOUT or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(
                    f"bad group weight {g}={v!r}: the group must be one of rotation, expression, "
                    "illumination and the weight a finite number >= 0",
                    hint="write GROUP=WEIGHT pairs separated by commas, e.g. expression=10,illumination=3",
                )
        if not (self.rec or self.edit or self.consist):
            raise InputError(
                "every RigNet loss term is switched off", hint="keep at least one of rec/edit/consist"
            )


@dataclass(frozen=True)
class RigLossOutput:
    """What :func:`rig_losses` returns.

    Attributes:
        total: float [] (differentiable), Σ weight × mean of each switched-on term.
        parts: name -> float [] detached means: ``rec``, and ``edit`` / ``consist`` when computed.
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


#: ``(p [N, 257], images [N, ...], landmarks [N, ...]) -> per-sample loss [N]``.
RenderLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, b], dim=0)


def rig_losses(
    rig: RigNet | nn.Module,
    dfr: Callable[[torch.Tensor], torch.Tensor],
    render_loss_fn: RenderLossFn,
    batch: PairBatch,
    config: RigLossConfig | None = None,
    *,
    param_scale: torch.Tensor | None = None,
) -> RigLossOutput:
    """RigNet's training loss for one batch of pairs, both directions (w→v and v→w), as in DESIGN.md.

    Args:
        rig: the rig being trained (or its DDP wrapper: it is called exactly once).
        dfr: the frozen DFR, ``F(ws float [N, num_ws, w_dim]) -> p float [N, 257]``; its parameters must
            not require gradients (the gradient flows *through* it to the rig). Its ``p_scale`` [257]
            (a :class:`~stylerig.dfr.DFR`'s output scale) normalises L_param; without one, 1.
        render_loss_fn: ``(p float [N, 257], images [N, ...], landmarks [N, ...]) -> float [N]``, the
            per-sample L_render (masked photometric + landmark term) of rendering p against the images.
        batch: B pairs; see :class:`PairBatch`.
        config: switches and weights (default: all terms, weights 1).

    With ``config.param_weight > 0`` the total also holds L_param (:attr:`RigLossConfig.param_weight`,
    not in the paper), computed from the same F(ŵ) without another render. ``param_scale``: float [257]
    > 0, the unit of each value in L_param (e.g. :func:`spread_scale` of F(w) over the training set);
    default F's ``p_scale``.

    Returns:
        :class:`RigLossOutput` with the scalar total and the per-term means. Each mean runs over the 2B
        directed pairs (× the 3 groups for mode ``all``, see the module docstring).
    """
    config = config or RigLossConfig()
    net: RigNet = getattr(rig, "module", rig)  # the plain rig under a DDP wrapper
    sizes: dict[str, int] = {}
    shape = ["B", net.num_ws, net.w_dim]
    check_tensor(batch.ws_w, "ws_w", shape, sizes=sizes)
    check_tensor(batch.ws_v, "ws_v", shape, sizes=sizes)
    B = sizes["B"]

    # Both directions in one batch: rows 0..B-1 edit w towards v, rows B..2B-1 edit v towards w.
    src = _cat(batch.ws_w, batch.ws_v)  # [2B, S, D]
    if batch.p_w is not None and batch.p_v is not None:
        check_tensor(batch.p_w, "p_w", ["B", params.NUM_PARAMS], sizes=sizes)
        check_tensor(batch.p_v, "p_v", ["B", params.NUM_PARAMS], sizes=sizes)
        p_src = _cat(batch.p_w, batch.p_v).detach()
    else:
        with torch.no_grad():
            p_src = dfr(src)
    p_dst = torch.roll(p_src, B, dims=0)  # the other code's parameters: [p_v; p_w]
    img_src, img_dst = _cat(batch.images_w, batch.images_v), _cat(batch.images_v, batch.images_w)
    lm_src, lm_dst = _cat(batch.landmarks_w, batch.landmarks_v), _cat(batch.landmarks_v, batch.landmarks_w)

    total = src.new_zeros(())
    parts: dict[str, torch.Tensor] = {}

    # One rig call (a DDP-wrapped rig may be called only once per step): the 2B reconstruction rows
    # (each code with its own parameters), then, per group, the 2B edits whose target is the source's
    # own parameters with exactly that group taken from the other code.
    groups = net.groups if (config.edit or config.consist) else ()
    G, n = len(groups), 2 * B
    target = torch.cat([p_src] + [params.replace(p_src, g, params.get(p_dst, g)) for g in groups])
    out = rig(src.repeat(G + 1, 1, 1), target, p_current=p_src.repeat(G + 1, 1))  # [(G+1)·2B, S, D]

    # L_rec: editing a code to its own parameters is a no-op.
    rec = (out[:n] - src).pow(2).flatten(1).mean(-1)  # [2B], mean over slots and channels
    parts["rec"] = rec.mean().detach()
    if config.rec:
        total = total + config.rec_weight * rec.mean()

    if G:
        p_hat = dfr(out[n:])  # [G·2B, 257], gradient flows through the frozen F
        p_all, imgs, lms, which = [], [], [], []
        if config.edit:
            # p_edit: the other code's parameters with the edited group read from ŵ, against the other image.
            p_all += [
                params.replace(p_dst, g, params.get(p_hat[i * n : (i + 1) * n], g))
                for i, g in enumerate(groups)
            ]
            imgs += [img_dst] * G
            lms += [lm_dst] * G
            which.append("edit")
        if config.consist:
            # p_consist: ŵ's parameters with the edited group put back to the source's, against the source image.
            p_all += [
                params.replace(p_hat[i * n : (i + 1) * n], g, params.get(p_src, g))
                for i, g in enumerate(groups)
            ]
            imgs += [img_src] * G
            lms += [lm_src] * G
            which.append("consist")
        losses = render_loss_fn(torch.cat(p_all), torch.cat(imgs), torch.cat(lms))  # one render call
        check_tensor(losses, "render_loss_fn output", [len(which) * G * n])
        gw = dict(config.group_weights)
        weights = torch.tensor(
            [float(gw.get(g, 1.0)) for g in groups], dtype=losses.dtype, device=losses.device
        )
        for j, name in enumerate(which):
            term = (losses[j * G * n : (j + 1) * G * n].view(G, n).mean(1) * weights).mean()
            parts[name] = term.detach()
            total = total + getattr(config, f"{name}_weight") * term
        if config.param_weight > 0:
            scale = param_scale
            if scale is None:
                scale = getattr(getattr(dfr, "module", dfr), "p_scale", None)
            scale = p_hat.new_ones(params.NUM_PARAMS) if scale is None else scale.to(p_hat)
            per_group = []
            for i, g in enumerate(groups):
                in_g = torch.zeros(params.NUM_PARAMS, dtype=torch.bool, device=p_hat.device)
                in_g[params.LAYOUT[g]] = True
                target_i = target[(i + 1) * n : (i + 2) * n]  # the rig's request for group g
                err = ((p_hat[i * n : (i + 1) * n] - target_i) / scale).square()  # [2B, 257]
                per_group.append(err[:, in_g].mean(1) + err[:, ~in_g].mean(1))
            term = (torch.stack(per_group).mean(1) * weights).mean()
            parts["param"] = term.detach()
            total = total + config.param_weight * term
    return RigLossOutput(total=total, parts=parts)
