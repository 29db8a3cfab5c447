"""RigNet: shapes, what it reads, initialisation, gradients, steering baseline, statistics, files, losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stylerig import params
from stylerig.errors import AssetError, InputError
from stylerig.rignet import (
    PairBatch,
    RigLossConfig,
    RigNet,
    load_rignet,
    rig_losses,
    save_rignet,
    spread_scale,
)
from stylerig.training.rignet import RigConfig

S, D = 4, 16  # tiny W+: 4 slots of width 16


@pytest.fixture
def one_thread():
    # Tiny ops: on a busy 2-core machine two spinning OpenMP threads make these loops ~100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _p(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, params.NUM_PARAMS, generator=g)


def _ws(batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, S, D, generator=g)


# ----------------------------------------------------------------------------------------------------
# The network.


@pytest.mark.parametrize("mode,k", [("pose", 3), ("expression", 64), ("illumination", 27), ("all", 94)])
@pytest.mark.parametrize("arch", ["rignet", "steering", "delta"])
def test_shapes_and_block_size(mode: str, k: int, arch: str) -> None:
    rig = RigNet(S, D, mode, latent=8, arch=arch)
    assert rig.mode == mode and rig.num_params == k and rig.index.numel() == k
    out = rig(_ws(3), _p(3), p_current=_p(3, seed=5))
    assert out.shape == (3, S, D) and out.dtype == torch.float32
    assert torch.equal(rig.index, params.mode_index(mode))


@pytest.mark.parametrize("mode", list(params.MODES))
def test_reads_only_its_own_block(mode: str) -> None:
    rig = RigNet(S, D, mode, init_scale=1.0)
    ws, p = _ws(2), _p(2)
    base = rig(ws, p)
    for group in params.GROUPS:
        changed = params.replace(p, group, params.get(p, group) + 3.0)
        out = rig(ws, changed)
        if group in params.mode_groups(mode):
            assert not torch.allclose(out, base), group
        else:
            torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_identity_at_init_and_gradients_reach_every_layer() -> None:
    ws, p = _ws(4), _p(4)
    exact = RigNet(S, D, "expression", init_scale=0.0)
    torch.testing.assert_close(exact(ws, p), ws, rtol=0, atol=0)

    rig = RigNet(S, D, "expression")  # default init_scale: near identity, but not exactly
    d = rig(ws, p) - ws
    assert 0 < d.abs().max() < 0.05 * ws.std()
    (rig(ws, p) - 2 * ws).pow(2).sum().backward()
    assert rig.encoder is not None
    for name, t in [
        ("encoder", rig.encoder.weight),
        ("decoder", rig.decoder.weight),
        ("bias", rig.decoder.bias),
    ]:
        assert t.grad is not None and t.grad.abs().sum() > 0, name


def test_steering_ignores_w_and_needs_current_params() -> None:
    rig = RigNet(S, D, "pose", arch="steering", init_scale=1.0)
    assert rig.encoder is None and rig.decoder.bias is None
    p_cur, p_tgt = _p(2, seed=1), _p(2, seed=2)
    d1 = rig(_ws(2, seed=3), p_tgt, p_current=p_cur) - _ws(2, seed=3)
    d2 = rig(_ws(2, seed=4), p_tgt, p_current=p_cur) - _ws(2, seed=4)
    torch.testing.assert_close(d1, d2)
    assert d1.abs().sum() > 0
    # No change requested: exactly no edit.
    torch.testing.assert_close(rig(_ws(2), p_cur, p_current=p_cur), _ws(2), rtol=0, atol=0)
    with pytest.raises(InputError, match="p_current"):
        rig(_ws(2), p_tgt)


def test_delta_reads_the_change_and_w_and_no_change_is_no_edit(tmp_path: Path) -> None:
    """The delta arch: d(l, Δx) − d(l, 0) -- exactly no edit for no change, the edit depends on the change
    and (with a hidden layer) on w; in a split ``all`` rig an unchanged group's decoder adds nothing."""
    rig = RigNet(S, D, "all", arch="delta", hidden=8, init_scale=1.0, split=True)
    assert rig.encoder is not None and rig.needs_current
    ws, p_cur = _ws(2), _p(2, seed=1)
    torch.testing.assert_close(rig(ws, p_cur, p_current=p_cur), ws, rtol=0, atol=0)
    light = params.replace(p_cur, "illumination", params.get(_p(2, seed=2), "illumination"))
    d = rig(ws, light, p_current=p_cur) - ws
    assert d.abs().sum() > 0
    # The same change from another current point is the same request: Δx alone, not p, is read...
    shift = params.replace(light, "expression", params.get(light, "expression") + 1.0)
    cur_shift = params.replace(p_cur, "expression", params.get(p_cur, "expression") + 1.0)
    torch.testing.assert_close(rig(ws, shift, p_current=cur_shift) - ws, d, rtol=1e-5, atol=1e-6)
    # ...and the same change of another code is another edit (the encoder's l_i enters the hidden layer).
    assert not torch.allclose(rig(_ws(2, seed=7), light, p_current=p_cur) - _ws(2, seed=7), d)
    # Only the light decoder acts on a light-only change: silencing the others changes nothing.
    with torch.no_grad():
        for k in (0, 1):
            rig.decoder[k].weight.mul_(0.0)
            rig.decoder[k].bias.mul_(0.0)
    torch.testing.assert_close(rig(ws, light, p_current=p_cur) - ws, d, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="delta rig .* needs p_current"):
        rig(ws, light)
    back = load_rignet(save_rignet(rig, tmp_path / "d.safetensors"))
    assert back.arch == "delta"
    torch.testing.assert_close(back(ws, light, p_current=p_cur), rig(ws, light, p_current=p_cur))


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="mode"):
        RigNet(S, D, "hair")
    with pytest.raises(InputError, match="arch"):
        RigNet(S, D, "pose", arch="mlp")
    with pytest.raises(InputError, match="latent"):
        RigNet(S, D, "pose", latent=0)
    rig = RigNet(S, D, "pose")
    with pytest.raises(InputError, match="ws"):
        rig(torch.randn(2, S + 1, D), _p(2))
    with pytest.raises(InputError, match="p"):
        rig(_ws(2), torch.randn(2, 94))
    with pytest.raises(InputError, match="B="):
        rig(_ws(2), _p(3))


