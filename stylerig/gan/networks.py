"""StyleGAN2 (config F, 'skip' generator) in pure PyTorch, named exactly like NVIDIA's ``G_ema``.

The network is the one of Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (2020),
as trained by NVIDIA's stylegan2-ada-pytorch. Every parameter and buffer has the name and shape of the
corresponding tensor in NVIDIA's ``G_ema.state_dict()`` (``mapping.fc{i}.weight``, ``mapping.w_avg``,
``synthesis.b{R}.const``, ``synthesis.b{R}.conv0.affine.weight``, ...), so such a state dict loads with
``strict=True`` and rosinality's checkpoints are a pure renaming (:mod:`stylerig.gan.loading`). This is
an independent implementation written from the paper and the checkpoint layout; no NVIDIA code is used.

Structure::

    z [B, z_dim] ─► MappingNetwork ─► ws [B, num_ws, w_dim] ─► SynthesisNetwork ─► img [B, C, R, R]

* Mapping: ``normalize_2nd_moment(z)`` (unless ``normalize_z=False``, the original TensorFlow StyleGAN2's
  ``normalize_latents``) then ``num_layers`` equalised-lr fully connected layers (learning-rate
  multiplier 0.01, leaky ReLU 0.2 with gain sqrt(2)); the result is broadcast to ``num_ws`` copies and
  optionally truncated towards the running mean ``w_avg``: ``w_avg + psi * (w - w_avg)``.
* Synthesis: one :class:`SynthesisBlock` ``b{R}`` per resolution R = 4, 8, ..., img_resolution. ``b4`` starts
  from a learned constant; every other block upsamples by 2 in ``conv0`` (transposed convolution followed by
  the [1,3,3,1] FIR low-pass filter). Each convolution is modulated by an affine projection of one w,
  demodulated, gets per-pixel noise, a bias and the activation. Every block has a ``torgb`` layer whose output
  is added to the upsampled RGB image of the previous block ('skip' architecture).

W+ index map (``num_ws = 2 * log2(img_resolution) - 2``; 18 at 1024, 14 at 256, 6 at 16): with
``k = log2(R) - 2``,

* ``b4``: ``conv1`` uses ws[:, 0], ``torgb`` uses ws[:, 1];
* ``b{R}`` (R >= 8): ``conv0`` uses ws[:, 2k-1], ``conv1`` ws[:, 2k], ``torgb`` ws[:, 2k+1].

So a block's ``torgb`` shares its index with the next block's ``conv0``, and the last index,
``num_ws - 1``, drives only the final ``torgb``. :meth:`SynthesisNetwork.ws_index` lists the map.

Units and conventions: images are NCHW float32, RGB, nominally in [-1, 1] (convert to 8 bit with
``(img * 127.5 + 128).clamp(0, 255)``); z ~ N(0, I); ws in the units of the mapping output. Parameters are
always stored in float32. On CUDA the synthesis blocks can compute in float16 or bfloat16 (``dtype=``):
weights are cast at use, modulated weights and demodulation coefficients are computed in float32, and
``conv_clamp`` (when the config has one) bounds every activation, as in NVIDIA's mixed-precision models.

Example:
    >>> import torch
    >>> from stylerig.gan.networks import Generator
    >>> G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
    ...               mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64})
    >>> G.num_ws, len(G.state_dict())
    (6, 56)
    >>> G(torch.randn(2, 32)).shape
    torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylerig._checks import check_tensor
from stylerig.errors import InputError

__all__ = [
    "CPU_CHUNK_BYTES",
    "LRELU_GAIN",
    "LRELU_SLOPE",
    "NOISE_MODES",
    "FullyConnectedLayer",
    "Generator",
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "bias_act",
    "make_resample_filter",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "upsample2d",
]

#: Negative slope of the leaky ReLU used everywhere.
LRELU_SLOPE = 0.2
#: Gain applied after the leaky ReLU (keeps the activations' second moment at 1).
LRELU_GAIN = math.sqrt(2.0)
#: Accepted values of ``noise_mode``.
NOISE_MODES = ("const", "random", "none")
#: On CPU, the synthesis network splits a batch so that no activation exceeds this many bytes.
CPU_CHUNK_BYTES = 24 * 2**20
#: Compute dtypes the synthesis network accepts.
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# ----------------------------------------------------------------------------------------------------
# Functional kernels.


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that its mean square along ``dim`` is 1 ("pixel norm"): [B, N] -> [B, N]."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    *,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Add a per-channel bias, apply the activation, multiply by ``gain`` and clamp.

    Args:
        x: [B, C] or [B, C, H, W].
        b: [C] bias (cast to ``x.dtype``), or None.
        activation: 'linear' or 'lrelu' (slope :data:`LRELU_SLOPE`).
        gain: multiplier applied after the activation.
        clamp: when not None, the result is clamped to [-clamp, clamp].
        inplace: allow overwriting ``x`` (honoured only when no gradient flows through ``x``).

    Returns:
        a tensor shaped like ``x``.
    """
    if activation not in ("lrelu", "linear"):
        raise InputError(f"unknown activation {activation!r}", hint="use 'lrelu' or 'linear'")
    bias = None if b is None else b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    clamp = clamp if clamp is not None and clamp >= 0 else None
    if inplace and _no_grad_through(x, b):
        # Same values, no temporaries: the leaky ReLU is positively homogeneous, so the gain can go first.
        if bias is not None:
            x.add_(bias)
        if gain != 1:
            x.mul_(gain)
        if activation == "lrelu":
            F.leaky_relu_(x, LRELU_SLOPE)
        return x if clamp is None else x.clamp_(-clamp, clamp)
    if bias is not None:
        x = x + bias
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


