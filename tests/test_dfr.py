"""stylerig.dfr (the network, save/load) and stylerig.training.dfr (fit_dfr, metrics, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _dfr_data import NUM_WS, RES, W_DIM, write_tiny_set

from stylerig import params
from stylerig.data import SampleSet
from stylerig.dfr import DFR, load_dfr, save_dfr, ws_statistics
from stylerig.errors import AssetError, InputError
from stylerig.render import FaceRenderer
from stylerig.tensorfile import save_tensors
from stylerig.training.dfr import DFRConfig, evaluate_dfr, fit_dfr, initial_params
from stylerig_cli.app import main


def tiny_config(**kw) -> DFRConfig:
    base = dict(steps=6, batch=4, lr=1e-3, warmup=0, hidden=(16, 16), landmark_steps=3, photo_rows=2)
    base.update(photo_ramp=2)  # the recipe's 100-step ramp (and lr re-warm) scaled like landmark_steps
    base.update(val_every=3, val_rows_quick=4, log_every=1, checkpoint_every=2, grid_rows=2)
    base.update(kw)
    return DFRConfig(**base)


@pytest.fixture
def tiny_set(tmp_path: Path, tiny_face) -> Path:
    return write_tiny_set(tmp_path / "set", tiny_face)


# ----------------------------------------------------------------------------------------------------
# The network.


def test_untrained_dfr_predicts_its_initial_face() -> None:
    ws = torch.randn(5, 3, 8) * 4 + 2
    mean, std = ws_statistics(ws)
    p0 = params.zeros(1)[0]
    p0[params.LAYOUT["translation"]] = torch.tensor([0.0, -0.04, -3.5])
    F = DFR(3, 8, (32, 16), w_mean=mean, w_std=std, p_init=p0)
    out = F(ws)
    assert out.shape == (5, 257)
    torch.testing.assert_close(out, p0.expand(5, -1), rtol=0, atol=0)  # exactly the mean face, frontal
    # Gradients reach the last layer at once (zero-initialised weights, not a dead network).
    out.square().sum().backward()
    assert F.fc2.weight.grad is not None and F.fc2.weight.grad.abs().sum() > 0


def test_ws_statistics_normalise_the_input() -> None:
    ws = torch.randn(200, 2, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 5.0
    mean, std = ws_statistics(ws)
    z = (ws - mean) / std
    torch.testing.assert_close(z.mean(0), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, 4), atol=1e-5, rtol=0)
    const = torch.ones(10, 1, 3)
    assert torch.isfinite(ws_statistics(const)[1]).all()


def test_dfr_rejects_bad_input() -> None:
    F = DFR(2, 8, (16,))
    with pytest.raises(InputError):
        F(torch.zeros(3, 3, 8))
    with pytest.raises(InputError):
        DFR(2, 8, ())


def test_save_load_round_trip(tmp_path: Path) -> None:
    F = DFR(2, 8, (16, 12), w_mean=torch.randn(2, 8), w_std=torch.rand(2, 8) + 0.5, p_init=torch.randn(257))
    with torch.no_grad():
        F.fc2.weight.normal_()
    path = save_dfr(F, tmp_path / "dfr.safetensors", metadata={"face_model": {"name": "x"}})
    G = load_dfr(path)
    assert G.hidden == (16, 12) and G.info == {"face_model": {"name": "x"}} and not G.training
    ws = torch.randn(4, 2, 8)
    torch.testing.assert_close(G(ws), F(ws).detach(), rtol=0, atol=0)
    assert load_dfr(tmp_path).hidden == (16, 12)  # a folder holding dfr.safetensors


def test_load_dfr_refuses_bad_files(tmp_path: Path, tiny_face) -> None:
    with pytest.raises(AssetError, match="not found"):
        load_dfr(tmp_path / "missing.safetensors")
    face = tmp_path / "face.safetensors"
    tiny_face.save(face)
    with pytest.raises(AssetError, match="not a DFR"):
        load_dfr(face)  # another stylerig model
    plain = tmp_path / "plain.safetensors"
    save_tensors(plain, {"x": torch.zeros(2)}, {})
    with pytest.raises(AssetError, match="not a DFR"):
        load_dfr(plain)
    good = save_dfr(DFR(2, 8, (16,)), tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(AssetError):
        load_dfr(cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(AssetError):
        load_dfr(garbage)


def test_initial_params_find_the_head_translation(tiny_face) -> None:
    renderer = FaceRenderer(tiny_face, 32, backend="torch")
    p = params.zeros(1)
    t_true = torch.tensor([0.05, -0.04, -1.5])
    p[:, params.LAYOUT["translation"]] = t_true
    p0 = initial_params(renderer, renderer.landmarks(p)[0].detach())
    torch.testing.assert_close(params.get(p0, "translation"), t_true, atol=1e-3, rtol=0)
    assert params.get(p0, "rotation").abs().max() == 0 and params.get(p0, "identity").abs().max() == 0


# ----------------------------------------------------------------------------------------------------
# fit_dfr.


def test_fit_dfr_writes_its_outputs_and_learns(tmp_path: Path, tiny_set: Path, tiny_face) -> None:
    out = tmp_path / "out"
    res = fit_dfr(tiny_set, out, config=tiny_config(steps=40, lr=3e-3), device="cpu", face_model=tiny_face)
    assert not res.train.interrupted and res.train.step == 40
    for name in (
        "dfr.safetensors",
        "metrics.json",
        "figure3.png",
        "checkpoint.safetensors",
        "log.jsonl",
        "run.json",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "psnr_mask_db",
        "landmark_rmse_pct",
        "rotation_median_deg_yaw",
        "rotation_median_deg_roll",
        "n",
    ):
        assert key in m
    assert m["n"] == 2  # 10 % of 24 rows held out (rounded)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 41))
    assert "photo_mse" not in train[0] and "photo_mse" in train[-1]  # the landmark-only phase first
    assert train[-1]["land_rmse_pct"] < train[0]["land_rmse_pct"]  # it learns
    F = load_dfr(out / "dfr.safetensors")
    assert F(torch.zeros(1, NUM_WS, W_DIM)).shape == (1, 257)
    import imageio.v3 as iio

    grid = iio.imread(out / "figure3.png")
    assert grid.shape[0] > 2 * 2 * RES and grid.shape[1] > 3 * 2 * RES


def test_evaluate_dfr_is_perfect_for_the_truth(tiny_set: Path, tiny_face) -> None:
    data = SampleSet(tiny_set)

    class Oracle(torch.nn.Module):  # returns the set's own parameters, row by row
        def __init__(self) -> None:
            super().__init__()
            self.table = {tuple(np.round(w, 5).ravel()): p for w, p in zip(data.ws, data.params, strict=True)}

        def forward(self, ws: torch.Tensor) -> torch.Tensor:
            return torch.stack(
                [torch.from_numpy(self.table[tuple(np.round(w, 5).ravel())].copy()) for w in ws.numpy()]
            )

    rows = np.arange(6)
    m = evaluate_dfr(Oracle(), data, rows, FaceRenderer(tiny_face, RES, backend="torch"))
    assert m["n"] == 6 and m["n_params"] == 6
    assert m["rotation_median_deg_yaw"] == 0 and m["landmark_rmse_pct"] < 1e-4
    assert m["psnr_mask_db"] > 40  # only the uint8 rounding of the stored images is left


def test_fit_dfr_needs_landmarks(tmp_path: Path, tiny_face) -> None:
    bare = write_tiny_set(tmp_path / "bare", tiny_face, landmarks=False)
    with pytest.raises(InputError, match="no landmarks"):
        fit_dfr(bare, tmp_path / "out", config=tiny_config(), device="cpu", face_model=tiny_face)


# ----------------------------------------------------------------------------------------------------
# The command line.


def run_cli(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_errors_exit_2(tmp_path: Path, tiny_face, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert run_cli("fit-dfr", "--data", str(tmp_path / "nothing"), "--out", out) == 2
    assert "sample set not found" in capsys.readouterr().err
    bare = write_tiny_set(tmp_path / "bare", tiny_face, landmarks=False)
    assert run_cli("fit-dfr", "--data", str(bare), "--out", out, "--device", "cpu") == 2
    assert "no landmarks" in capsys.readouterr().err
    good = write_tiny_set(tmp_path / "good", tiny_face)
    assert (
        run_cli("fit-dfr", "--data", str(good), "--out", out, "--face-model", str(tmp_path / "no.mat")) == 2
    )
    assert run_cli("fit-dfr", "--data", str(good), "--out", out, "--batch", "64", "--device", "cpu") == 2
    assert "larger than" in capsys.readouterr().err
    assert run_cli("fit-dfr", "--data", str(good), "--out", out, "--steps", "0") == 2  # a usage error


def test_cli_trains(tmp_path: Path, tiny_face, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_tiny_set(tmp_path / "good", tiny_face)
    face = tmp_path / "face.safetensors"
    tiny_face.save(face)
    out = tmp_path / "out"
    argv = [
        "fit-dfr",
        "--data",
        str(good),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch",
        "4",
        "--device",
        "cpu",
    ]
    assert run_cli(*argv, "--face-model", str(face), "--photo-rows", "0") == 0
    text = capsys.readouterr().out
    assert "PSNR inside the face mask" in text and "landmark RMSE" in text
    said = " ".join(text.split())  # explicit --photo-rows wins over the preset's 8
    assert (
        "preset paper (auto: not a set of the built-in world): --photo-rows 0 --light-prior-weight 0" in said
    )
    assert (out / "dfr.safetensors").is_file()
    assert json.loads((out / "run.json").read_text())["arguments"]["config"]["photo_rows"] == 0
    assert run_cli(*argv) == 2  # resume with another face model (the built-in one): refused
    assert "other settings" in capsys.readouterr().err


def test_evaluate_dfr_scores_an_invisible_face_zero(tiny_set: Path, tiny_face) -> None:
    data = SampleSet(tiny_set)
    p_far = params.zeros(1)
    p_far[0, params.LAYOUT["translation"]] = torch.tensor([0.0, 0.0, -20.0])  # behind the far plane
    F = DFR(NUM_WS, W_DIM, (8,), p_init=p_far[0])  # an untrained F predicts p_init everywhere
    m = evaluate_dfr(F, data, np.arange(4), FaceRenderer(tiny_face, RES, backend="torch"))
    assert m["n_empty_mask"] == 4 and m["psnr_mask_db"] == 0.0  # not the infinite PSNR of an empty mask


def test_the_world_face_model_is_copied_for_training() -> None:
    """The trainers move their renderer's face model to the training device in place; the world's own
    model (shared by every CPU ``load_world()`` caller, e.g. ``evaluate``) must not move with it."""
    from types import SimpleNamespace

    from stylerig.training.dfr import resolve_face_model
    from stylerig.worlds import load_world

    shared = load_world().face_model
    fm, note = resolve_face_model(SimpleNamespace(manifest={"generator": {"world": "builtin"}}), None)
    assert note == "" and fm is not shared
    assert torch.equal(fm.mean_shape, shared.mean_shape)
    fm.to(torch.float64)  # what .to(device) does to it, in place
    assert shared.mean_shape.dtype == torch.float32


@pytest.mark.cuda
def test_training_on_cuda_leaves_the_cpu_world_on_the_cpu(tmp_path) -> None:
    from types import SimpleNamespace

    from stylerig.render import FaceRenderer
    from stylerig.training.dfr import resolve_face_model
    from stylerig.worlds import load_world

    world = load_world()
    fm, _ = resolve_face_model(SimpleNamespace(manifest={"generator": {"world": "builtin"}}), None)
    FaceRenderer(fm, 64).to("cuda")
    assert world.face_model.mean_shape.device.type == "cpu"
    world.render(world.params([1]))  # the evaluate path that failed on a GPU


def test_the_photometric_term_starts_at_the_same_share_of_any_run() -> None:
    """A fixed start at step 1,200 put a 6,000-step run's onset near the peak learning rate (it diverged)."""
    import dataclasses

    assert DFRConfig().photo_start == 1200
    assert DFRConfig(steps=6000).photo_start == 3600
    assert dataclasses.replace(DFRConfig(), steps=6000).photo_start == 3600  # as the CLI and demo build it
    assert DFRConfig(steps=6000, landmark_steps=100).photo_start == 100
    assert DFRConfig(steps=6000).trainer_config().rewarm_at == 3600
    assert DFRConfig(steps=6000).task_config()["landmark_steps"] == 3600


