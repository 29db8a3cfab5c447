"""The StyleGAN2 generator: names, shapes, arithmetic (against an independent reference), ws map, noise."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from stylerig.errors import InputError
from stylerig.gan.networks import Generator, SynthesisLayer, ToRGBLayer, modulated_conv2d
from stylerig.gan.testing import tiny_generator

_REF_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_stylegan2.py"


def _reference():
    spec = importlib.util.spec_from_file_location("reference_stylegan2", _REF_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ReferenceGenerator


def _g16() -> Generator:
    return Generator(
        z_dim=32,
        c_dim=0,
        w_dim=32,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 64},
    )


def test_state_dict_names_and_shapes_match_nvidia_layout() -> None:
    G = _g16()
    sd = G.state_dict()
    assert len(sd) == 56  # formats.md B1: 56 tensors for the 16x16 test G
    assert G.num_ws == 6 and G.z_dim == 32 and G.w_dim == 32 and G.img_resolution == 16
    expect = {
        "mapping.w_avg": (32,),
        "mapping.fc0.weight": (32, 32),
        "mapping.fc1.bias": (32,),
        "synthesis.b4.const": (16, 4, 4),
        "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b4.conv1.weight": (16, 16, 3, 3),
        "synthesis.b4.conv1.noise_strength": (),
        "synthesis.b4.conv1.noise_const": (4, 4),
        "synthesis.b4.torgb.weight": (3, 16, 1, 1),
        "synthesis.b8.conv0.weight": (8, 16, 3, 3),
        "synthesis.b8.conv0.affine.weight": (16, 32),
        "synthesis.b8.conv0.affine.bias": (16,),
        "synthesis.b8.conv0.resample_filter": (4, 4),
        "synthesis.b16.conv1.noise_const": (16, 16),
        "synthesis.b16.torgb.affine.weight": (4, 32),
        "synthesis.b16.torgb.bias": (3,),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    # NVIDIA's state_dict order: synthesis first, params before buffers before children.
    keys = list(sd)
    assert keys[0] == "synthesis.b4.const" and keys[-1] == "mapping.fc1.bias"
    assert keys[2:9] == [
        "synthesis.b4.conv1." + n
        for n in (
            "weight",
            "noise_strength",
            "bias",
            "resample_filter",
            "noise_const",
            "affine.weight",
            "affine.bias",
        )
    ]
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.allclose(sd["synthesis.b8.resample_filter"], torch.outer(f, f) / 64)


def test_config_is_json_and_rebuilds_the_same_network() -> None:
    G = tiny_generator(3)
    cfg = json.loads(json.dumps(G.config))
    H = Generator(**cfg)
    H.load_state_dict(G.state_dict(), strict=True)
    z = torch.randn(2, 32)
    assert torch.equal(G(z), H.eval()(z))
    # The stylegan3 repository's flattened layout gives the same network.
    flat = Generator(**{k: v for k, v in cfg.items() if k != "synthesis_kwargs"}, **cfg["synthesis_kwargs"])
    assert flat.config == G.config


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("conv_clamp", [None, 0.5])
def test_matches_independent_reference(batch: int, conv_clamp: float | None) -> None:
    G = tiny_generator(1, conv_clamp=conv_clamp)
    ref = _reference()(G.state_dict(), 32, 2, conv_clamp=conv_clamp)
    z = torch.randn(batch, 32)
    with torch.no_grad():
        for psi in (1.0, 0.6):
            for mode in ("const", "none"):
                ours = G(z, truncation_psi=psi, noise_mode=mode)
                theirs = ref(z, truncation_psi=psi, noise_mode=mode)
                assert ours.shape == (batch, 3, 32, 32)
                assert (ours - theirs).abs().max().item() <= 1e-5


def test_fused_and_unfused_modulated_conv_agree() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 8, 8, generator=g)
    w = torch.randn(5, 6, 3, 3, generator=g)
    s = torch.randn(3, 6, generator=g)
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    noise = torch.randn(8 * 2, 8 * 2, generator=g)
    for up in (1, 2):
        for demod in (True, False):
            kw = dict(demodulate=demod, up=up, resample_filter=f, noise=noise if up == 2 else None)
            a = modulated_conv2d(x, w, s, fused=True, **kw)
            b = modulated_conv2d(x, w, s, fused=False, **kw)
            assert a.shape == (3, 5, 8 * up, 8 * up)
            assert torch.allclose(a, b, atol=1e-5), (up, demod)
    # Demodulation makes each output filter unit-norm: scaling the styles changes nothing.
    a = modulated_conv2d(x, w, s, up=1)
    assert torch.allclose(a, modulated_conv2d(x, w, 7.0 * s, up=1), atol=1e-5)


@pytest.mark.parametrize("res", [4, 64])
def test_extreme_resolutions_build_and_run(res: int) -> None:
    G = Generator(16, 0, 16, res, 3, mapping_kwargs={"num_layers": 1}, synthesis_kwargs={"channel_base": 256})
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, res, res) and torch.isfinite(img).all()
    assert G.synthesis.block_resolutions[-1] == res


def test_invalid_construction_and_inputs_raise_input_error() -> None:
    with pytest.raises(InputError):
        Generator(16, 0, 16, 24, 3)  # not a power of two
    with pytest.raises(InputError):
        Generator(16, 0, 16, 2, 3)
    with pytest.raises(InputError):
        Generator(16, 0, 16, 16, 3, synthesis_kwargs={"architecture": "resnet"})
    with pytest.raises(InputError):
        Generator(16, 0, 16, 16, 3, synthesis_kwargs={"bogus": 1})
    G = tiny_generator(0)
    with pytest.raises(InputError):
        G.synthesis(torch.randn(1, G.num_ws + 1, 32))
    with pytest.raises(InputError):
        G.synthesis(torch.randn(1, G.num_ws, 32), noise_mode="fresh")
    with pytest.raises(InputError):
        G.mapping(torch.randn(2, 31))


def test_truncation_psi_zero_gives_w_avg_and_cutoff_limits_it() -> None:
    G = tiny_generator(2)
    z = torch.randn(4, 32)
    ws0 = G.mapping(z, truncation_psi=0)
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0), atol=1e-6)
    ws1 = G.mapping(z)
    assert not torch.allclose(ws1[:, 0], G.mapping.w_avg, atol=1e-3)
    assert torch.equal(ws1[:, 0], ws1[:, -1])  # all slots are copies before mixing
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(half[:, :3], G.mapping.w_avg + 0.5 * (ws1[:, :3] - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(half[:, 3:], ws1[:, 3:])
    with pytest.raises(InputError, match="cutoff"):
        G.mapping(z, truncation_psi=0.5, truncation_cutoff=G.num_ws + 1)


def test_noise_modes() -> None:
    G = tiny_generator(4)
    ws = G.mapping(torch.randn(2, 32))
    with torch.no_grad():
        c1, c2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        n1 = G.synthesis(ws, noise_mode="none")
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        zero_strength = G.synthesis(ws, noise_mode="const")
    assert torch.equal(c1, c2)  # const is deterministic
    assert not torch.allclose(r1, r2)  # random draws fresh noise
    assert not torch.allclose(c1, r1)
    assert torch.allclose(n1, zero_strength, atol=1e-6)  # none = no noise at all
    assert not torch.allclose(n1, c1)


def test_ws_index_map_and_usage() -> None:
    G = tiny_generator(5)  # 32x32: num_ws 8
    index = G.synthesis.ws_index()
    assert index == {
        "b4.conv1": 0,
        "b4.torgb": 1,
        "b8.conv0": 1,
        "b8.conv1": 2,
        "b8.torgb": 3,
        "b16.conv0": 3,
        "b16.conv1": 4,
        "b16.torgb": 5,
        "b32.conv0": 5,
        "b32.conv1": 6,
        "b32.torgb": 7,
    }
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in G.synthesis.named_modules():
        if isinstance(mod, (SynthesisLayer, ToRGBLayer)):
            hooks.append(mod.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, a[1].clone())))
    ws = G.mapping(torch.randn(1, 32))
    with torch.no_grad():
        base_img = G.synthesis(ws)
        base = dict(seen)
        for i in range(G.num_ws):
            ws2 = ws.clone()
            ws2[:, i] += 1.0
            img = G.synthesis(ws2)
            changed = {n for n in base if not torch.equal(base[n], seen[n])}
            assert changed == {n for n, j in index.items() if j == i}, i
            assert not torch.allclose(img, base_img), i  # every index drives some layer
    for h in hooks:
        h.remove()


def test_conditional_mapping_uses_the_label() -> None:
    G = Generator(16, 4, 16, 8, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64})
    assert "mapping.embed.weight" in G.state_dict()
    z = torch.randn(2, 16)
    a = G.mapping(z, torch.eye(4)[:2])
    b = G.mapping(z, torch.eye(4)[2:])
    assert a.shape == (2, G.num_ws, 16) and not torch.allclose(a, b)
    with pytest.raises(InputError):
        G.mapping(z)


def test_mapping_without_z_normalisation_sees_the_scale_of_z(tmp_path) -> None:
    from stylerig.gan import load_generator, save_generator

    kw = {"mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 64}}
    G = Generator(16, 0, 16, 8, 3, **kw)
    z = torch.randn(3, 16)
    # StyleGAN2 normalises z first: a scaled z is the same latent.
    assert torch.allclose(G.mapping(2.5 * z), G.mapping(z), atol=1e-6)
    raw = Generator(
        16, 0, 16, 8, 3, mapping_kwargs={"num_layers": 2, "normalize_z": False}, **kw["synthesis_kwargs"]
    )
    raw.load_state_dict(G.state_dict())
    assert not torch.allclose(raw.mapping(2.5 * z), raw.mapping(z), atol=1e-3)
    # On a z of unit second moment the two agree: the option removes only the division.
    unit = z * z.square().mean(1, keepdim=True).rsqrt()
    assert torch.allclose(raw.mapping(unit), G.mapping(unit), atol=1e-5)
    # The setting travels with the file, and old configs (no key) keep StyleGAN2's normalisation.
    assert "normalize_z" not in G.config["mapping_kwargs"]
    H = load_generator(save_generator(raw, tmp_path / "g.safetensors"))
    assert H.mapping.normalize_z is False and torch.equal(H.mapping(z), raw.mapping(z))
    with pytest.raises(InputError, match="normalize_z"):
        Generator(16, 0, 16, 8, 3, mapping_kwargs={"normalize_z": "no"})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_path_on_cpu(dtype: torch.dtype) -> None:
    G = tiny_generator(6, conv_clamp=256)
    z = torch.randn(2, 32)
    with torch.no_grad():
        ref = G(z)
        img = G(z, dtype=dtype)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert (img - ref).abs().max() <= 0.02 * ref.abs().max()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_reduced_precision(dtype: torch.dtype) -> None:
    G = tiny_generator(7, img_resolution=64, conv_clamp=256).cuda()
    z = torch.randn(4, 32, device="cuda")
    with torch.no_grad():
        ref = G(z)
        img = G(z, dtype=dtype)
        cpu = G.cpu()(z.cpu())
    assert img.dtype == torch.float32 and img.device.type == "cuda" and torch.isfinite(img).all()
    assert (img - ref).abs().max() <= 0.02 * ref.abs().max()
    assert (ref.cpu() - cpu).abs().max() <= 1e-3 * cpu.abs().max()


def test_cpu_chunking_gives_the_same_images(monkeypatch: pytest.MonkeyPatch) -> None:
    import stylerig.gan.networks as networks

    G = tiny_generator(8)
    ws = G.mapping(torch.randn(5, 32))
    with torch.no_grad():
        whole = G.synthesis(ws)
        assert G.synthesis.cpu_chunk_size() >= 5
        monkeypatch.setattr(networks, "CPU_CHUNK_BYTES", 1)
        assert G.synthesis.cpu_chunk_size() == 1
        calls = []
        monkeypatch.setattr(
            G.synthesis, "_run", lambda w, *a, f=G.synthesis._run: calls.append(len(w)) or f(w, *a)
        )
        chunked = G.synthesis(ws)
    assert calls == [1] * 5
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_cached_weight_norms_follow_weight_changes() -> None:
    G = tiny_generator(9)
    z = torch.randn(2, 32)
    with torch.no_grad():
        before = G(z)
        G.synthesis.b16.conv1.weight.add_(torch.randn_like(G.synthesis.b16.conv1.weight))
        after = G(z)
        ref = _reference()(G.state_dict(), 32, 2)(z)
    assert not torch.allclose(before, after)
    assert (after - ref).abs().max().item() <= 1e-5
    # With autograd recording, gradients reach the weights through the demodulation.
    G.requires_grad_(True)
    G(z).square().mean().backward()
    assert G.synthesis.b16.conv1.weight.grad is not None and G.mapping.fc0.weight.grad is not None


def test_default_order_is_fused_only_for_one_sample() -> None:
    """The default evaluation order in reduced precision: unfused for a batch (the faster on a GPU,
    docs/gpu.md), fused for one sample; bit-identical to forcing that order."""
    from stylerig.gan.networks import modulated_conv2d

    torch.manual_seed(1)
    w, st = torch.randn(8, 6, 3, 3), torch.randn(2, 6) + 2
    for x in (torch.randn(2, 6, 5, 5).bfloat16(), torch.randn(1, 6, 5, 5).bfloat16()):
        order = x.shape[0] == 1
        y = modulated_conv2d(x, w, st[: x.shape[0]])
        assert torch.equal(y, modulated_conv2d(x, w, st[: x.shape[0]], fused=order))
        assert not torch.equal(y, modulated_conv2d(x, w, st[: x.shape[0]], fused=not order))


@pytest.mark.parametrize("up", [1, 2])
def test_unfused_half_precision_does_not_overflow(up: int) -> None:
    """Large activations and styles: x * styles overflows float16 unless weight and styles are brought
    to unit max first, which demodulation makes free (same result as the float64 fused reference)."""
    from stylerig.gan.networks import modulated_conv2d

    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8) * 200
    w = torch.randn(32, 64, 3, 3) * 3
    st = torch.randn(2, 64) * 100
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kw = {"up": up, "resample_filter": (f[:, None] * f[None]) / 64.0 if up == 2 else None}
    naive = torch.nn.functional.conv2d(x.half() * st.half()[:, :, None, None], w.half(), padding=1)
    assert not torch.isfinite(naive).all()  # the hazard is real at these magnitudes
    ref = modulated_conv2d(x.double(), w.double(), st.double(), fused=True, **kw)
    for ws in (None, w.square().sum([2, 3])):  # with and without the layer's cached weight norms
        y = modulated_conv2d(x.half(), w, st, fused=False, weight_sq=ws, **kw)
        assert y.dtype == torch.float16 and torch.isfinite(y).all()
        assert (y.double() - ref).abs().max() <= 5e-3 * ref.abs().max()