def _no_grad_through(*tensors: torch.Tensor | None) -> bool:
    # True when in-place updates cannot disturb autograd: no gradient is recorded for any operand.
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


def make_resample_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """The 2-D FIR filter for resampling: the outer product of ``taps`` with itself, normalised to sum 1.

    Returns:
        float32 [4, 4] (for the default taps, ``outer([1,3,3,1], [1,3,3,1]) / 64``).
    """
    t = torch.as_tensor([float(v) for v in taps], dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype, gain: float) -> torch.Tensor:
    # [k, k] -> [C, 1, k, k]: one copy of the filter per channel (the filters used here are symmetric,
    # so correlation and convolution agree).
    return (f * gain).to(dtype)[None, None].expand(channels, 1, *f.shape)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Upsample by 2 with the FIR filter ``f``: zero insertion then low-pass with gain 4.

    Implemented as one depthwise transposed convolution (stride 2, padding 1), which equals inserting a
    zero after every sample, padding 2 before and 1 after, and filtering with ``4 * f``.

    Args:
        x: [B, C, H, W].
        f: [4, 4] filter from :func:`make_resample_filter`.

    Returns:
        [B, C, 2H, 2W].
    """
    c = x.shape[1]
    return F.conv_transpose2d(x, _depthwise(f, c, x.dtype, 4.0), stride=2, padding=1, groups=c)


def _filter2d(x: torch.Tensor, f: torch.Tensor, pad: int, gain: float) -> torch.Tensor:
    # Depthwise FIR filtering with symmetric zero padding: [B, C, H, W] -> [B, C, H+2p-3, W+2p-3].
    c = x.shape[1]
    return F.conv2d(x, _depthwise(f, c, x.dtype, gain), padding=pad, groups=c)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    fused: bool | None = None,
    weight_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolution whose weights are scaled per sample and input channel by ``styles``.

    ``w'[b,o,i] = weight[o,i] * styles[b,i]``, then (``demodulate``) each output filter is rescaled to unit
    norm: ``w''[b,o,i] = w'[b,o,i] / sqrt(sum_i,k w'[b,o,i,k]^2 + 1e-8)``. With ``up=2`` the convolution is
    transposed with stride 2 (kernel not flipped) and followed by the [1,3,3,1] low-pass filter (gain 4,
    padding 1), so the output has twice the resolution. The 3x3 kernels use zero padding 1.

    Two equivalent evaluation orders are implemented:

    * fused: modulated weights per sample, one grouped convolution (groups = B);
    * unfused: ``x * styles``, one ordinary batched convolution, then ``* demodulation``.

    Args:
        x: [B, I, H, W] activations (float32, or float16/bfloat16 on CUDA).
        weight: [O, I, k, k] float32.
        styles: [B, I] float32 modulation.
        demodulate: normalise each output filter (False for to-RGB layers).
        up: 1 or 2.
        resample_filter: [4, 4] filter, needed when ``up == 2``.
        noise: None or a tensor broadcastable to [B, O, H*up, W*up], added after demodulation.
        fused: force an evaluation order; None picks the faster one: fused for batch 1, unfused
            otherwise, in every precision (measured on an H100, docs/gpu.md: float16 unfused is 1.4-3.4x
            faster than fused on the world generator at batch 64-256, 4 % slower at 1024 px, batch 8).
        weight_sq: optional precomputed ``weight.square().sum([2, 3])`` [O, I] (a per-layer cache).

    Returns:
        [B, O, H*up, W*up] in ``x.dtype``.
    """
    batch, in_ch = x.shape[0], x.shape[1]
    out_ch, _, kh, kw = weight.shape
    if up not in (1, 2) or (up == 2 and resample_filter is None):
        raise InputError("modulated_conv2d supports up=1, or up=2 with a resample_filter")
    if fused is None:
        fused = batch == 1
    styles = styles.float()
    weight = weight.float()
    if demodulate and not fused and x.dtype != torch.float32:
        # Reduced precision, unfused: x * styles and its convolution can overflow float16 before the
        # demodulation scales them back. Demodulation is invariant to a per-output-filter scale of the
        # weight and a per-sample scale of the styles, so bring both to unit max first (as NVIDIA's
        # float16 layers do); the result is the same up to the 1e-8 inside the square root.
        wmax = weight.abs().amax(dim=[1, 2, 3], keepdim=True).clamp_min(1e-12)  # [O, 1, 1, 1]
        weight = weight / wmax
        styles = styles / styles.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        if weight_sq is not None:
            weight_sq = weight_sq.float() / wmax.reshape(-1, 1).square()

    dcoefs = None
    if demodulate:
        # sum_i,k (weight[o,i,k] * s[b,i])^2 = sum_i s[b,i]^2 * sum_k weight[o,i,k]^2: [B, O].
        if weight_sq is None:
            weight_sq = weight.square().sum(dim=[2, 3])
        dcoefs = (styles.square() @ weight_sq.float().t() + 1e-8).rsqrt()

    if fused:
        scale = styles.reshape(batch, 1, in_ch)  # [B, 1, I]
        if dcoefs is not None:
            scale = scale * dcoefs.reshape(batch, out_ch, 1)  # [B, O, I]
        xg = x.reshape(1, batch * in_ch, *x.shape[2:])
        if up == 1:
            w = (weight.unsqueeze(0) * scale[..., None, None]).to(x.dtype)  # [B, O, I, k, k]
            y = F.conv2d(xg, w.reshape(batch * out_ch, in_ch, kh, kw), padding=kh // 2, groups=batch)
        else:
            # Transposed-conv weights are [in, out / groups, k, k]: build them as [B, I, O, k, k].
            w = weight.transpose(0, 1).unsqueeze(0) * scale.transpose(1, 2)[..., None, None]
            w = w.to(x.dtype).reshape(batch * in_ch, out_ch, kh, kw)
            y = F.conv_transpose2d(xg, w, stride=2, groups=batch)
        y = y.reshape(batch, out_ch, *y.shape[2:])
    else:
        xs = x * styles.to(x.dtype).reshape(batch, in_ch, 1, 1)
        w = weight.to(x.dtype)
        if up == 1:
            y = F.conv2d(xs, w, padding=kh // 2)
        else:
            y = F.conv_transpose2d(xs, w.transpose(0, 1), stride=2)
        if dcoefs is not None and up == 1:
            y = _scale(y, dcoefs.to(y.dtype).reshape(batch, out_ch, 1, 1))

    if up == 2:
        assert resample_filter is not None
        y = _filter2d(y, resample_filter, pad=1, gain=4.0)
        if not fused and dcoefs is not None:
            # Filtering is per channel and linear, so the demodulation can be applied after it.
            y = _scale(y, dcoefs.to(y.dtype).reshape(batch, out_ch, 1, 1))
    if noise is not None:
        # y is a fresh tensor here, so it may be updated in place when no gradient flows through it.
        y = y.add_(noise.to(y.dtype)) if _no_grad_through(y, noise) else y + noise.to(y.dtype)
    return y


def _scale(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return y.mul_(s) if _no_grad_through(y, s) else y * s


# ----------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: ``act(x @ (weight * lr/sqrt(in)).T + bias * lr)``.

    Parameters (NVIDIA names): ``weight`` [out, in], ``bias`` [out]. The stored values are divided by the
    learning-rate multiplier, so the runtime gains restore them.
    """

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Learn a bias?
        activation: str = "linear",  # 'linear' or 'lrelu'.
        lr_multiplier: float = 1.0,  # Learning-rate multiplier (0.01 in the mapping network).
        bias_init: float = 0.0,  # Initial effective bias (1 for the style affines).
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = (
            nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        )
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in] -> [B, out] (float32)."""
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
        return bias_act(F.linear(x, w), b, activation=self.activation, gain=gain)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class MappingNetwork(nn.Module):
    """z (and optional label c) -> ws [B, num_ws, w_dim], with truncation.

    Parameters: ``fc{i}.weight/bias`` for i < num_layers, ``embed.weight/bias`` when ``c_dim > 0``;
    buffer ``w_avg`` [w_dim] (the running mean of w, present when ``w_avg_beta`` is not None).
    """

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality, 0 = no latent.
        c_dim: int,  # Conditioning label (C) dimensionality, 0 = no label.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        num_ws: int,  # Number of ws to output (copies of w).
        num_layers: int = 8,  # Number of fully connected layers.
        embed_features: int | None = None,  # Label embedding width, None = w_dim.
        layer_features: int | None = None,  # Hidden layer width, None = w_dim.
        activation: str = "lrelu",  # Activation of every layer.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the layers.
        w_avg_beta: float | None = 0.995,  # Decay of the w_avg tracker (training only); None = no w_avg.
        # Scale z to unit second moment first (StyleGAN2; ``normalize_latents`` in its TensorFlow code).
        # False feeds z as it is, so that the network can see |z|: the built-in world's truth depends on it.
        normalize_z: bool = True,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if not isinstance(normalize_z, bool):
            raise InputError(f"normalize_z must be true or false, got {normalize_z!r}")
        self.normalize_z = normalize_z
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Map latents to ws.

        Args:
            z: [B, z_dim] latents (standard normal); scaled to unit second moment unless ``normalize_z``
                is False.
            c: [B, c_dim] labels; None (or [B, 0]) for unconditional networks.
            truncation_psi: 1 = no truncation, 0 = every w becomes ``w_avg``.
            truncation_cutoff: truncate only ws[:, :cutoff]; None = all of them.

        Returns:
            float32 [B, num_ws, w_dim]; all num_ws entries are equal (before style mixing).
        """
        sizes: dict[str, int] = {}
        check_tensor(z, "z", ["B", self.z_dim], sizes=sizes)
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.float()) if self.normalize_z else z.float()
        if self.c_dim > 0:
            if c is None:
                raise InputError(f"this generator is conditional: pass c of shape [B, {self.c_dim}]")
            check_tensor(c, "c", ["B", self.c_dim], sizes=sizes)
            y = normalize_2nd_moment(self.embed(c.float()))
            x = y if x is None else torch.cat([x, y], dim=1)
        if x is None:
            raise InputError("a generator with z_dim = 0 and c_dim = 0 has no input")
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise InputError("this generator has no w_avg, so it cannot truncate", hint="use psi = 1")
            cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            if not 0 <= cut <= self.num_ws:
                raise InputError(
                    f"truncation cutoff {cut} is outside 0..{self.num_ws} (this generator's num_ws)"
                )
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], float(truncation_psi))
        return ws

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU (gain sqrt(2), optional clamp).

    Parameters: ``weight`` [O, I, 3, 3], ``noise_strength`` [] (0-dim), ``bias`` [O],
    ``affine.weight`` [I, w_dim], ``affine.bias`` [I] (effective init 1). Buffers: ``resample_filter``
    [4, 4], ``noise_const`` [R, R] (the fixed noise of ``noise_mode='const'``).
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Output resolution R of this layer.
        kernel_size: int = 3,  # Convolution kernel size.
        up: int = 1,  # 1, or 2 to upsample.
        use_noise: bool = True,  # Add per-pixel noise?
        activation: str = "lrelu",  # Activation after the bias.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
        conv_clamp: float | None = None,  # Clamp the output to +-this value, None = no clamp.
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up = resolution, up
        self.use_noise, self.activation, self.conv_clamp = use_noise, activation, conv_clamp
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """[B, I, R/up, R/up] and w [B, w_dim] -> [B, O, R, R] (in ``x.dtype``)."""
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            up=self.up,
            resample_filter=self.resample_filter,
            noise=noise,
            weight_sq=self._weight_sq(),
        )
        return bias_act(
            x, self.bias, activation=self.activation, gain=self.act_gain, clamp=self.conv_clamp, inplace=True
        )

    def _weight_sq(self) -> torch.Tensor | None:
        # sum over the kernel of weight^2 [O, I], for demodulation; cached while the weight is unchanged
        # (same storage, same in-place version counter) and no gradient is recorded.
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return None
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if getattr(self, "_weight_sq_key", None) != key:
            self._weight_sq_cache = w.detach().float().square().sum(dim=[2, 3])
            self._weight_sq_key = key
        return self._weight_sq_cache

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"resolution={self.resolution}, up={self.up}, conv_clamp={self.conv_clamp}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation, plus bias (linear, optional clamp).

    Parameters: ``weight`` [C_img, I, 1, 1], ``bias`` [C_img], ``affine.weight`` [I, w_dim],
    ``affine.bias`` [I]. The styles are multiplied by ``1/sqrt(I)`` (equalised learning rate).
    """

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of image channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        kernel_size: int = 1,  # Convolution kernel size.
        conv_clamp: float | None = None,  # Clamp the output to +-this value, None = no clamp.
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.conv_clamp = in_channels, out_channels, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[B, I, R, R] and w [B, w_dim] -> [B, C_img, R, R] (in ``x.dtype``)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp, inplace=True)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


# ----------------------------------------------------------------------------------------------------
# Blocks and networks.


class SynthesisBlock(nn.Module):
    """One resolution level ``b{R}``: [B, C(R/2), R/2, R/2] -> [B, C(R), R, R], plus its RGB skip.

    Members: ``const`` [C(4), 4, 4] (b4 only), ``resample_filter`` buffer [4, 4], ``conv0`` (R >= 8,
    upsamples), ``conv1``, ``torgb``. Consumes ``num_conv + num_torgb`` consecutive ws.
    """

    def __init__(
        self,
        in_channels: int,  # Channels of the previous block, 0 = this is b4 (starts from a constant).
        out_channels: int,  # Channels of this block.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution R of this block.
        img_channels: int,  # Number of output image channels.
        is_last: bool,  # Is this the last block?
        architecture: str = "skip",  # Only 'skip' (config F's generator) is implemented.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
        conv_clamp: float | None = None,  # Clamp activations to +-this value, None = no clamp.
        use_fp16: bool = False,  # Whether NVIDIA ran this block in float16 (recorded, see ``dtype``).
        **layer_kwargs: Any,  # Passed to SynthesisLayer (use_noise, activation, kernel_size).
    ) -> None:
        super().__init__()
        if architecture != "skip":
            raise InputError(
                f"generator architecture {architecture!r} is not supported",
                hint="only StyleGAN2 config-F 'skip' generators are implemented",
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.is_last, self.use_fp16 = resolution, is_last, use_fp16
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        self.register_buffer("resample_filter", make_resample_filter(resample_filter))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim,
            resolution,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the block.

        Args:
            x: [B, C(R/2), R/2, R/2] features of the previous block (None for b4).
            img: [B, C_img, R/2, R/2] float32 RGB so far (None for b4).
            ws: [B, num_conv + num_torgb, w_dim] float32, in layer order (conv0, conv1, torgb).
            noise_mode: 'const', 'random' or 'none'.
            dtype: compute dtype of the features.

        Returns:
            ``(x [B, C(R), R, R] in dtype, img [B, C_img, R, R] float32)``.
        """
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            assert x is not None
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).float()
        img = y if img is None else (img.add_(y) if _no_grad_through(img, y) else img + y)
        return x, img

    def extra_repr(self) -> str:
        return (
            f"resolution={self.resolution}, in_channels={self.in_channels}, out_channels={self.out_channels}"
        )


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, R, R] through blocks ``b4 ... b{R}``.

    Channels of block ``b{r}``: ``min(channel_base // r, channel_max)``.
    """

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (W) dimensionality.
        img_resolution: int,  # Output resolution (a power of two >= 4).
        img_channels: int,  # Number of output image channels.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_fp16_res: int = 0,  # NVIDIA's mixed precision: run the top N resolutions in float16.
        **block_kwargs: Any,  # Passed to SynthesisBlock (architecture, conv_clamp, resample_filter, ...).
    ) -> None:
        super().__init__()
        log2 = int(round(math.log2(img_resolution))) if img_resolution > 0 else 0
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise InputError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.channel_base, self.channel_max, self.num_fp16_res = channel_base, channel_max, num_fp16_res
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        if min(channels.values()) < 1:
            raise InputError(
                f"channel_base {channel_base} gives zero channels at {img_resolution}x{img_resolution}",
                hint=f"use channel_base >= {img_resolution}",
            )
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(
                in_channels,
                channels[res],
                w_dim,
                res,
                img_channels,
                is_last=res == img_resolution,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def ws_index(self) -> dict[str, int]:
        """The W+ index map: ``{"b4.conv1": 0, "b4.torgb": 1, "b8.conv0": 1, "b8.conv1": 2, ...}``."""
        out, idx = {}, 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            names = (["conv0"] if block.in_channels else []) + ["conv1", "torgb"]
            for j, name in enumerate(names):
                out[f"b{res}.{name}"] = idx + j
            idx += block.num_conv
        return out

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Synthesise images.

        Args:
            ws: [B, num_ws, w_dim] (see the index map in the module docstring).
            noise_mode: 'const' (the stored noise: deterministic), 'random' (fresh N(0,1) noise from the
                global torch RNG) or 'none' (no noise).
            dtype: compute dtype of the blocks: None or float32 (default), float16 or bfloat16 (for CUDA;
                bfloat16 also runs on CPU, slowly). The returned image is always float32.

        Returns:
            float32 [B, img_channels, R, R], nominally in [-1, 1].
        """
        check_tensor(ws, "ws", [None, self.num_ws, self.w_dim])
        if noise_mode not in NOISE_MODES:
            raise InputError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        dtype = torch.float32 if dtype is None else dtype
        if dtype not in _DTYPES:
            raise InputError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        ws = ws.float()
        chunk = self.cpu_chunk_size(dtype) if ws.device.type == "cpu" else ws.shape[0]
        if ws.shape[0] > chunk:
            # Large images on CPU: bounded activations run faster (see cpu_chunk_size).
            return torch.cat([self._run(part, noise_mode, dtype) for part in ws.split(chunk)])
        return self._run(ws, noise_mode, dtype)

    def cpu_chunk_size(self, dtype: torch.dtype = torch.float32) -> int:
        """How many samples the CPU path synthesises at once.

        Every activation tensor of a chunk stays below :data:`CPU_CHUNK_BYTES`. Larger tensors are
        allocated by fresh ``mmap`` calls each time (glibc's threshold is at most 32 MiB) and pay page faults
        on every layer; measured at 256x256 (channel_base 16384, 2 threads) a batch of 4 in one piece took
        ~1.4x as long as 4 pieces of 1.
        """
        esize = torch.empty(0, dtype=dtype).element_size()
        per_sample = max(
            getattr(self, f"b{r}").out_channels * (r + 1) * (r + 1) * esize for r in self.block_resolutions
        )
        return max(1, CPU_CHUNK_BYTES // per_sample)

    def _run(self, ws: torch.Tensor, noise_mode: str, dtype: torch.dtype) -> torch.Tensor:
        x = img = None
        idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws[:, idx : idx + block.num_conv + block.num_torgb]
            x, img = block(x, img, block_ws, noise_mode=noise_mode, dtype=dtype)
            idx += block.num_conv
        assert img is not None
        return img

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"channel_base={self.channel_base}, channel_max={self.channel_max}"
        )


_MAPPING_KEYS = frozenset(
    {
        "num_layers",
        "embed_features",
        "layer_features",
        "activation",
        "lr_multiplier",
        "w_avg_beta",
        "normalize_z",
    }
)
_SYNTHESIS_KEYS = frozenset(
    {
        "channel_base",
        "channel_max",
        "num_fp16_res",
        "conv_clamp",
        "architecture",
        "resample_filter",
        "use_noise",
        "activation",
        "kernel_size",
    }
)
# Options of NVIDIA's code that only concern speed or memory layout: accepted and dropped.
_IGNORED_SYNTHESIS_KEYS = frozenset({"fp16_channels_last", "fused_modconv_default"})


def _json_value(v: Any) -> Any:
    # Numpy scalars, tuples and the like -> plain JSON values.
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if hasattr(v, "item"):
        return _json_value(v.item())
    raise InputError(f"generator option value {v!r} is not a number, string, list or dict")


class Generator(nn.Module):
    """StyleGAN2 generator: :class:`MappingNetwork` ``mapping`` + :class:`SynthesisNetwork` ``synthesis``.

    Args:
        z_dim: latent size (512 for the released models).
        c_dim: label size, 0 for unconditional models.
        w_dim: intermediate latent size (512).
        img_resolution: output resolution, a power of two >= 4.
        img_channels: number of image channels (3).
        mapping_kwargs: options of :class:`MappingNetwork` (``num_layers``, ``lr_multiplier``, ...).
        synthesis_kwargs: options of :class:`SynthesisNetwork` (``channel_base``, ``channel_max``,
            ``conv_clamp``, ``num_fp16_res``, ...).
        **more_synthesis_kwargs: synthesis options given at the top level (the stylegan3 repository's
            layout); merged into ``synthesis_kwargs``.

    Attributes:
        z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws: as above; ``num_ws = 2 log2(R) - 2``.
        config: the constructor arguments as a JSON-serialisable dict, in canonical form
            (``Generator(**G.config)`` rebuilds the same network).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_kwargs: Mapping[str, Any] | None = None,
        synthesis_kwargs: Mapping[str, Any] | None = None,
        **more_synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = {**dict(synthesis_kwargs or {}), **more_synthesis_kwargs}
        for k in _IGNORED_SYNTHESIS_KEYS:
            synthesis_kwargs.pop(k, None)
        bad = sorted(set(mapping_kwargs) - _MAPPING_KEYS) + sorted(set(synthesis_kwargs) - _SYNTHESIS_KEYS)
        if bad:
            raise InputError(f"unknown generator option(s): {', '.join(bad)}")
        ints = {"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_channels": img_channels}
        for name, v in ints.items():
            if int(v) != v or v < 0 or (v == 0 and name in ("w_dim", "img_channels")):
                raise InputError(f"{name} must be a non-negative integer (positive for w_dim/img_channels)")
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        self.config: dict[str, Any] = {
            "z_dim": self.z_dim,
            "c_dim": self.c_dim,
            "w_dim": self.w_dim,
            "img_resolution": self.img_resolution,
            "img_channels": self.img_channels,
            "mapping_kwargs": _json_value(mapping_kwargs),
            "synthesis_kwargs": _json_value(synthesis_kwargs),
        }
        self.synthesis = SynthesisNetwork(
            w_dim=self.w_dim,
            img_resolution=self.img_resolution,
            img_channels=self.img_channels,
            **synthesis_kwargs,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """z [B, z_dim] (+ c [B, c_dim]) -> float32 image [B, img_channels, R, R] (see the two halves)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, dtype=dtype)

    def extra_repr(self) -> str:
        return (
            f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
            f"img_resolution={self.img_resolution}, img_channels={self.img_channels}"
        )