# ----------------------------------------------------------------------------------------------------
# The light model (a statistical light prior; not in the paper).


def _light_prior(k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    from stylerig.dfr import light_model
    from stylerig.worlds.prior import light_statistics

    return light_model(*light_statistics(n=4000), k)


def test_light_model_confines_the_light_to_its_subspace(tmp_path: Path) -> None:
    mean, basis = _light_prior(4)
    assert basis.shape == (27, 4) and torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    torch.manual_seed(0)
    F = DFR(NUM_WS, W_DIM, (16,), light_dims=4)
    F.set_light_model(mean, basis)
    with torch.no_grad():  # a trained-looking last layer: every output moves
        F.fc1.weight.normal_()
        F.fc1.bias.normal_()
    ws = torch.randn(5, NUM_WS, W_DIM)
    with torch.no_grad():
        p = F(ws)
    light = params.get(p, "illumination") - mean
    assert torch.allclose(light, light @ basis @ basis.T, atol=1e-5)  # in the affine subspace
    assert float(light.norm()) > 0.1  # ... and not stuck at its mean
    free = DFR(NUM_WS, W_DIM, (16,))
    free.load_state_dict({k: v for k, v in F.state_dict().items() if not k.startswith("light_")})
    q = free(ws)
    s = params.LAYOUT["illumination"]
    assert torch.equal(
        torch.cat([p[:, : s.start], p[:, s.stop :]], 1), torch.cat([q[:, : s.start], q[:, s.stop :]], 1)
    )
    path = save_dfr(F, tmp_path / "light.safetensors")
    G = load_dfr(path)
    assert G.light_dims == 4 and torch.allclose(G(ws), p, atol=1e-6)
    assert "light_dims" not in free.config  # a paper DFR's file is unchanged
    with pytest.raises(InputError, match="orthonormal"):
        F.set_light_model(mean, basis * 2)
    with pytest.raises(InputError, match="no light model"):
        free.set_light_model(mean, basis)
    with pytest.raises(InputError, match="light_dims"):
        DFR(NUM_WS, W_DIM, (16,), light_dims=28)


def test_world_light_statistics_are_low_dimensional() -> None:
    """The world's light has three factors (azimuth, elevation, warmth): four directions hold it."""
    from stylerig.worlds.prior import light_statistics

    mean, cov = light_statistics(n=4000)
    assert mean.shape == (27,) and cov.shape == (27, 27)
    assert torch.equal(light_statistics(n=4000)[1], cov)  # deterministic
    ev = torch.linalg.eigvalsh(cov).flip(0)
    assert float(ev[:4].sum() / ev.sum()) > 0.99 and float(ev[:2].sum() / ev.sum()) < 0.99


def test_read_light_statistics(tmp_path: Path) -> None:
    from stylerig.dfr import read_light_statistics

    good = tmp_path / "light.npz"
    np.savez(good, mean=np.zeros(27), cov=np.eye(27))
    mean, cov = read_light_statistics(good)
    assert mean.shape == (27,) and cov.shape == (27, 27)
    bad = tmp_path / "bad.npz"
    for arrays in (
        {"mean": np.zeros(9), "cov": np.eye(27)},
        {"mean": np.zeros(27)},
        {"mean": np.full(27, np.nan), "cov": np.eye(27)},
    ):
        np.savez(bad, **arrays)
        with pytest.raises(AssetError, match="light prior"):
            read_light_statistics(bad)
    with pytest.raises(AssetError, match="no such file"):
        read_light_statistics(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="not an .npz"):
        read_light_statistics(tmp_path / "junk.npz")


def test_fit_dfr_uses_the_light_prior_it_is_given(tmp_path: Path, tiny_set: Path, tiny_face) -> None:
    """A fabricated set is not the world's: auto means no light model; a file or `world` sets one."""
    auto = fit_dfr(
        tiny_set, tmp_path / "auto", config=tiny_config(steps=2), device="cpu", face_model=tiny_face
    )
    assert load_dfr(tmp_path / "auto").light_dims == 0 and not any("light" in n for n in auto.notes)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(27, 27))
    np.savez(tmp_path / "prior.npz", mean=rng.normal(size=27) * 0.1, cov=a @ a.T)
    res = fit_dfr(
        tiny_set,
        tmp_path / "file",
        config=tiny_config(steps=2, light_prior=str(tmp_path / "prior.npz"), light_dims=3),
        device="cpu",
        face_model=tiny_face,
    )
    F = load_dfr(tmp_path / "file")
    assert F.light_dims == 3 and any("top 3 principal directions" in n for n in res.notes)
    from stylerig.dfr import light_model, read_light_statistics

    mean, basis = light_model(*read_light_statistics(tmp_path / "prior.npz"), 3)
    assert torch.allclose(F.light_basis, basis) and torch.allclose(F.light_mean, mean)
    run = json.loads((tmp_path / "file" / "run.json").read_text())
    assert run["arguments"]["config"]["light_dims"] == 3
    with pytest.raises(InputError, match="light_dims"):
        fit_dfr(
            tiny_set, tmp_path / "bad", config=tiny_config(light_dims=0), device="cpu", face_model=tiny_face
        )
    with pytest.raises(AssetError, match="light prior"):
        fit_dfr(
            tiny_set,
            tmp_path / "bad",
            config=tiny_config(light_prior=str(tmp_path / "x.npz")),
            device="cpu",
            face_model=tiny_face,
        )
    assert not (tmp_path / "bad").exists()
    # A resume with another light model is refused.
    with pytest.raises(InputError, match="other settings"):
        fit_dfr(
            tiny_set,
            tmp_path / "file",
            config=tiny_config(steps=4, light_prior="world"),
            device="cpu",
            face_model=tiny_face,
        )


