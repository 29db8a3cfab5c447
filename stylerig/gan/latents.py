"""Latent codes: z from seeds (as NVIDIA's ``generate.py`` draws them) and style-mixed W+ codes.

* :func:`z_from_seed` draws ``numpy.random.RandomState(seed).randn(z_dim)``, exactly as NVIDIA's
  stylegan2-ada-pytorch ``generate.py`` does, so a seed gives the image people know for that seed.
* Style mixing (StyleRig's training corpus combines "up to 5" codes): for sample seed ``s`` a private
  generator ``numpy.random.default_rng([s, MIXING_STREAM])`` draws the number of codes ``k`` uniformly in
  ``1..mix_max`` (at most ``num_ws``), ``k - 1`` distinct crossover points in ``1..num_ws-1`` and the
  ``k - 1`` extra latents. Code 0 is always ``z_from_seed(s)``, so with ``mix_max = 1`` (or when k = 1)
  the sample is exactly the unmixed seed. Slot ``i`` of the mixed W+ code takes its w from code
  ``#{crossover points <= i}``: crossovers ``(3, 8)`` use code 0 for slots 0-2, code 1 for 3-7 and
  code 2 for 8 onwards. A sample depends on its seed alone, not on the batch it is drawn in.

Example:
    >>> from stylerig.gan.latents import draw_mixing, z_from_seed
    >>> z_from_seed(0, 512).shape
    torch.Size([512])
    >>> plan = draw_mixing(7, num_ws=14, mix_max=5)
    >>> len(plan.crossovers) == plan.num_codes - 1
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stylerig._checks import check_tensor
from stylerig.errors import InputError

__all__ = [
    "DEFAULT_MIX_MAX",
    "MIXING_STREAM",
    "MixingPlan",
    "draw_mixing",
    "mix_ws",
    "sample_ws",
    "z_from_seed",
    "z_from_seeds",
]

#: Default maximum number of codes mixed into one W+ code (StyleRig: "up to 5").
DEFAULT_MIX_MAX = 5
#: Second word of the seed sequence of the mixing generator (keeps it apart from the z stream).
MIXING_STREAM = 0x5EED_0F_51


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise InputError(f"a seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The latent NVIDIA's ``generate.py`` uses for ``seed``: ``RandomState(seed).randn(z_dim)``.

    Returns:
        float32 [z_dim] (the float64 draw, rounded once).
    """
    z = np.random.RandomState(_check_seed(seed)).randn(int(z_dim))
    return torch.from_numpy(z).float()


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """Stack :func:`z_from_seed` over ``seeds``: float32 [len(seeds), z_dim]."""
    if len(seeds) == 0:
        return torch.zeros(0, int(z_dim))
    return torch.stack([z_from_seed(s, z_dim) for s in seeds])


@dataclass(frozen=True)
class MixingPlan:
    """How one style-mixed sample is put together.

    Attributes:
        seed: the sample seed; code 0 is ``z_from_seed(seed)``.
        crossovers: sorted slot indices in ``1..num_ws-1`` where the next code takes over (k - 1 of them).
        extra_z: float64 [k - 1, z_dim] latents of codes 1..k-1.
    """

    seed: int
    crossovers: tuple[int, ...]
    extra_z: np.ndarray

    @property
    def num_codes(self) -> int:
        """k, the number of codes mixed (1 = no mixing)."""
        return len(self.crossovers) + 1

    def slot_codes(self, num_ws: int) -> list[int]:
        """For each W+ slot, the index of the code it takes its w from."""
        return [int(np.searchsorted(self.crossovers, i, side="right")) for i in range(num_ws)]


