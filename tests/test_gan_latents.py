"""Latents: seeds as NVIDIA's generate.py draws them, and style mixing of up to K codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig.errors import InputError
from stylerig.gan.latents import draw_mixing, mix_ws, sample_ws, z_from_seed, z_from_seeds
from stylerig.gan.testing import tiny_generator


def test_z_from_seed_is_numpy_randomstate() -> None:
    for seed in (0, 1, 85, 2**32 - 1):
        want = np.random.RandomState(seed).randn(512)
        got = z_from_seed(seed, 512)
        assert got.dtype == torch.float32 and got.shape == (512,)
        assert np.array_equal(got.numpy(), want.astype(np.float32))
    batch = z_from_seeds([3, 4], 16)
    assert torch.equal(batch[1], z_from_seed(4, 16)) and batch.shape == (2, 16)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "7", True])
def test_bad_seeds_raise(bad: object) -> None:
    with pytest.raises(InputError):
        z_from_seed(bad, 4)  # type: ignore[arg-type]


def test_mixing_plans_are_seeded_and_well_formed() -> None:
    counts = set()
    for seed in range(200):
        plan = draw_mixing(seed, num_ws=14, mix_max=5, z_dim=8)
        again = draw_mixing(seed, num_ws=14, mix_max=5, z_dim=8)
        assert plan.crossovers == again.crossovers and np.array_equal(plan.extra_z, again.extra_z)
        assert 1 <= plan.num_codes <= 5
        assert list(plan.crossovers) == sorted(set(plan.crossovers))
        assert all(1 <= c <= 13 for c in plan.crossovers)
        assert plan.extra_z.shape == (plan.num_codes - 1, 8)
        slots = plan.slot_codes(14)
        assert slots[0] == 0 and slots[-1] == plan.num_codes - 1
        assert all(b - a in (0, 1) for a, b in zip(slots[:-1], slots[1:], strict=True))
        counts.add(plan.num_codes)
    assert counts == {1, 2, 3, 4, 5}  # "up to K", every k occurs
    assert draw_mixing(9, num_ws=2, mix_max=5).num_codes <= 2
    assert all(draw_mixing(s, 14, mix_max=1).num_codes == 1 for s in range(20))
    with pytest.raises(InputError):
        draw_mixing(0, 14, mix_max=0)


def test_mix_ws_takes_each_slot_from_its_code() -> None:
    codes = torch.arange(3.0)[None, :, None, None].expand(2, 3, 6, 4).clone()  # code k is all k
    slots = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 2]])
    out = mix_ws(codes, slots)
    assert out.shape == (2, 6, 4)
    assert torch.equal(out[:, :, 0], slots.float())
    with pytest.raises(InputError):
        mix_ws(codes, torch.tensor([[0, 0, 0, 0, 0, 3]] * 2))


def test_sample_ws_mixes_mapped_codes_and_is_batch_independent() -> None:
    G = tiny_generator(0)
    seeds = list(range(12))
    ws = sample_ws(G, seeds, mix_max=5, truncation_psi=0.7)
    assert ws.shape == (12, G.num_ws, G.w_dim)
    # One sample depends on its seed alone.
    assert torch.allclose(sample_ws(G, [seeds[5]], mix_max=5, truncation_psi=0.7)[0], ws[5], atol=1e-6)
    mixed = 0
    for i, seed in enumerate(seeds):
        plan = draw_mixing(seed, G.num_ws, 5, G.z_dim)
        zs = torch.cat([z_from_seed(seed, G.z_dim)[None], torch.from_numpy(plan.extra_z).float()])
        w = G.mapping(zs, truncation_psi=0.7)[:, 0]  # [k, w_dim]
        for slot, code in enumerate(plan.slot_codes(G.num_ws)):
            assert torch.allclose(ws[i, slot], w[code], atol=1e-6)
        mixed += plan.num_codes > 1
    assert mixed > 0
    # mix_max = 1: exactly the unmixed seed.
    plain = sample_ws(G, [3], mix_max=1)
    assert torch.allclose(plain[0], G.mapping(z_from_seed(3, G.z_dim)[None])[0], atol=1e-6)