def test_light_prior_loss_and_spread_match_brute_force() -> None:
    from stylerig.dfr import light_model, light_spread
    from stylerig.losses import light_prior_loss

    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(27, 27)))
    cov, mean = a @ a.T / 27, torch.from_numpy(rng.normal(size=27) * 0.1)
    m, basis = light_model(mean, cov, 4)
    spread = light_spread(cov, basis)
    # the spread is the sd of lights drawn from the prior, projected on each direction
    draws = torch.distributions.MultivariateNormal(mean, cov).sample((40000,))
    empirical = ((draws - mean) @ basis.double()).std(0)
    assert torch.allclose(spread.double(), empirical, rtol=0.03)
    p = params.zeros(5)
    p[:, params.LAYOUT["illumination"]] = draws[:5].float()
    brute = torch.stack(
        [
            sum(((p[i, params.LAYOUT["illumination"]] - m) @ basis[:, k] / spread[k]) ** 2 for k in range(4))
            for i in range(5)
        ]
    )
    assert torch.allclose(light_prior_loss(p, m, basis, spread), brute, rtol=1e-5)
    at_mean = params.zeros(1)
    at_mean[:, params.LAYOUT["illumination"]] = m
    assert float(light_prior_loss(at_mean, m, basis, spread)) < 1e-10
    with pytest.raises(InputError, match="no spread"):
        light_spread(torch.zeros(27, 27, dtype=torch.float64), basis)


