"""A plain, deliberately straightforward StyleGAN2 (config F) generator, used as a yardstick.

It reads the same state dict (NVIDIA ``G_ema`` names) as :class:`stylerig.gan.networks.Generator` but shares
no code with it and takes the obvious route everywhere:

* one image at a time (a Python loop over the batch), with the modulated and demodulated weights built
  explicitly for that sample;
* upsampling by explicit zero insertion followed by ordinary (correlation) convolutions: the transposed
  convolution becomes "insert zeros, pad by k-1, correlate with the spatially flipped kernel";
* the FIR low-pass filter as a depthwise correlation with ``4 * outer([1,3,3,1])/64``.

``benchmarks/bench_generator.py`` times it against the library and checks that both give the same image;
``tests/test_gan_networks.py`` uses it as an independent check of the library's arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class ReferenceGenerator:
    """StyleGAN2 'skip' generator evaluated from a state dict.

    Args:
        state: NVIDIA-named state dict (``mapping.fc{i}.*``, ``mapping.w_avg``, ``synthesis.b{R}.*``).
        img_resolution: output resolution R.
        num_mapping_layers: number of ``mapping.fc{i}`` layers.
        conv_clamp: activation clamp, or None.
        lr_multiplier: learning-rate multiplier of the mapping layers (0.01).
    """

    def __init__(
        self,
        state: dict[str, torch.Tensor],
        img_resolution: int,
        num_mapping_layers: int,
        conv_clamp: float | None = None,
        lr_multiplier: float = 0.01,
    ) -> None:
        self.s = {k: v.detach().float() for k, v in state.items()}
        self.res = img_resolution
        self.num_mapping_layers = num_mapping_layers
        self.conv_clamp = conv_clamp
        self.lr_multiplier = lr_multiplier
        self.num_ws = 2 * int(math.log2(img_resolution)) - 2
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.fir = torch.outer(f, f) / 64.0

    # -- mapping -------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z [B, z_dim] -> ws [B, num_ws, w_dim]."""
        x = z / torch.sqrt(torch.mean(z * z, dim=1, keepdim=True) + 1e-8)
        lr = self.lr_multiplier
        for i in range(self.num_mapping_layers):
            w = self.s[f"mapping.fc{i}.weight"]
            b = self.s[f"mapping.fc{i}.bias"]
            x = x @ (w * (lr / math.sqrt(w.shape[1]))).t() + b * lr
            x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2.0)
        if truncation_psi != 1:
            avg = self.s["mapping.w_avg"]
            x = avg + truncation_psi * (x - avg)
        return x[:, None, :].repeat(1, self.num_ws, 1)

    # -- one sample ----------------------------------------------------------------------------------
    def _affine(self, prefix: str, w: torch.Tensor) -> torch.Tensor:
        aw = self.s[prefix + ".affine.weight"]
        ab = self.s[prefix + ".affine.bias"]
        return aw @ w / math.sqrt(aw.shape[1]) + ab

    def _fir(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        c = x.shape[0]
        k = (4.0 * self.fir)[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(F.pad(x[None], [pad, pad, pad, pad]), k, groups=c)[0]

    @staticmethod
    def _zero_insert(x: torch.Tensor) -> torch.Tensor:
        # [C, H, W] -> [C, 2H-1, 2W-1] with x at the even positions.
        c, h, w = x.shape
        out = x.new_zeros(c, 2 * h - 1, 2 * w - 1)
        out[:, ::2, ::2] = x
        return out

    def _layer(
        self, prefix: str, x: torch.Tensor, w: torch.Tensor, up: bool, noise_mode: str
    ) -> torch.Tensor:
        weight = self.s[prefix + ".weight"]  # [O, I, 3, 3]
        s = self._affine(prefix, w)  # [I]
        mw = weight * s[None, :, None, None]
        mw = mw / torch.sqrt((mw * mw).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if up:
            # Transposed conv (stride 2, no padding) = zero insertion, pad 2, correlate with flipped kernel.
            u = F.pad(self._zero_insert(x)[None], [2, 2, 2, 2])
            y = F.conv2d(u, mw.flip([2, 3]))[0]
            y = self._fir(y, pad=1)
        else:
            y = F.conv2d(x[None], mw, padding=1)[0]
        if noise_mode == "const":
            y = y + self.s[prefix + ".noise_const"] * self.s[prefix + ".noise_strength"]
        y = y + self.s[prefix + ".bias"][:, None, None]
        y = torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2.0)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y

    def _torgb(self, prefix: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weight = self.s[prefix + ".weight"]  # [3, I, 1, 1]
        s = self._affine(prefix, w) / math.sqrt(weight.shape[1])
        y = F.conv2d(x[None], weight * s[None, :, None, None])[0] + self.s[prefix + ".bias"][:, None, None]
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y

    def _upsample_img(self, img: torch.Tensor) -> torch.Tensor:
        # Zero insertion, then pad 2 before / 2 after (= 1 trailing zero + 1), then the FIR with gain 4.
        return self._fir(self._zero_insert(img), pad=2)

    def synthesis_one(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws [num_ws, w_dim] -> image [3, R, R]."""
        x = self.s["synthesis.b4.const"]
        x = self._layer("synthesis.b4.conv1", x, ws[0], up=False, noise_mode=noise_mode)
        img = self._torgb("synthesis.b4.torgb", x, ws[1])
        res, idx = 8, 1
        while res <= self.res:
            p = f"synthesis.b{res}"
            x = self._layer(p + ".conv0", x, ws[idx], up=True, noise_mode=noise_mode)
            x = self._layer(p + ".conv1", x, ws[idx + 1], up=False, noise_mode=noise_mode)
            img = self._upsample_img(img) + self._torgb(p + ".torgb", x, ws[idx + 2])
            res, idx = res * 2, idx + 2
        return img

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> images [B, 3, R, R], one sample at a time."""
        return torch.stack([self.synthesis_one(ws[b], noise_mode) for b in range(ws.shape[0])])

    def __call__(
        self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const"
    ) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode)
