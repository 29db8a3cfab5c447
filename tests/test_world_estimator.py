"""The built-in world's fast estimator (CNN image -> world factors -> p) and its training recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from stylerig import params
from stylerig.errors import AssetError, InputError
from stylerig.face import load_face_model
from stylerig.render import FaceRenderer
from stylerig.worlds import factors_to_world, render_portrait, sample_factors
from stylerig.worlds.estimator import (
    ESTIMATOR_FILE,
    EYE_ESTIMATOR_FILE,
    EstimatorConfig,
    EstimatorNet,
    fast_estimate_factors,
    fast_estimate_params,
    load_estimator,
    load_estimators,
    save_estimator,
)
from stylerig.worlds.estimator_train import EstimatorTrainConfig, augment, train_estimator
from stylerig.worlds.prior import FACTOR_NAMES

TINY = EstimatorConfig(widths=(4, 8), reduce=4, hidden=8, input_size=32)
#: Shipped network on clean world renders: |rotation error| tolerance per angle, degrees (the shipped
#: network's median on 256 renders is well below this; a few images can be worse).
POSE_TOL_DEG = 4.0


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer(load_face_model(), 128, backend="torch")


@pytest.fixture(scope="module")
def renders(renderer: FaceRenderer) -> tuple[torch.Tensor, torch.Tensor]:
    z = sample_factors(range(2_000_200, 2_000_208))
    p, scene = factors_to_world(z)
    with torch.no_grad():
        return p, render_portrait(renderer, p, scene)[0]


def _tiny_net(seed: int = 0) -> EstimatorNet:
    torch.manual_seed(seed)
    return EstimatorNet(TINY).eval()


def test_shapes_and_p_from_factors(renders) -> None:
    _, images = renders
    net = _tiny_net()
    res = fast_estimate_factors(images[:3], estimator=net)
    assert res.factors.shape == (3, 38) and res.p.shape == (3, params.NUM_PARAMS) and res.loss.shape == (3,)
    assert res.factors.dtype == torch.float32 and torch.isnan(res.loss).all()
    assert torch.allclose(res.p, factors_to_world(res.factors)[0])
    res2 = fast_estimate_factors(images[:2], estimator=net, compute_loss=True, refine_steps=2, chunk=1)
    assert torch.isfinite(res2.loss).all() and res2.p.shape == (2, params.NUM_PARAMS)


def test_stem_stride_two_reads_full_resolution(renders) -> None:
    _, images = renders
    cfg = EstimatorConfig(input_size=128, stem_stride=2, widths=(4, 8, 8), reduce=4, hidden=8)
    torch.manual_seed(0)
    net = EstimatorNet(cfg).eval()
    assert fast_estimate_factors(images[:2], estimator=net).factors.shape == (2, 38)
    with pytest.raises(InputError):
        EstimatorConfig(stem_stride=3)


def test_deterministic_and_batch_independent(renders) -> None:
    _, images = renders
    net = _tiny_net()
    a = fast_estimate_params(images[:4], estimator=net)
    b = fast_estimate_params(images[:4], estimator=net)
    c = fast_estimate_params(images[1:2], estimator=net)
    assert torch.equal(a, b)
    assert torch.allclose(a[1:2], c, atol=1e-5)


def test_save_load_roundtrip(tmp_path: Path, renders) -> None:
    _, images = renders
    net = _tiny_net()
    path = save_estimator(net, tmp_path / "est.safetensors", {"note": "test"})
    loaded = load_estimator(path, cache=False)
    assert loaded.config == TINY and not loaded.training
    # Weights are stored as float16: outputs agree to float16 rounding.
    with torch.no_grad():
        assert torch.allclose(net(images), loaded(images), atol=2e-2)
    assert load_estimator(path) is load_estimator(path)  # cached


def test_bad_files_raise_asset_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError):
        load_estimator(tmp_path / "missing.safetensors", cache=False)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(AssetError):
        load_estimator(junk, cache=False)
    from stylerig.tensorfile import save_tensors

    wrong = tmp_path / "wrong.safetensors"
    save_tensors(wrong, {"x": torch.zeros(2)}, {"format": "something-else"})
    with pytest.raises(AssetError):
        load_estimator(wrong, cache=False)
    bad_cfg = tmp_path / "bad_cfg.safetensors"
    save_tensors(bad_cfg, {"x": torch.zeros(2)}, {"format": "stylerig-world-estimator", "config": "{"})
    with pytest.raises(AssetError):
        load_estimator(bad_cfg, cache=False)
    # Right format, tensors of another shape.
    net = _tiny_net()
    good = save_estimator(net, tmp_path / "good.safetensors")
    from stylerig.tensorfile import load_tensors

    tensors, meta = load_tensors(good, what="x", hint="y")
    meta["config"] = json.dumps({**json.loads(meta["config"]), "hidden": 9})
    mismatched = tmp_path / "mismatched.safetensors"
    save_tensors(mismatched, tensors, meta)
    with pytest.raises(AssetError):
        load_estimator(mismatched, cache=False)


def test_specialist_overrides_only_the_factors_it_answers_for(tmp_path: Path, renders) -> None:
    """An ensemble takes every factor from the general network but those a later specialist answers for."""
    _, images = renders
    general, eyes = _tiny_net(0), _tiny_net(1)
    eyes.answers_for = ("eye_close",)
    alone = fast_estimate_factors(images[:3], estimator=general).factors
    spec = fast_estimate_factors(images[:3], estimator=eyes).factors  # alone: all of its outputs
    both = fast_estimate_factors(images[:3], estimator=[general, eyes])
    k = FACTOR_NAMES.index("eye_close")
    others = [i for i in range(len(FACTOR_NAMES)) if i != k]
    assert torch.equal(both.factors[:, others], alone[:, others])
    assert torch.equal(both.factors[:, k], spec[:, k]) and not torch.equal(spec[:, k], alone[:, k])
    assert torch.allclose(both.p, factors_to_world(both.factors)[0])
    # answers_for is stored with the weights; files work in an ensemble as networks do.
    gpath = save_estimator(general, tmp_path / "general.safetensors")
    epath = save_estimator(eyes, tmp_path / "eyes.safetensors")
    assert load_estimator(epath, cache=False).answers_for == ("eye_close",)
    assert load_estimator(gpath, cache=False).answers_for == FACTOR_NAMES
    nets = load_estimators([gpath, epath], cache=False)
    assert [n.answers_for for n in nets] == [FACTOR_NAMES, ("eye_close",)]
    from_files = fast_estimate_factors(images[:3], estimator=[gpath, epath]).factors
    assert torch.allclose(from_files, both.factors, atol=5e-2)  # float16 weights in the files
    with pytest.raises(InputError, match="first estimator network"):
        fast_estimate_factors(images[:1], estimator=[eyes, general])
    with pytest.raises(InputError, match="no such world factor: eye_shut"):
        EstimatorNet(TINY, answers_for=["eye_shut"])


def test_specialist_file_with_bad_answers_for_is_an_asset_error(tmp_path: Path) -> None:
    from stylerig.tensorfile import load_tensors, save_tensors

    good = save_estimator(_tiny_net(), tmp_path / "good.safetensors")
    tensors, meta = load_tensors(good, what="x", hint="y")
    for bad in ('"eye_close"', '["eye_shut"]', "[", "[]"):
        path = tmp_path / "bad.safetensors"
        save_tensors(path, tensors, {**meta, "answers_for": bad})
        with pytest.raises(AssetError):
            load_estimator(path, cache=False)


def test_bad_inputs_raise_input_error(renders) -> None:
    _, images = renders
    net = _tiny_net()
    with pytest.raises(InputError):
        fast_estimate_factors(images[:, :, :64, :64], estimator=net)
    with pytest.raises(InputError):
        fast_estimate_factors(images[:1] * math.nan, estimator=net)
    with pytest.raises(InputError):
        fast_estimate_factors(images[:1], estimator=net, refine_steps=-1)
    with pytest.raises(InputError):
        fast_estimate_factors(images[:1], estimator=EstimatorNet(TINY).train())
    with pytest.raises(InputError):
        EstimatorConfig(input_size=48, widths=(4, 8, 8, 8, 8, 8))


def test_augment_is_seeded_and_keeps_shape() -> None:
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(1), 0.7, 0.03)
    b = augment(x, torch.Generator().manual_seed(1), 0.7, 0.03)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment(x, torch.Generator(), 0.0, 0.0), x)


def test_training_recipe_tiny_resumes_and_is_seeded(tmp_path: Path) -> None:
    cfg = EstimatorTrainConfig(
        batch=4,
        renders_per_step=2,
        buffer=4,
        input_size=32,
        widths="4,8",
        reduce=4,
        hidden=8,
        eval_every=2,
        checkpoint_every=2,
        eval_seeds=4,
        schedule_steps=4,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_estimator(tmp_path / "a", 2, config=cfg, log=False)
        net_a = train_estimator(tmp_path / "a", 3, config=cfg, log=False)  # resumed: 1 more step
        net_b = train_estimator(tmp_path / "b", 3, config=cfg, log=False)
        net_c = train_estimator(tmp_path / "c", 3, config=cfg, log=False)
    finally:
        torch.set_num_threads(threads)
    for name in ("checkpoint.safetensors", "estimator.safetensors", "log.jsonl", "run.json"):
        assert (tmp_path / "a" / name).is_file()
    # A finished part run again trains nothing: its checkpoint (RNG state and time) and log stay as they are.
    from stylerig.tensorfile import load_tensors

    def state() -> tuple:  # the checkpoint's tensors (RNG state included) and metadata (time), and the log
        tensors, meta = load_tensors(tmp_path / "a" / "checkpoint.safetensors", what="checkpoint", hint="")
        return {k: v.tolist() for k, v in tensors.items()}, meta, (tmp_path / "a" / "log.jsonl").read_text()

    before = state()
    net_again = train_estimator(tmp_path / "a", 3, config=cfg, log=False)
    assert state() == before
    assert all(torch.equal(v, net_a.state_dict()[k]) for k, v in net_again.state_dict().items())
    lines = [json.loads(s) for s in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 2 and "yaw_med_deg" in lines[0]
    sb, sc = net_b.state_dict(), net_c.state_dict()
    assert all(torch.equal(sb[k], sc[k]) for k in sb)  # same seed -> same network
    assert net_a.state_dict().keys() == sb.keys()
    loaded = load_estimator(tmp_path / "a" / "estimator.safetensors", cache=False)
    assert loaded.config == EstimatorConfig(widths=(4, 8), reduce=4, hidden=8, input_size=32, stem_stride=2)
    with pytest.raises(InputError):  # a resume must keep the network
        train_estimator(
            tmp_path / "a", 4, config=EstimatorTrainConfig(**{**cfg.__dict__, "hidden": 16}), log=False
        )


def _tiny_estimator_config(**kw) -> EstimatorTrainConfig:
    base = dict(batch=4, renders_per_step=2, buffer=4, input_size=32, widths="4,8", reduce=4, hidden=8)
    return EstimatorTrainConfig(**{**base, "eval_every": 0, "checkpoint_every": 0, "eval_seeds": 4, **kw})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_estimator_training_on_a_missing_gpu_fails_before_writing(tmp_path: Path) -> None:
    from stylerig.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        train_estimator(tmp_path / "e", 2, config=_tiny_estimator_config(device="cuda"), log=False)
    assert not (tmp_path / "e").exists()


@pytest.mark.cuda
def test_estimator_training_moves_between_devices_at_a_resume(tmp_path: Path, monkeypatch) -> None:
    """Two steps on the CPU, two on the GPU: the same run as two and two on the CPU, up to rounding.

    Compared as functions (their answers on fixed inputs), as the world generator's test does. Two GPU
    runs (2026-11-26, H100) failed the first forms of this test: four uninterrupted steps are not the
    same run (a resume re-renders the replay buffer from the resumed RNG), and the weights of a run
    resumed alike still differed (cause not measured; likely cuDNN's TF32 rounding, off here, amplified
    by Adam's normalised steps). This form has not yet run on a GPU."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    train_estimator(tmp_path / "moved", 2, config=_tiny_estimator_config(), log=False)
    moved = train_estimator(tmp_path / "moved", 4, config=_tiny_estimator_config(device="cuda"), log=False)
    train_estimator(tmp_path / "cpu", 2, config=_tiny_estimator_config(), log=False)
    cpu = train_estimator(tmp_path / "cpu", 4, config=_tiny_estimator_config(), log=False)
    assert next(moved.parameters()).device.type == "cuda"
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a, b = moved.cpu().eval()(x), cpu.eval()(x)
    assert (a - b).abs().max() <= 1e-3 * b.abs().max()


def test_recipe_records_what_a_specialist_answers_for(tmp_path: Path) -> None:
    """``--answers-for`` marks the saved network a specialist; it may be added when resuming."""
    train_estimator(tmp_path / "e", 2, config=_tiny_estimator_config(), log=False)
    assert load_estimator(tmp_path / "e" / "estimator.safetensors", cache=False).answers_for == FACTOR_NAMES
    cfg = _tiny_estimator_config(answers_for="eye_close")
    train_estimator(tmp_path / "e", 2, config=cfg, log=False)  # resumed at its last step: only re-saved
    assert load_estimator(tmp_path / "e" / "estimator.safetensors", cache=False).answers_for == ("eye_close",)
    with pytest.raises(InputError, match="no such world factor"):
        train_estimator(tmp_path / "f", 2, config=_tiny_estimator_config(answers_for="eyes"), log=False)
    assert not (tmp_path / "f").exists()


@pytest.mark.skipif(not EYE_ESTIMATOR_FILE.is_file(), reason="no shipped eye specialist")
def test_shipped_eye_specialist_reads_the_lids(renderer: FaceRenderer) -> None:
    """The general network cannot read eye_close (docs/world.md); the shipped ensemble does."""
    z = sample_factors(range(2_000_300, 2_000_340))
    p, scene = factors_to_world(z)
    with torch.no_grad():
        images = render_portrait(renderer, p, scene)[0]
    k = FACTOR_NAMES.index("eye_close")
    assert [n.answers_for for n in load_estimators()][1] == ("eye_close",)
    both = fast_estimate_factors(images).factors[:, k]
    general = fast_estimate_factors(images, estimator=ESTIMATOR_FILE).factors[:, k]
    r_both = float(torch.corrcoef(torch.stack([both, z[:, k]]))[0, 1])
    r_general = float(torch.corrcoef(torch.stack([general, z[:, k]]))[0, 1])
    print("eye_close correlation: ensemble", r_both, "general network", r_general)
    assert r_both > 0.8 and r_general < 0.5


@pytest.mark.skipif(not ESTIMATOR_FILE.is_file(), reason="no shipped estimator")
def test_shipped_estimator_is_accurate_on_renders(renders) -> None:
    p_true, images = renders
    net = load_estimator()
    n_params = sum(v.numel() for v in net.parameters())
    assert ESTIMATOR_FILE.stat().st_size <= 2_000_000 and n_params < 1_000_000
    p = fast_estimate_params(images)
    err = (params.get(p, "rotation") - params.get(p_true, "rotation")).abs() * 180.0 / math.pi
    print("pose error (deg)", err.tolist())
    assert err.median(0).values.max() < 1.5, err
    assert err.max() < POSE_TOL_DEG, err
    expr = (params.get(p, "expression") - params.get(p_true, "expression")).pow(2).mean().sqrt()
    assert expr < 0.15, expr


def test_world_estimate_methods(renders) -> None:
    from stylerig.worlds import World

    _, images = renders
    if not ESTIMATOR_FILE.is_file():
        pytest.skip("no shipped estimator")

    class _Stub:  # World.estimate needs only the resolution and the device
        resolution = 128
        device = torch.device("cpu")

    fast = World.estimate(_Stub(), images[:2])  # type: ignore[arg-type]
    assert torch.equal(fast, fast_estimate_params(images[:2]))
    fit = World.estimate(_Stub(), images[:1], method="fit", steps=2, restarts=1)  # type: ignore[arg-type]
    assert fit.shape == (1, params.NUM_PARAMS)
    with pytest.raises(InputError):
        World.estimate(_Stub(), images[:1], method="nope")  # type: ignore[arg-type]


def test_expression_param_loss_ignores_saturated_factor_errors():
    """The recipe's optional p-space term: a factor error where the image no longer changes costs ~0."""
    from stylerig.worlds.estimator_train import _expression_param_loss, _expression_scale
    from stylerig.worlds.prior import FACTOR_NAMES, NUM_FACTORS

    scale = _expression_scale(2000)
    assert int((scale != 1.0).sum()) == 6  # the world's six expressions
    z = torch.zeros(2, NUM_FACTORS)
    i = FACTOR_NAMES.index("smile")
    far, farther = z.clone(), z.clone()
    far[:, i], farther[:, i] = 4.0, 6.0  # both far in the sigmoid's flat tail: the same smile
    assert float(_expression_param_loss(far, farther, scale)) < 1e-3
    assert float(_expression_param_loss(z, far, scale)) > 0.1  # 0 -> 4: a visible smile


def test_estimator_recipe_follows_the_chosen_prior_version() -> None:
    from stylerig.worlds.estimator_train import EstimatorTrainConfig, _loss_weights, _Renders
    from stylerig.worlds.prior import FACTOR_NAMES

    v1 = EstimatorTrainConfig(eval_seeds=2, prior_version=1)
    v2 = EstimatorTrainConfig(eval_seeds=2, prior_version=2)
    v3 = EstimatorTrainConfig(eval_seeds=2)  # the shipped prior
    k, a = FACTOR_NAMES.index("light_strength"), FACTOR_NAMES.index("ambient")
    assert _loss_weights(v1)[k] > 0 and _loss_weights(v2)[k] == 0  # v2 fixes the key light's strength
    assert _loss_weights(v2)[a] > 0 and _loss_weights(v3)[a] == 0  # v3 the ambient light too
    assert not torch.equal(_Renders(v1).x_eval, _Renders(v2).x_eval)


def test_factor_weights_scale_single_factors_and_reject_bad_entries(tmp_path: Path) -> None:
    from stylerig.errors import InputError
    from stylerig.worlds.estimator_train import EstimatorTrainConfig, _loss_weights, parse_factor_weights
    from stylerig.worlds.prior import FACTOR_NAMES

    assert parse_factor_weights("") == {}
    assert parse_factor_weights(" eye_close=4, smile=0.5 ") == {"eye_close": 4.0, "smile": 0.5}
    plain, eye = (
        _loss_weights(EstimatorTrainConfig()),
        _loss_weights(EstimatorTrainConfig(factor_weights="eye_close=4")),
    )
    k, j = FACTOR_NAMES.index("eye_close"), FACTOR_NAMES.index("smile")
    # Relative weights: eye_close 4x its plain share against any other factor; the mean stays 1.
    assert torch.isclose(eye[k] / eye[j], 4 * plain[k] / plain[j])
    assert torch.isclose(eye.mean(), torch.tensor(1.0))
    for bad in ("eye_closed=2", "eye_close", "eye_close=-1", "eye_close=nan", "eye_close=x"):
        with pytest.raises(InputError, match="bad factor weight"):
            parse_factor_weights(bad)
    from stylerig.worlds.estimator_train import train_estimator

    with pytest.raises(InputError, match="bad factor weight"):
        train_estimator(tmp_path / "e", 1, config=EstimatorTrainConfig(factor_weights="mood=2"), log=False)
    assert not (tmp_path / "e").exists()  # nothing written
