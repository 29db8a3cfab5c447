"""The built-in world as one object: truth of seeds, the ground-truth hook, the shipped asset, sampling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig import params
from stylerig.data import SampleSet
from stylerig.errors import AssetError, InputError
from stylerig.gan import Generator, sample_ws
from stylerig.sampling import write_sample_set
from stylerig.worlds import NUM_FACTORS, World, factors_to_world, load_world, render_portrait, sample_factors
from stylerig.worlds import world as world_mod


@pytest.fixture(scope="module")
def tiny_world() -> World:
    from stylerig.face.procedural import build_procedural_model

    torch.manual_seed(0)
    G = Generator(
        z_dim=NUM_FACTORS,
        c_dim=0,
        w_dim=32,
        img_resolution=32,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    )
    return World(G, build_procedural_model())


def test_truth_of_seeds_is_the_prior_of_the_generators_z(tiny_world: World) -> None:
    seeds = [3, 1, 4]
    z = tiny_world.z(seeds)
    assert z.shape == (3, NUM_FACTORS) and torch.equal(z, sample_factors(seeds))
    p = tiny_world.params(seeds)
    assert torch.equal(p, factors_to_world(z)[0]) and p.dtype == torch.float32
    # landmarks are the renderer's projection of the true p (pixels of the world's resolution)
    img, mask, lms = render_portrait(tiny_world.renderer, p, tiny_world.scene(seeds))
    assert torch.allclose(tiny_world.landmarks(seeds), lms, atol=1e-4)
    assert img.shape == (3, 3, 32, 32) and mask.shape == (3, 1, 32, 32)
    # the generator image is the generator's output for that z (psi 1, const noise)
    gen = tiny_world.images(seeds)
    assert torch.allclose(gen, tiny_world.generator(z, truncation_psi=1, noise_mode="const"))
    assert torch.equal(tiny_world.params(np.array([3, 1, 4])), p) and tiny_world.params(7).shape == (1, 257)


def test_render_face_pixels_do_not_depend_on_the_scene(tiny_world: World) -> None:
    p = tiny_world.params([5, 6]).requires_grad_(True)
    a, ma = tiny_world.render(p)
    other = tiny_world.scene([9, 10])  # another background and hair; the neutral shirt (soft edge)
    neutral = factors_to_world(torch.zeros(1, NUM_FACTORS))[1]
    for k in ("shirt", "shoulder_width"):
        other[k] = neutral[k].expand_as(other[k])
    b, mb = tiny_world.render(p, other)
    assert torch.equal(ma, mb) and ma.sum() > 20
    assert torch.allclose(a * ma, b * mb, atol=1e-6)
    assert not torch.allclose(a, b)  # the backgrounds differ
    a.sum().backward()  # differentiable in p
    assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(InputError):
        tiny_world.render(torch.zeros(2, 10))


def test_ground_truth_only_for_unmixed_untruncated_codes(tiny_world: World) -> None:
    G = tiny_world.generator
    seeds = [0, 1, 2, 3]
    ws = sample_ws(G, seeds, mix_max=1)
    ws[1, 3:] = ws[0, 3:]  # row 1 style-mixed with row 0's code
    ws[2] = G.mapping.w_avg + 0.7 * (ws[2] - G.mapping.w_avg)  # row 2 truncated
    p, lms = tiny_world.ground_truth(seeds, ws)
    assert p.shape == (4, 257) and lms.shape == (4, 68, 2) and p.dtype == lms.dtype == np.float32
    known = np.isfinite(p).all(1)
    assert known.tolist() == [True, False, False, True]
    assert np.isfinite(lms).all((1, 2)).tolist() == known.tolist()
    np.testing.assert_array_equal(p[known], tiny_world.params([0, 3]).numpy())


def test_world_needs_a_factor_generator() -> None:
    from stylerig.gan.testing import tiny_generator

    with pytest.raises(AssetError, match="z_dim"):
        World(tiny_generator(), None)  # type: ignore[arg-type]


def test_shipped_world_loads_and_matches_its_truth() -> None:
    world = load_world()
    assert load_world() is world  # cached
    G = world.generator
    assert (G.img_resolution, G.num_ws, G.w_dim, G.z_dim) == (128, 12, 512, NUM_FACTORS)
    assert world.face_model.num_vertices > 5000
    assert world_mod.GENERATOR_FILE.stat().st_size < 20e6  # the whole package budget is 20 MB
    # It is given z as it is (not scaled to unit second moment): the truth depends on |z| (docs/world.md).
    assert G.mapping.normalize_z is False
    seeds = [2_000_000 + i for i in range(6)]
    target, mask = world.render_seeds(seeds)
    se = (world.images(seeds) - target).pow(2) * mask
    psnr = 10 * torch.log10(4 / (se.flatten(1).sum(1) / (3 * mask.flatten(1).sum(1))))
    assert psnr.mean() > 23.0, psnr  # the asset draws the world's faces (the report measures 256 seeds)
    rot = params.get(world.params(seeds), "rotation") * 180 / math.pi
    assert rot.abs().max() < 45.0


def test_missing_asset_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(world_mod, "GENERATOR_FILE", tmp_path / "gone.safetensors")
    monkeypatch.setattr(world_mod, "_CACHE", {})
    with pytest.raises(AssetError, match="missing") as e:
        load_world()
    assert "world build" in (e.value.hint or "")


def test_sample_defaults_to_the_world_with_truth(tmp_path: Path) -> None:
    world = load_world()
    out = tmp_path / "s"
    res = write_sample_set(out, None, 6, seed=11, batch=3, landmarks="auto", device="cpu")
    s = SampleSet(out)
    assert res.n == 6 and s.resolution == 128 and s.manifest["mix_max"] == 1
    assert s.manifest["generator"]["world"] == "builtin" and s.manifest["ground_truth"] == "builtin"
    assert s.manifest["ground_truth_rows"] == 6 and s.manifest["landmark_detector"] == "ground-truth:builtin"
    seeds = list(range(11, 17))
    np.testing.assert_array_equal(s.seeds, seeds)
    np.testing.assert_allclose(s.params, world.params(seeds).numpy(), atol=1e-6)
    np.testing.assert_allclose(s.landmarks, world.landmarks(seeds).numpy(), atol=1e-3)
    np.testing.assert_allclose(s.ws[:, 0], world.generator.mapping(world.z(seeds), None)[:, 0], atol=1e-5)
    # mixed codes: truth only for the unmixed rows, and the manifest says so
    out2 = tmp_path / "m"
    write_sample_set(out2, None, 8, seed=0, batch=4, mix_max=5, landmarks="auto", device="cpu")
    m = SampleSet(out2)
    known = np.isfinite(m.params).all(1)
    assert m.manifest["ground_truth_rows"] == int(known.sum()) < 8
    assert "unmixed" in m.manifest["ground_truth_note"]


def test_report_fidelity_and_entanglement_on_a_tiny_world(tiny_world: World) -> None:
    from stylerig.worlds.prior import FACTOR_NAMES
    from stylerig.worlds.report import FACTOR_GROUPS, entanglement, fidelity

    # every factor of the five groups exists, and no factor is in two groups
    names = [n for g in FACTOR_GROUPS.values() for n in g]
    assert len(names) == len(set(names)) and set(names) <= set(FACTOR_NAMES)
    fid = fidelity(tiny_world, [1, 2, 3])
    target, gen, mask = fid["images"]
    assert target.shape == gen.shape == (3, 3, 32, 32) and len(fid["psnr_face"]) == 3
    assert fid["min_psnr_face"] <= fid["mean_psnr_face"]
    ent = entanglement(tiny_world, [1, 2, 3, 4])
    assert ent["groups"] == list(FACTOR_GROUPS) and ent["num_ws"] == tiny_world.generator.num_ws
    for g in FACTOR_GROUPS:
        assert 1.0 <= ent["participation"][g] <= 32.0  # w_dim 32 here
        assert len(ent["slot_effect"][g]) == ent["num_ws"] and min(ent["slot_effect"][g]) > 0


def test_a_build_on_another_prior_version_is_refused(tmp_path: Path, tiny_world: World) -> None:
    import json

    from stylerig.gan import save_generator

    # A build's run.json without the key predates the setting: version 1, the first world's.
    for version, ok in ((None, False), (1, False), (2, False), (3, True)):
        d = tmp_path / f"v{version}"
        d.mkdir()
        save_generator(tiny_world.generator, d / "generator.safetensors")
        args = {"batch": 16, "lr": 2e-3} | ({} if version is None else {"prior_version": version})
        (d / "run.json").write_text(json.dumps({"command": "stylerig.worlds.train", "arguments": args}))
        if ok:
            assert load_world(d / "generator.safetensors").generator.z_dim == NUM_FACTORS
        else:
            with pytest.raises(AssetError, match=f"prior version {version or 1}") as e:
                load_world(d / "generator.safetensors")
            assert "--init" in (e.value.hint or "")


def test_a_dfr_or_rig_file_is_not_taken_for_an_old_world_build(tmp_path: Path) -> None:
    import json

    from stylerig.tensorfile import save_tensors

    # A DFR's folder has a run.json with a `batch` argument, as a world build's; the file's format tag
    # says what it is before any prior version is looked at.
    for fmt, command in (("stylerig.dfr", "fit-dfr"), ("stylerig.rignet", "train-rignet")):
        d = tmp_path / command
        d.mkdir()
        save_tensors(d / "model.safetensors", {"w": torch.zeros(2)}, {"format": fmt})
        (d / "run.json").write_text(json.dumps({"command": command, "arguments": {"batch": 8}}))
        with pytest.raises(AssetError, match="not a stylerig generator") as e:
            load_world(d / "model.safetensors")
        assert "prior version" not in e.value.message and "world build" in (e.value.hint or "")


def _tiny_build_config(**kw):
    from stylerig.worlds.train import TrainConfig

    return TrainConfig(
        **{"batch": 2, "channel_base": 256, "channel_max": 8, "mapping_layers": 2, "eval_seeds": 2, **kw}
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": math.inf},
        {"lr": math.nan},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"decay_factor": math.nan},
        {"feature_weight": math.inf},
        {"edge_weight": -1.0},
        {"beta2": 1.5},
        {"batch": 0},
        {"eval_seeds": 0},
        {"prior_version": 9},
        {"critic_groups": "banana"},  # checked even without a critic
        {"critic_factor_weights": "mood=2"},  # so are the critic's factor weights
        {"pair_weight": -1.0},
        {"pair_step": 0.0},
        {"pair_weight": 1.0, "batch": 3},  # pairs need an even batch
    ],
)
def test_world_build_rejects_bad_settings_before_writing(tmp_path: Path, bad: dict) -> None:
    from stylerig.worlds.train import train_world_generator

    out = tmp_path / "w"
    with pytest.raises(InputError) as e:
        train_world_generator(out, 1, config=_tiny_build_config(**bad), log=False)
    msg = e.value.message
    assert next(iter(bad)).replace("_", "-") in msg or "critic groups" in msg or "factor weight" in msg
    assert "pair_weight" not in bad or "batch" not in bad or "even --batch" in msg
    assert not out.exists()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from stylerig_cli.app import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code or 0, " ".join((cap.out + cap.err).split())


def test_world_build_cli_rejects_inf_lr_and_critic_options_without_critic(tmp_path: Path, capsys) -> None:
    out = tmp_path / "w"
    base = ["world", "build", "--out", str(out), "--steps", "1", "--threads", "1"]
    for extra, what in (
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--critic-groups", "banana"], "--critic-groups only applies with --critic"),
        (["--critic-weight", "5"], "--critic-weight only applies with --critic"),
        (["--critic-factor-weights", "yaw=9"], "--critic-factor-weights only applies with --critic"),
        # Repeated --critic files form an ensemble; each must exist, before anything is written.
        (
            ["--critic", __file__, "--critic", str(tmp_path / "none.safetensors")],
            "none.safetensors: no such file",
        ),
        (["--critic", str(tmp_path / "a,b.safetensors")], "may not contain a comma"),
    ):
        code, text = _cli([*base, *extra], capsys)
        assert code == 2 and "Traceback" not in text and what in text, text
        assert not out.exists()


def test_world_outputs_refuse_another_commands_folder(tmp_path: Path, tiny_world: World) -> None:
    import json

    from stylerig.worlds.report import write_world_report
    from stylerig.worlds.train import train_world_generator

    other = tmp_path / "dfr"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"command": "fit-dfr", "arguments": {}}))
    before = sorted(other.iterdir())
    with pytest.raises(InputError, match="fit-dfr"):
        write_world_report(tiny_world, other, n_fidelity=1, n_estimator=1, n_entangle=1, n_mixing=1)
    with pytest.raises(InputError, match="fit-dfr"):
        train_world_generator(other, 1, config=_tiny_build_config(), log=False)
    assert sorted(other.iterdir()) == before
    assert json.loads((other / "run.json").read_text())["command"] == "fit-dfr"