def test_fit_dfr_light_prior_weight(tmp_path: Path, tiny_set: Path, tiny_face, capsys) -> None:
    """The weight reaches the loss (it changes the trained network), is part of a resume's settings, and
    is refused without a light model."""
    base = dict(steps=3, light_prior="world", landmark_steps=1)
    fit_dfr(tiny_set, tmp_path / "off", config=tiny_config(**base), device="cpu", face_model=tiny_face)
    res = fit_dfr(
        tiny_set,
        tmp_path / "on",
        config=tiny_config(**base, light_prior_weight=10.0),
        device="cpu",
        face_model=tiny_face,
    )
    assert any("Gaussian prior of weight 10" in n for n in res.notes)
    off, on = load_dfr(tmp_path / "off"), load_dfr(tmp_path / "on")
    assert not torch.equal(off.fc2.weight, on.fc2.weight)  # the prior's gradient reached the network
    run = json.loads((tmp_path / "on" / "run.json").read_text())
    assert run["arguments"]["config"]["light_prior_weight"] == 10.0
    with pytest.raises(InputError, match="other settings"):
        fit_dfr(
            tiny_set,
            tmp_path / "on",
            config=tiny_config(**base | {"steps": 5}),
            device="cpu",
            face_model=tiny_face,
        )
    with pytest.raises(InputError, match="needs a light model"):
        fit_dfr(
            tiny_set,
            tmp_path / "bad",
            config=tiny_config(steps=2, light_prior="none", light_prior_weight=1.0),
            device="cpu",
            face_model=tiny_face,
        )
    assert not (tmp_path / "bad").exists()
    face = tmp_path / "face.safetensors"
    tiny_face.save(face)
    argv = ["fit-dfr", "--data", str(tiny_set), "--out", str(tmp_path / "cli"), "--face-model", str(face)]
    assert run_cli(*argv, "--light-prior", "none", "--light-prior-weight", "1", "--device", "cpu") == 2
    assert "needs a light model" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_light_model_resumes_without_one(
    tmp_path: Path, tiny_set, tiny_face
) -> None:
    """Checkpoints written before ``light_model`` was stored stand for "none" (27 free coefficients)."""
    from stylerig.tensorfile import load_tensors, save_tensors

    fit_dfr(tiny_set, tmp_path / "old", config=tiny_config(steps=2), device="cpu", face_model=tiny_face)
    ckpt = tmp_path / "old" / "checkpoint.safetensors"
    tensors, meta = load_tensors(ckpt, what="checkpoint", hint="")
    config = json.loads(meta["config"])
    assert config["task"].pop("light_model") == "none"
    save_tensors(ckpt, tensors, {**meta, "config": json.dumps(config, sort_keys=True)})
    res = fit_dfr(tiny_set, tmp_path / "old", config=tiny_config(steps=3), device="cpu", face_model=tiny_face)
    assert res.train.resumed_from == 2 and res.train.step == 3
    tensors, meta = load_tensors(ckpt, what="checkpoint", hint="")
    config["task"].pop("light_model", None)
    save_tensors(ckpt, tensors, {**meta, "config": json.dumps(config, sort_keys=True)})
    with pytest.raises(InputError, match="light_model: 'none' -> 'world"):  # but not a world light model
        fit_dfr(
            tiny_set,
            tmp_path / "old",
            config=tiny_config(steps=4, light_prior="world"),
            device="cpu",
            face_model=tiny_face,
        )