# ----------------------------------------------------------------------------------------------------
# Statistics and normalisation.


def test_statistics_normalise_and_flag_targets_outside_training_range() -> None:
    rig = RigNet(S, D, "all")
    p = _p(500)
    rotation = params.get(p, "rotation") * torch.tensor([0.4, 0.1, 0.05])  # radians
    expression = params.get(p, "expression").clone()
    expression[:, 10:] *= 1e-4  # components the data never moves
    p = params.replace(params.replace(p, "rotation", rotation), "expression", expression)
    assert not rig.outside_range(p * 100).any()  # no statistics yet: nothing to warn about
    rig.set_statistics(p)
    assert int(rig.count) == 500
    x = rig.normalise(p)
    assert x.shape == (500, 94)
    torch.testing.assert_close(x.mean(0), torch.zeros(94), atol=1e-4, rtol=0)
    # Whitened where the data varies (yaw, pitch, roll, the first expressions) ...
    torch.testing.assert_close(x[:, :13].std(0, unbiased=False), torch.ones(13), atol=1e-3, rtol=0)
    # ... but the near-constant expressions are not blown up to unit noise.
    assert x[:, 13:67].abs().max() < 0.05  # 1e-4 spread / (0.1 x group rms ~0.04)
    assert not rig.outside_range(p).any()
    far = params.replace(p[:2], "rotation", torch.tensor([[1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    flags = rig.outside_range(far)
    assert flags.shape == (2, 94) and bool(flags[0, 0]) and not bool(flags[1, :3].any())


def test_statistics_bad_input() -> None:
    rig = RigNet(S, D, "pose")
    with pytest.raises(InputError):
        rig.set_statistics(_p(1))
    with pytest.raises(InputError, match="NaN"):
        rig.set_statistics(torch.full((4, 257), float("nan")))


# ----------------------------------------------------------------------------------------------------
# Files.


def test_save_load_round_trip(tmp_path: Path) -> None:
    rig = RigNet(S, D, "illumination", latent=6, arch="rignet", init_scale=0.5)
    rig.set_statistics(_p(50))
    save_rignet(rig, tmp_path / "rig.safetensors", {"dfr": "dfr.safetensors", "steps": 12})
    back = load_rignet(tmp_path)  # the folder holding rig.safetensors
    assert back.config() == rig.config() and back.mode == "illumination" and not back.training
    assert back.extra_config == {"dfr": "dfr.safetensors", "steps": 12}
    for k, v in rig.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    ws, p = _ws(3), _p(3)
    torch.testing.assert_close(back(ws, p), rig(ws, p), rtol=0, atol=0)

    steer = RigNet(S, D, "pose", arch="steering")
    back = load_rignet(save_rignet(steer, tmp_path / "steer.safetensors"))
    assert back.arch == "steering" and back.extra_config == {}


def test_bad_rig_files(tmp_path: Path) -> None:
    from stylerig.tensorfile import save_tensors

    with pytest.raises(AssetError, match="not found"):
        load_rignet(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(AssetError, match="not a readable"):
        load_rignet(junk)
    good = save_rignet(RigNet(S, D, "pose"), tmp_path / "rig.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(AssetError):
        load_rignet(cut)
    other = save_tensors(tmp_path / "other.safetensors", {"x": torch.zeros(2)}, {"format": "stylerig.dfr"})
    with pytest.raises(AssetError, match="not a stylerig rig") as info:
        load_rignet(other)
    assert info.value.hint
    # A config that does not match the tensors (here: another latent width).
    tensors = RigNet(S, D, "pose").state_dict()
    cfg = json.dumps({**RigNet(S, D, "pose").config(), "latent": 5})
    meta = {"format": "stylerig.rignet", "version": "1", "config": cfg}
    with pytest.raises(AssetError, match="tensor"):
        load_rignet(save_tensors(tmp_path / "mismatch.safetensors", tensors, meta))
    meta["config"] = json.dumps({"num_ws": S, "w_dim": D, "mode": "hair"})
    with pytest.raises(AssetError, match="config"):
        load_rignet(save_tensors(tmp_path / "badmode.safetensors", tensors, meta))
    meta["version"] = "99"
    with pytest.raises(AssetError, match="version"):
        load_rignet(save_tensors(tmp_path / "v99.safetensors", tensors, meta))


# ----------------------------------------------------------------------------------------------------
# Losses, with a fake frozen DFR and a fake renderer.


class _LinearDFR(torch.nn.Module):
    """A frozen linear 'DFR': ws -> p, non-zero only in the rotation, expression[:4] and identity[:6] slots."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        a = torch.zeros(S * D, params.NUM_PARAMS)
        live = torch.cat([params.mode_index("pose"), params.mode_index("expression")[:4], torch.arange(6)])
        a[:, live] = torch.randn(S * D, live.numel(), generator=g) / (S * D) ** 0.5
        self.register_buffer("a", a)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return ws.flatten(1) @ self.a


def _fake_render_loss(p: torch.Tensor, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    # The 'image' of a code is its true parameter vector: rendering p against it compares parameters.
    return (p - images).pow(2).sum(-1) + 0 * landmarks.sum((1, 2))


def _pair_batch(dfr: _LinearDFR, n: int = 8) -> PairBatch:
    w, v = _ws(n, seed=11), _ws(n, seed=12)
    lm = torch.zeros(n, 68, 2)
    with torch.no_grad():
        return PairBatch(ws_w=w, ws_v=v, images_w=dfr(w), images_v=dfr(v), landmarks_w=lm, landmarks_v=lm)


def test_loss_terms_switches_and_render_batch() -> None:
    dfr = _LinearDFR()
    batch = _pair_batch(dfr, n=3)
    calls: list[int] = []

    def render(p: torch.Tensor, images: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        calls.append(p.shape[0])
        return _fake_render_loss(p, images, lm)

    out = rig_losses(RigNet(S, D, "pose"), dfr, render, batch)
    assert set(out.parts) == {"rec", "edit", "consist"} and out.total.ndim == 0
    assert calls == [2 * 2 * 3]  # (edit + consist) x (both directions) x B, one render call
    out = rig_losses(RigNet(S, D, "all"), dfr, render, batch, RigLossConfig(consist=False))
    assert set(out.parts) == {"rec", "edit"} and calls[-1] == 3 * 2 * 3  # three groups
    # Exactly one group changed per sample, read by the 'all' rig: rows see p_w with one group of p_v.
    out = rig_losses(RigNet(S, D, "pose"), dfr, render, batch, RigLossConfig(edit=False, consist=False))
    assert set(out.parts) == {"rec"} and len(calls) == 2
    with pytest.raises(InputError):
        RigLossConfig(rec=False, edit=False, consist=False)
    with pytest.raises(InputError):
        RigLossConfig(edit_weight=-1.0)


def test_at_init_edit_error_is_the_pose_difference_and_consist_is_near_zero() -> None:
    # ŵ = w exactly: p_edit = [p_v with w's pose] -> L_edit = |p_w^R - p_v^R|²; p_consist = p_w -> 0.
    dfr = _LinearDFR()
    batch = _pair_batch(dfr, n=4)
    out = rig_losses(RigNet(S, D, "pose", init_scale=0.0), dfr, _fake_render_loss, batch)
    diff = params.get(batch.images_w, "rotation") - params.get(batch.images_v, "rotation")
    torch.testing.assert_close(out.parts["edit"], diff.pow(2).sum(-1).mean())
    assert float(out.parts["consist"]) < 1e-10 and float(out.parts["rec"]) == 0.0


def test_param_term_at_init_is_the_edited_groups_difference_in_output_scale() -> None:
    # ŵ = w exactly: F(ŵ) = p_w, so the edited group's values miss the partner's by p_w - p_v (mean over
    # the group's values, in F's output scale) and every other value is met (0).
    dfr = _LinearDFR()
    dfr.register_buffer("p_scale", torch.full((params.NUM_PARAMS,), 0.5))
    batch = _pair_batch(dfr, n=4)
    weights = (("expression", 3.0),)
    base = rig_losses(
        RigNet(S, D, "all", init_scale=0.0),
        dfr,
        _fake_render_loss,
        batch,
        RigLossConfig(group_weights=weights),
    )
    assert "param" not in base.parts  # off by default (not in the paper)
    cfg = RigLossConfig(param_weight=2.0, group_weights=weights)
    out = rig_losses(RigNet(S, D, "all", init_scale=0.0), dfr, _fake_render_loss, batch, cfg)
    per_group = []
    for g, w in (("rotation", 1.0), ("expression", 3.0), ("illumination", 1.0)):
        d = (params.get(batch.images_w, g) - params.get(batch.images_v, g)) / 0.5
        per_group.append(w * d.square().mean(1).mean())  # both directions give the same squares
    expected = torch.stack(per_group).mean()
    torch.testing.assert_close(out.parts["param"], expected)
    torch.testing.assert_close(out.total, base.total + 2.0 * expected)
    # A given unit per value replaces F's: twice the scale, a quarter of the squares.
    scaled = rig_losses(
        RigNet(S, D, "all", init_scale=0.0),
        dfr,
        _fake_render_loss,
        batch,
        cfg,
        param_scale=torch.full((params.NUM_PARAMS,), 1.0),
    )
    torch.testing.assert_close(scaled.parts["param"], expected / 4)
    with pytest.raises(InputError):
        RigLossConfig(param_weight=-1.0)
    with pytest.raises(InputError, match="param scale"):
        RigConfig(mode="all", param_scale="sd").check()


def test_spread_scale_is_the_spread_floored_per_group() -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.zeros(200, params.NUM_PARAMS)
    p[:, 224] = torch.randn(200, generator=g) * 0.05  # one light value varies
    p[:, 225] = torch.randn(200, generator=g) * 1e-4  # another barely
    p[:, 80:82] = torch.randn(200, 2, generator=g) * 2.0  # two expression values
    scale = spread_scale(p, params.GROUPS)
    std = p.double().std(0, unbiased=False)
    light = params.LAYOUT["illumination"]
    floor = 0.1 * float(std[light].pow(2).mean().sqrt())
    assert float(scale[224]) == pytest.approx(float(std[224]))
    assert float(scale[225]) == pytest.approx(floor) and floor > float(std[225])  # floored
    assert float(scale[230]) == pytest.approx(floor)  # a light value that never moves
    assert float(scale[100]) == pytest.approx(0.1 * float(std[80:144].pow(2).mean().sqrt()))
    assert float(scale[0]) == 1e-8  # a group that never moves: the tiny floor (callers replace it)


@pytest.mark.parametrize("mode", ["pose", "all"])
def test_tiny_overfit_losses_go_down(mode: str, one_thread: None) -> None:
    dfr = _LinearDFR().requires_grad_(False)
    batch = _pair_batch(dfr, n=8)
    rig = RigNet(S, D, mode, latent=8)
    rig.set_statistics(dfr(_ws(64, seed=3)))
    opt = torch.optim.Adam(rig.parameters(), lr=3e-3)
    first = rig_losses(rig, dfr, _fake_render_loss, batch)
    for _ in range(300):
        out = rig_losses(rig, dfr, _fake_render_loss, batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert rig.encoder is not None and rig.encoder.weight.grad.abs().sum() > 0
    assert float(out.parts["edit"]) < 0.1 * float(first.parts["edit"])
    assert float(out.parts["rec"]) < 0.05 and float(out.parts["consist"]) < 0.05


def test_precomputed_params_give_the_same_loss() -> None:
    dfr = _LinearDFR()
    batch = _pair_batch(dfr, n=3)
    rig = RigNet(S, D, "expression", init_scale=1.0)
    a = rig_losses(rig, dfr, _fake_render_loss, batch)
    pre = PairBatch(**{**batch.__dict__, "p_w": dfr(batch.ws_w), "p_v": dfr(batch.ws_v)})
    b = rig_losses(rig, dfr, _fake_render_loss, pre)
    torch.testing.assert_close(a.total, b.total)


def test_steering_rec_is_zero_and_it_still_learns(one_thread: None) -> None:
    dfr = _LinearDFR().requires_grad_(False)
    batch = _pair_batch(dfr, n=8)
    rig = RigNet(S, D, "pose", arch="steering")
    opt = torch.optim.Adam(rig.parameters(), lr=3e-3)
    first = rig_losses(rig, dfr, _fake_render_loss, batch)
    for _ in range(100):
        out = rig_losses(rig, dfr, _fake_render_loss, batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert float(out.parts["rec"]) == 0.0
    assert float(out.parts["edit"]) < 0.5 * float(first.parts["edit"])


# ----------------------------------------------------------------------------------------------------
# `stylerig train-rignet` end to end on a tiny generator's sample set (16x16, 6 ws of width 16).


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import numpy as np

    from stylerig.dfr import DFR, save_dfr, ws_statistics
    from stylerig.gan.testing import tiny_generator
    from stylerig.sampling import write_sample_set

    root = tmp_path_factory.mktemp("rigset")

    class Truth:  # fabricated landmarks (the last row: none) and params
        name = "fake-truth"

        def __call__(self, seeds, ws):
            b = len(seeds)
            lm = np.random.default_rng(list(seeds)).uniform(4, 12, (b, 68, 2)).astype(np.float32)
            lm[np.asarray(seeds) == 9] = np.nan
            return np.random.default_rng(list(seeds)).normal(size=(b, 257)).astype(np.float32), lm

    G = tiny_generator(3, 16, z_dim=16, w_dim=16, channel_base=128, channel_max=16)
    write_sample_set(root / "set", G, 20, batch=10, device="cpu", truth=Truth(), landmarks="none")
    from stylerig.data import SampleSet

    s = SampleSet(root / "set")
    ws = torch.from_numpy(np.array(s.ws, dtype=np.float32))
    F = DFR(s.num_ws, s.w_dim, hidden=(16, 16), w_mean=ws_statistics(ws)[0], w_std=ws_statistics(ws)[1])
    torch.nn.init.normal_(F.fc2.weight, 0.0, 0.05)
    return root / "set", save_dfr(F, root / "dfr.safetensors")


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from stylerig_cli.app import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code or 0, " ".join(cap.out.split()), " ".join(cap.err.split())


def test_cli_defaults_follow_the_preset_of_the_set(
    tiny_set, tmp_path: Path, capsys, one_thread: None
) -> None:
    """auto: a set whose manifest says it was sampled from the built-in world trains the world recipe
    (options given explicitly still win); --preset paper trains the paper's rig on the same set."""
    import shutil

    data, dfr = tiny_set
    world = tmp_path / "world-set"
    shutil.copytree(data, world)
    manifest = json.loads((world / "manifest.json").read_text())
    manifest["generator"] = {"path": None, "world": True}
    (world / "manifest.json").write_text(json.dumps(manifest))
    base = ["train-rignet", "--dfr", str(dfr), "--device", "cpu", "--mode", "all", "--steps", "2"]
    small = ["--subspace", "4", "--hidden", "4", "--batch", "2"]
    code, stdout, err = _run_cli([*base, "--data", str(world), "--out", str(tmp_path / "w"), *small], capsys)
    assert code == 0, err
    assert (
        "preset world (auto: a set of the built-in world): --arch delta --subspace 4 --hidden 4 --split"
        in stdout
    )
    rig = load_rignet(tmp_path / "w" / "rig.safetensors")
    assert (rig.arch, rig.split, rig.subspace, rig.hidden) == ("delta", True, 4, 4)
    args = json.loads((tmp_path / "w" / "run.json").read_text())["arguments"]
    assert (
        args["preset_used"] == "world"
        and args["param_weight"] == 1.0
        and args["group_weight"] == "expression=10"
    )
    code, stdout, err = _run_cli(
        [*base, "--data", str(world), "--out", str(tmp_path / "p"), "--preset", "paper", "--batch", "2"],
        capsys,
    )
    assert code == 0 and "preset paper: --arch rignet --subspace 0 --hidden 0 --no-split" in stdout, err
    rig = load_rignet(tmp_path / "p" / "rig.safetensors")
    assert (rig.arch, rig.split, rig.subspace, rig.hidden) == ("rignet", False, 0, 0)
    code, stdout, err = _run_cli(
        [*base, "--data", str(data), "--out", str(tmp_path / "o"), "--batch", "2"], capsys
    )
    assert code == 0 and "preset paper (auto: not a set of the built-in world)" in stdout, err
    code, stdout, err = _run_cli(
        [*base, "--data", str(data), "--out", str(tmp_path / "x"), "--preset", "fast"], capsys
    )
    assert code == 2 and "unknown preset 'fast'" in err + stdout and not (tmp_path / "x").exists()


def test_delta_rig_says_that_l_rec_switches_change_nothing(
    tiny_set, tmp_path: Path, one_thread: None
) -> None:
    from stylerig.training.rignet import RigConfig, train_rignet

    data, dfr = tiny_set
    said = "L_rec is identically 0"
    for i, (kw, noted) in enumerate(
        (
            ({"arch": "delta", "rec": False}, True),
            ({"arch": "delta", "rec_weight": 3.0}, True),
            ({"arch": "delta"}, False),
            ({"rec": False}, False),
        )  # RigNet's own L_rec is a real term
    ):
        cfg = RigConfig(mode="pose", steps=1, batch=2, val_every=0, **kw)
        r = train_rignet(data, dfr, tmp_path / str(i), config=cfg, device="cpu")
        assert any(said in n for n in r.notes) == noted, kw


def test_cli_trains_saves_and_resumes(tiny_set, tmp_path: Path, capsys, one_thread: None) -> None:
    data, dfr = tiny_set
    base = ["train-rignet", "--data", str(data), "--dfr", str(dfr), "--device", "cpu", "--batch", "2"]
    for mode, extra in (
        ("pose", []),
        ("all", ["--no-consist", "--subspace", "4"]),
        ("expression", ["--arch", "steering", "--hidden", "4", "--tied", "no"]),
    ):
        out = tmp_path / mode
        code, stdout, err = _run_cli(
            [*base, "--mode", mode, "--out", str(out), "--steps", "3", *extra], capsys
        )
        assert code == 0, err
        assert "wrote" in stdout and "edits/s" in stdout
        rig = load_rignet(out / "rig.safetensors")
        assert rig.mode == mode and int(rig.count) > 0 and rig.extra_config["steps"] == 3
        assert rig.subspace == (4 if mode == "all" else 0) and rig.hidden == (
            4 if mode == "expression" else 0
        )
        assert rig.tied == (mode != "expression")  # auto: the tiny generator's unmixed codes have equal slots
        assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    # Resume: 2 steps, then 4 in total == 4 at once (all inside the 20-step warm-up, so the schedule
    # is the same; the trainer's checkpoint carries the pair RNG).
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run_cli([*base, "--mode", "pose", "--out", str(a), "--steps", "4"], capsys)[0] == 0
    assert _run_cli([*base, "--mode", "pose", "--out", str(b), "--steps", "2"], capsys)[0] == 0
    code, stdout, _ = _run_cli([*base, "--mode", "pose", "--out", str(b), "--steps", "4"], capsys)
    assert code == 0 and "resumed from step 2" in stdout
    ra, rb = load_rignet(a / "rig.safetensors"), load_rignet(b / "rig.safetensors")
    for k, v in ra.state_dict().items():
        assert torch.equal(v, rb.state_dict()[k]), k


def test_a_checkpoint_from_before_l_param_resumes_without_it(
    tiny_set, tmp_path: Path, capsys, one_thread: None
) -> None:
    """Rig checkpoints written before ``param_weight`` existed stand for 0 (the paper's losses)."""
    from stylerig.tensorfile import load_tensors, save_tensors

    data, dfr = tiny_set
    base = ["train-rignet", "--data", str(data), "--dfr", str(dfr), "--device", "cpu", "--batch", "2"]
    base += ["--mode", "all", "--out", str(tmp_path / "r")]
    assert _run_cli([*base, "--steps", "2"], capsys)[0] == 0
    ckpt = tmp_path / "r" / "checkpoint.safetensors"
    tensors, meta = load_tensors(ckpt, what="checkpoint", hint="")
    config = json.loads(meta["config"])
    assert config["task"].pop("param_weight") == 0.0
    save_tensors(ckpt, tensors, {**meta, "config": json.dumps(config, sort_keys=True)})
    code, stdout, err = _run_cli([*base, "--steps", "3"], capsys)
    assert code == 0 and "resumed from step 2" in stdout, err
    code, _, err = _run_cli([*base, "--steps", "4", "--param-weight", "1"], capsys)  # a changed setting
    assert code == 2 and "param_weight" in err, err
    out = tmp_path / "p"
    code, stdout, err = _run_cli([*base[:-1], str(out), "--steps", "2", "--param-weight", "1"], capsys)
    assert code == 0, err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("param" in r for r in log if r["kind"] == "train")
    # L_param in the data's units: a different loss from the same start, recorded in the run.
    out_d = tmp_path / "d"
    args = [*base[:-1], str(out_d), "--steps", "2", "--param-weight", "1", "--param-scale", "data"]
    code, _, err = _run_cli(args, capsys)
    assert code == 0, err
    log_d = [json.loads(line) for line in (out_d / "log.jsonl").read_text().splitlines()]
    first = next(r for r in log if r["kind"] == "train")
    first_d = next(r for r in log_d if r["kind"] == "train")
    assert first_d["param"] != pytest.approx(first["param"], rel=0.5)  # F's light spread << its 0.3
    assert first_d["edit"] == pytest.approx(first["edit"], rel=1e-3)  # from the same start
    assert json.loads((out_d / "run.json").read_text())["arguments"]["param_scale"] == "data"
    code, _, err = _run_cli([*args[:-1], "sd"], capsys)
    assert code == 2 and "param scale" in err and "Traceback" not in err, err


def test_cli_errors_are_one_line(tiny_set, tmp_path: Path, capsys) -> None:
    data, dfr = tiny_set
    base = ["train-rignet", "--data", str(data), "--out", str(tmp_path / "x"), "--device", "cpu"]
    for extra, what in (
        (["--dfr", str(dfr), "--mode", "hair"], "unknown --mode"),
        (["--dfr", str(dfr), "--mode", "pose", "--arch", "mlp"], "unknown --arch"),
        (["--dfr", str(dfr), "--mode", "pose", "--no-rec", "--no-edit", "--no-consist"], "switched off"),
        (["--dfr", str(tmp_path / "none.safetensors"), "--mode", "pose"], "not found"),
        (["--dfr", str(data / "ws.npy"), "--mode", "pose"], "DFR"),
    ):
        code, _, err = _run_cli([*base, *extra], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith("error:") and err.count("error:") == 1 and what in err, err


def test_edit_metrics_perfect_and_absent_edits() -> None:
    from stylerig.training.rignet import _std_and_active, edit_metrics, heldout_pairs

    ref = _p(200, seed=3)
    ref[:, params.LAYOUT["identity"].start + 5 : params.LAYOUT["identity"].stop] = 0.0  # inactive: ignored
    std, active = _std_and_active(ref)
    assert int(active[params.LAYOUT["identity"]].sum()) == 5
    before, other = _p(40, seed=4), _p(40, seed=5)
    target = params.replace(before, "rotation", params.get(other, "rotation"))
    perfect = edit_metrics(before, target, target, ("rotation",), std, active)
    assert perfect["rotation_err_after"] == 0 and perfect["rotation_err_ratio"] == 0
    assert perfect["rotation_drift_ratio"] == 0 and perfect["yaw_transfer_ratio"] == pytest.approx(1.0)
    none = edit_metrics(before, target, before, ("rotation",), std, active)
    assert none["rotation_err_ratio"] == pytest.approx(1.0) and none["yaw_transfer_ratio"] == 0
    drifted = params.replace(target, "identity", params.get(before, "identity") + std[:80])
    m = edit_metrics(before, target, drifted, ("rotation",), std, active)
    assert m["rotation_drift_identity"] == pytest.approx(1.0, rel=1e-4)
    for g in ("expression", "illumination"):  # transfer: the share of the requested change that arrived
        target = params.replace(before, g, params.get(other, g))
        for share in (1.0, 0.7, 0.0):
            half = before + share * (target - before)
            m = edit_metrics(before, target, half, (g,), std, active)
            assert m[f"{g}_transfer_ratio"] == pytest.approx(share, abs=1e-6), (g, share)
    w, v = heldout_pairs(torch.arange(10, 20).numpy(), 100)
    assert len(w) == 100 and (w != v).all() and set(w) | set(v) <= set(range(10, 20))
    # A group the DFR does not read yet (constant output, as after a few steps) cannot be measured: no
    # error ratio of 0 / 0 passing for a perfect edit, no drift ratio of x / 1e-12.
    ref[:, params.LAYOUT["illumination"]] = 0.25
    std, active = _std_and_active(ref)
    target = params.replace(before, "illumination", params.get(other, "illumination"))
    m = edit_metrics(before, target, before, ("illumination", "rotation"), std, active)
    assert m["illumination_measurable"] == 0.0 and "rotation_err_ratio" in m
    assert not [k for k in m if k.startswith("illumination_") and k != "illumination_measurable"]


def test_tied_and_subspace_residuals(tmp_path: Path) -> None:
    ws, p = _ws(3), _p(3)
    tied = RigNet(S, D, "pose", init_scale=1.0, tied=True)
    d = tied(ws, p) - ws
    torch.testing.assert_close(d, d[:, :1].expand_as(d))
    sub = RigNet(S, D, "expression", init_scale=1.0, subspace=3)
    codes = torch.randn(50, 1, D) * torch.tensor([5.0, 3.0, 2.0] + [1e-3] * (D - 3))
    sub.set_subspace(codes.expand(-1, S, -1).contiguous())
    d = sub(ws, p) - ws
    assert d[..., 3:].abs().max() < 1e-2 * d[..., :3].abs().max()  # only the 3 used directions move
    back = load_rignet(save_rignet(sub, tmp_path / "sub.safetensors"))
    assert back.subspace == 3 and torch.equal(back.basis, sub.basis)
    torch.testing.assert_close(back(ws, p), sub(ws, p))
    with pytest.raises(InputError, match="subspace"):
        RigNet(S, D, "pose", subspace=D + 1)
    with pytest.raises(InputError, match="no edit subspace"):
        tied.set_subspace(codes.expand(-1, S, -1))


@pytest.mark.parametrize("arch", ["rignet", "steering", "delta"])
def test_hidden_decoder_option(arch: str, tmp_path: Path) -> None:
    rig = RigNet(S, D, "pose", arch=arch, hidden=8, init_scale=1.0)
    ws, p, p_cur = _ws(2), _p(2, seed=1), _p(2, seed=2)
    out = rig(ws, p, p_current=p_cur)
    assert out.shape == (2, S, D) and not torch.allclose(out, ws)
    if arch == "steering":  # still blind to w, and exactly no edit for no change
        torch.testing.assert_close(rig(_ws(2, seed=9), p, p_current=p_cur) - _ws(2, seed=9), out - ws)
        torch.testing.assert_close(rig(ws, p_cur, p_current=p_cur), ws, rtol=0, atol=0)
    back = load_rignet(save_rignet(rig, tmp_path / "h.safetensors"))
    torch.testing.assert_close(back(ws, p, p_current=p_cur), out)


@pytest.mark.parametrize("hidden", [0, 8])
def test_split_decoders_sum_one_residual_per_group(hidden: int, tmp_path: Path) -> None:
    rig = RigNet(S, D, "all", hidden=hidden, init_scale=1.0, split=True)
    assert isinstance(rig.decoder, torch.nn.ModuleList) and len(rig.decoder) == 3
    ws, p = _ws(2), _p(2, seed=1)
    out = rig(ws, p)
    assert out.shape == (2, S, D) and not torch.allclose(out, ws)
    # Each group's targets reach ŵ only through that group's decoder: silence the expression decoder and
    # a change of the expression targets no longer moves ŵ, while a change of the pose targets still does.
    with torch.no_grad():
        for prm in rig.decoder[1].parameters():
            prm.zero_()
    base = rig(ws, p)
    p_expr = params.replace(p, "expression", params.get(p, "expression") + 1.0)
    p_pose = params.replace(p, "rotation", params.get(p, "rotation") + 0.3)
    torch.testing.assert_close(rig(ws, p_expr), base, rtol=0, atol=0)
    assert not torch.allclose(rig(ws, p_pose), base)
    back = load_rignet(save_rignet(rig, tmp_path / "split.safetensors"))
    assert back.split and back.config() == rig.config()
    torch.testing.assert_close(back(ws, p), base)
    with pytest.raises(InputError, match="several groups"):
        RigNet(S, D, "pose", split=True)


def test_group_weights_weigh_each_groups_edits() -> None:
    from stylerig.training.rignet import parse_group_weights

    dfr = _LinearDFR()
    batch = _pair_batch(dfr, n=3)
    seen: list[torch.Tensor] = []

    def render(p: torch.Tensor, images: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        out = _fake_render_loss(p, images, lm)
        seen.append(out.detach())
        return out

    rig = RigNet(S, D, "all")
    weights = parse_group_weights("pose=0, expression=2")
    assert weights == (("rotation", 0.0), ("expression", 2.0))
    out = rig_losses(rig, dfr, render, batch, RigLossConfig(consist=False, group_weights=weights))
    per_group = seen[-1].view(3, 6).mean(1)  # rows: rotation, expression, illumination edits, 2B each
    assert rig.groups == ("rotation", "expression", "illumination")
    torch.testing.assert_close(out.parts["edit"], (per_group * torch.tensor([0.0, 2.0, 1.0])).mean())
    plain = rig_losses(rig, dfr, render, batch, RigLossConfig(consist=False))
    torch.testing.assert_close(plain.parts["edit"], seen[-1].mean())  # all weights 1: the plain mean
    for bad in ("mood=2", "expression", "expression=-1", "expression=x"):
        with pytest.raises(InputError):
            parse_group_weights(bad)
    with pytest.raises(InputError):
        RigLossConfig(group_weights=(("mood", 1.0),))


def test_edit_metrics_break_the_light_down_by_sh_term() -> None:
    """An edit that reaches only the x terms (light from the side) of all three colours: ratio 0 there, 1
    for every other term that varies, and no key for terms that never vary."""
    from stylerig.training.rignet import _std_and_active, edit_metrics

    s = params.LAYOUT["illumination"]
    ref = _p(200, seed=6)
    for c in range(3):  # the quadratic band never varies (as in the world)
        ref[:, s.start + 9 * c + 4 : s.start + 9 * c + 9] = 0.0
    std, active = _std_and_active(ref)
    before, other = _p(40, seed=7), _p(40, seed=8)
    target = params.replace(before, "illumination", params.get(other, "illumination"))
    after = before.clone()
    x = [s.start + 3, s.start + 12, s.start + 21]
    after[:, x] = target[:, x]
    m = edit_metrics(before, target, after, ("illumination",), std, active)
    assert m["illumination_err_ratio_sh_x"] == 0.0
    for term in ("constant", "y", "z"):
        assert m[f"illumination_err_ratio_sh_{term}"] == pytest.approx(1.0)
    assert not any(f"illumination_err_ratio_sh_{t}" in m for t in params.SH_TERMS[4:])
    assert 0.0 < m["illumination_err_ratio"] < 1.0


def test_edit_metrics_name_few_expression_components() -> None:
    """With a few varying expression dimensions (the world's), each gets its own ratio; with many (a
    Basel model's 64), none do."""
    from stylerig.training.rignet import _std_and_active, edit_metrics

    e = params.LAYOUT["expression"]
    ref = _p(200, seed=9)
    before, other = _p(40, seed=10), _p(40, seed=11)
    target = params.replace(before, "expression", params.get(other, "expression"))
    std, active = _std_and_active(ref)
    m = edit_metrics(before, target, target, ("expression",), std, active)
    assert not any(k.startswith("expression_err_ratio_dim_") for k in m)
    ref[:, e.start + 3 :] = 0.0  # only dimensions 0, 1, 2 vary
    std, active = _std_and_active(ref)
    after = before.clone()
    after[:, e.start + 1] = target[:, e.start + 1]  # the edit reaches dimension 1 only
    m = edit_metrics(before, target, after, ("expression",), std, active)
    assert m["expression_err_ratio_dim_1"] == 0.0
    assert m["expression_err_ratio_dim_0"] == pytest.approx(1.0) == m["expression_err_ratio_dim_2"]
    assert "expression_err_ratio_dim_3" not in m


def test_measurements_ask_the_rig_for_f_of_w_with_only_the_edited_groups_changed() -> None:
    """The rig's request in a measurement is its own F(w) with the edited group(s) from the partner --
    never the judge's reading of the unedited image, which an ``all`` rig would read as a request to move
    every other group too (the blocks the judge and F disagree on)."""
    from stylerig.training.rignet import _measure, _std_and_active, rig_request

    p_cur, p_before, p_v = _p(3, 1), _p(3, 2), _p(3, 3)
    asked: list[torch.Tensor] = []

    class Recorder:
        groups = ("rotation", "expression", "illumination")

        def __call__(self, ws, p, p_current=None):
            assert p_current is p_cur
            asked.append(p.clone())
            return ws

    std, active = _std_and_active(torch.cat([p_before, p_v]))
    _measure(Recorder(), _ws(3), p_cur, p_before, p_v, lambda w: p_before, std, active)  # type: ignore[arg-type]
    assert len(asked) == 4  # each group alone, then the three together
    for request, edited in zip(
        asked, [("rotation",), ("expression",), ("illumination",), Recorder.groups], strict=True
    ):
        assert torch.equal(request, rig_request(p_cur, edited, p_v))
        for g in params.GROUPS:
            want = p_v if g in edited else p_cur
            assert torch.equal(params.get(request, g), params.get(want, g)), (edited, g)