def draw_mixing(seed: int, num_ws: int, mix_max: int = DEFAULT_MIX_MAX, z_dim: int = 0) -> MixingPlan:
    """Draw the mixing plan of sample ``seed`` (see the module docstring).

    Args:
        seed: sample seed in [0, 2**32).
        num_ws: number of W+ slots of the generator.
        mix_max: the most codes to mix (>= 1); k is uniform in ``1..min(mix_max, num_ws)``.
        z_dim: latent size of the extra codes (0 gives an empty ``extra_z``, for inspecting a plan).
    """
    seed = _check_seed(seed)
    if int(mix_max) != mix_max or mix_max < 1:
        raise InputError(f"mix_max must be an integer >= 1, got {mix_max!r}")
    if num_ws < 1:
        raise InputError(f"num_ws must be >= 1, got {num_ws}")
    rng = np.random.default_rng([seed, MIXING_STREAM])
    k = int(rng.integers(1, min(int(mix_max), num_ws) + 1))
    points = np.sort(rng.choice(np.arange(1, num_ws), size=k - 1, replace=False)) if k > 1 else []
    extra = rng.standard_normal((k - 1, int(z_dim))) if z_dim else np.zeros((k - 1, 0))
    return MixingPlan(seed=seed, crossovers=tuple(int(p) for p in points), extra_z=extra)


def mix_ws(codes: torch.Tensor, slot_codes: torch.Tensor) -> torch.Tensor:
    """Assemble W+ codes from per-code ws.

    Args:
        codes: [B, K, num_ws, w_dim] (or [B, K, w_dim]): the ws of K codes per sample.
        slot_codes: int64 [B, num_ws]: for every slot, which of the K codes to take (0..K-1).

    Returns:
        [B, num_ws, w_dim] with ``out[b, i] = codes[b, slot_codes[b, i], i]``.
    """
    check_tensor(slot_codes, "slot_codes", ["B", "N"], dtypes=[torch.int64])
    batch, num_ws = slot_codes.shape
    if codes.ndim == 3:
        codes = codes.unsqueeze(2).expand(-1, -1, num_ws, -1)
    check_tensor(codes, "codes", [batch, None, num_ws, None])
    if slot_codes.numel() and (int(slot_codes.min()) < 0 or int(slot_codes.max()) >= codes.shape[1]):
        raise InputError(f"slot_codes must lie in 0..{codes.shape[1] - 1}")
    index = slot_codes.to(codes.device)[:, None, :, None].expand(-1, 1, -1, codes.shape[3])
    return codes.gather(1, index)[:, 0]


def sample_ws(
    G: torch.nn.Module,
    seeds: Sequence[int],
    *,
    mix_max: int = DEFAULT_MIX_MAX,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
) -> torch.Tensor:
    """Style-mixed W+ codes for ``seeds`` (one sample per seed), mapped in one batch.

    Args:
        G: a :class:`~stylerig.gan.networks.Generator` (its ``mapping``, ``z_dim``, ``num_ws`` are used);
            unconditional.
        seeds: sample seeds in [0, 2**32).
        mix_max: the most codes per sample (1 = no mixing: ``G.mapping(z_from_seed(seed))``).
        truncation_psi, truncation_cutoff: applied to every code (truncation acts slot by slot, so this
            equals truncating the mixed code).

    Returns:
        float32 [len(seeds), num_ws, w_dim] on the device of ``G``.
    """
    z_dim, num_ws = int(G.z_dim), int(G.num_ws)
    plans = [draw_mixing(s, num_ws, mix_max, z_dim) for s in seeds]
    if not plans:
        return torch.zeros(0, num_ws, int(G.w_dim))
    device = next(G.parameters()).device
    zs = []
    for plan in plans:
        zs.append(z_from_seed(plan.seed, z_dim)[None])
        zs.append(torch.from_numpy(plan.extra_z).float())
    z = torch.cat(zs).to(device)
    with torch.no_grad():
        w = G.mapping(z, None, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    out, start = [], 0
    for plan in plans:
        k = plan.num_codes
        slots = torch.tensor(plan.slot_codes(num_ws), dtype=torch.int64)
        out.append(mix_ws(w[start : start + k][None], slots[None]))
        start += k
    return torch.cat(out)