def test_auto_light_prior_is_the_worlds_for_a_world_set() -> None:
    from types import SimpleNamespace

    from stylerig.training.dfr import resolve_light_model
    from stylerig.worlds.prior import PRIOR_VERSION

    world_set = SimpleNamespace(manifest={"generator": {"world": "builtin"}})
    label, model = resolve_light_model(DFRConfig(), world_set)  # type: ignore[arg-type]
    assert label == f"world:v{PRIOR_VERSION}:k4" and model is not None and model[1].shape == (27, 4)
    other = SimpleNamespace(manifest={"generator": {"path": "ffhq.pkl"}})
    assert resolve_light_model(DFRConfig(), other) == ("none", None)  # type: ignore[arg-type]
    assert resolve_light_model(DFRConfig(light_prior="none"), world_set) == ("none", None)  # type: ignore[arg-type]


def test_cli_light_prior_errors_exit_2(tmp_path: Path, tiny_face, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_tiny_set(tmp_path / "good", tiny_face)
    out = str(tmp_path / "out")
    assert (
        run_cli(
            "fit-dfr",
            "--data",
            str(good),
            "--out",
            out,
            "--light-prior",
            str(tmp_path / "no.npz"),
            "--device",
            "cpu",
        )
        == 2
    )
    assert "light prior" in capsys.readouterr().err
    assert run_cli("fit-dfr", "--data", str(good), "--out", out, "--light-dims", "0") == 2  # a usage error
    assert not Path(out).exists()


# ----------------------------------------------------------------------------------------------------
# Landmark-fit targets (DFRConfig.landmark_fit_weight).


def test_landmark_fit_term_pulls_f_towards_the_per_row_fits(
    tmp_path: Path, tiny_set: Path, tiny_face
) -> None:
    """With only the landmark-fit term (landmark weight ~0, no prior, no photometric step), F learns the
    per-row least-squares fits, and through them the true shape; without the term it learns nothing."""
    from stylerig.dfr import OUTPUT_SCALE
    from stylerig.image_fit import fit_landmarks
    from stylerig.training.dfr import predict

    data = SampleSet(tiny_set)
    train, _ = data.split(0.1, seed=0)
    # (a landmark weight of ~0 rather than 0 keeps a graph to differentiate in the run without the term)
    kw = dict(steps=200, lr=1e-2, land_weight=1e-9, prior_weights={}, landmark_steps=200, val_every=1000)
    kw.update(landmark_fit_prior=1e-6)
    on, off = (
        fit_dfr(
            tiny_set,
            tmp_path / name,
            config=tiny_config(**kw, landmark_fit_weight=weight),
            device="cpu",
            face_model=tiny_face,
        )
        for name, weight in (("on", 10.0), ("off", 0.0))
    )
    assert any("least-squares fits" in n for n in on.notes) and not any(
        "least-squares" in n for n in off.notes
    )
    log = [json.loads(line) for line in (tmp_path / "on" / "log.jsonl").read_text().splitlines()]
    fit = [r["fit_mse"] for r in log if r["kind"] == "train"]
    assert np.mean(fit[-10:]) < 0.1 * fit[0]
    renderer = FaceRenderer(tiny_face, RES, backend="torch")
    lms = torch.from_numpy(np.asarray(data.landmarks[train], dtype=np.float32))
    target = fit_landmarks(renderer, lms, prior_weight=1e-6)
    truth = torch.from_numpy(np.asarray(data.params[train], dtype=np.float32))
    groups = ("identity", "expression", "rotation", "translation")

    def err(out: Path, ref: torch.Tensor, gs: tuple[str, ...] = groups) -> float:
        p = predict(load_dfr(out / "dfr.safetensors"), data, train, torch.device("cpu"))
        return sum(
            float(((params.get(p, g) - params.get(ref, g)) / OUTPUT_SCALE[g]).square().sum(1).mean())
            for g in gs
        )

    assert err(tmp_path / "on", target) < 0.1 * err(tmp_path / "off", target)
    assert err(tmp_path / "on", truth, ("identity",)) < 0.2 * err(tmp_path / "off", truth, ("identity",))


def test_landmark_fit_prior_auto_and_checks() -> None:
    from stylerig.training.dfr import (
        LANDMARK_FIT_PRIOR_DETECTED,
        LANDMARK_FIT_PRIOR_EXACT,
        landmark_fit_prior,
    )

    class _Set:
        def __init__(self, detector: str | None) -> None:
            self.manifest = {"landmark_detector": detector}

    assert landmark_fit_prior(DFRConfig(), _Set("ground-truth:builtin")) == LANDMARK_FIT_PRIOR_EXACT  # type: ignore[arg-type]
    assert landmark_fit_prior(DFRConfig(), _Set("face-alignment")) == LANDMARK_FIT_PRIOR_DETECTED  # type: ignore[arg-type]
    assert landmark_fit_prior(DFRConfig(), _Set(None)) == LANDMARK_FIT_PRIOR_DETECTED  # type: ignore[arg-type]
    assert landmark_fit_prior(DFRConfig(landmark_fit_prior=3e-5), _Set(None)) == 3e-5  # type: ignore[arg-type]
    for bad in (
        dict(landmark_fit_weight=-1.0),
        dict(landmark_fit_weight=float("nan")),
        dict(landmark_fit_prior=0.0),
    ):
        with pytest.raises(InputError):
            DFRConfig(**bad).check()  # type: ignore[arg-type]


def test_a_confined_dfr_holds_its_unused_outputs_and_round_trips(tmp_path: Path) -> None:
    """Held outputs stay at p_init whatever the weights; the mask survives save/load; the world's
    coefficient model keeps exactly the components its faces use."""
    from stylerig import params
    from stylerig.worlds.prior import used_coefficients

    keep = used_coefficients(("expression",))
    assert int(keep[params.LAYOUT["expression"]].sum()) == 6
    assert bool(keep[params.LAYOUT["identity"]].all()) and bool(keep[params.LAYOUT["rotation"]].all())
    every = used_coefficients()
    assert [int(every[params.LAYOUT[g]].sum()) for g in ("identity", "expression", "reflectance")] == [
        7,
        6,
        6,
    ]
    with pytest.raises(InputError, match="cannot confine"):
        used_coefficients(("rotation",))

    torch.manual_seed(0)
    F = DFR(2, 8, (16,), p_init=torch.randn(257), confined=True)
    torch.nn.init.normal_(F.fc1.weight)
    F.set_confinement(keep)
    p = F(torch.randn(5, 2, 8))
    torch.testing.assert_close(p[:, ~keep], F.p_init[~keep].expand(5, -1))
    assert bool((p[:, keep] != F.p_init[keep]).all())
    save_dfr(F, tmp_path / "c.safetensors")
    G = load_dfr(tmp_path / "c.safetensors")
    assert G.confined and torch.equal(G.p_keep, keep.float())
    x = torch.randn(3, 2, 8)
    torch.testing.assert_close(G(x), F(x))
    with pytest.raises(InputError, match="not confined"):
        DFR(2, 8, (16,)).set_confinement(keep)
    with pytest.raises(InputError, match="keep"):
        F.set_confinement(keep.float())


def test_fit_dfr_confine_is_refused_off_the_world_and_for_bad_groups(
    tmp_path: Path, tiny_set: Path, tiny_face, capsys
) -> None:
    with pytest.raises(InputError, match="not sampled from the world"):
        fit_dfr(
            tiny_set,
            tmp_path / "bad",
            config=tiny_config(steps=2, confine=("expression",)),
            device="cpu",
            face_model=tiny_face,
        )
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="distinct coefficient groups"):
        tiny_config(confine=("expression", "pose")).check()
    with pytest.raises(InputError, match="distinct coefficient groups"):
        tiny_config(confine=("expression", "expression")).check()
    face = tmp_path / "face.safetensors"
    tiny_face.save(face)
    argv = ["fit-dfr", "--data", str(tiny_set), "--out", str(tmp_path / "cli"), "--face-model", str(face)]
    assert run_cli(*argv, "--confine", "expression,lips", "--device", "cpu") == 2
    assert "distinct coefficient groups" in capsys.readouterr().err
