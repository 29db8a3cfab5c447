"""The built-in world's groundwork: factor prior, portrait scene, and the resumable training recipe."""

from __future__ import annotations

import math

import pytest
import torch

from stylerig import params
from stylerig.face import load_face_model
from stylerig.face.procedural import EXPRESSION_NAMES, ONE_SIDED_EXPRESSIONS
from stylerig.gan.latents import z_from_seeds
from stylerig.render import FaceRenderer
from stylerig.worlds import NUM_FACTORS, factors_to_world, render_portrait, sample_factors
from stylerig.worlds.prior import FACTOR_NAMES, SCENE_KEYS


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer(load_face_model(), 128, backend="torch")


def _check_valid(p: torch.Tensor, scene: dict[str, torch.Tensor], batch: int) -> None:
    assert p.shape == (batch, params.NUM_PARAMS) and p.dtype == torch.float32
    assert torch.isfinite(p).all()
    rot = params.get(p, "rotation")
    assert rot[:, 0].abs().max() <= math.radians(45.0) + 1e-6
    assert rot[:, 1:].abs().max() <= math.radians(20.0) + 1e-6
    exp = params.get(p, "expression")
    for name in ONE_SIDED_EXPRESSIONS:
        assert (exp[:, EXPRESSION_NAMES.index(name)] >= 0).all(), name
    assert set(scene) == set(SCENE_KEYS)
    for v in scene.values():
        assert v.shape[0] == batch and torch.isfinite(v).all()
    assert (scene["shirt"] >= 0).all() and (scene["shirt"] <= 1).all()


def test_prior_maps_seeds_deterministically_to_valid_params() -> None:
    assert len(FACTOR_NAMES) == NUM_FACTORS == len(set(FACTOR_NAMES))
    seeds = list(range(64))
    z = sample_factors(seeds)
    assert torch.equal(z, z_from_seeds(seeds, NUM_FACTORS))
    p1, s1 = factors_to_world(z)
    p2, s2 = factors_to_world(sample_factors(seeds))
    assert torch.equal(p1, p2) and all(torch.equal(s1[k], s2[k]) for k in s1)
    _check_valid(p1, s1, 64)
    # Extreme factors still give a valid portrait (every map is squashed or one-sided).
    extreme = torch.cat([torch.full((1, NUM_FACTORS), 8.0), torch.full((1, NUM_FACTORS), -8.0)])
    _check_valid(*factors_to_world(extreme), 2)


def test_prior_matches_the_issue_statistics() -> None:
    p, _ = factors_to_world(sample_factors(range(2000)))
    yaw = params.get(p, "rotation")[:, 0].rad2deg()
    assert 0.8 < (yaw.abs() < 30).float().mean() < 0.95  # mostly within 30 deg, tails beyond
    assert (yaw.abs() > 35).any()
    roll = params.get(p, "rotation")[:, 2].rad2deg()
    assert roll.abs().median() < 4.0
    smile = params.get(p, "expression")[:, EXPRESSION_NAMES.index("smile")]
    jaw = params.get(p, "expression")[:, EXPRESSION_NAMES.index("jaw_open")]
    assert (smile > 1.0).float().mean() > 0.3 and (smile < 0.5).float().mean() > 0.3
    assert 0.1 < (jaw > 0.5).float().mean() < 0.35


def test_portrait_shapes_ranges_and_agreement_with_the_renderer(renderer: FaceRenderer) -> None:
    p, scene = factors_to_world(sample_factors(range(6)))
    image, mask, lm = render_portrait(renderer, p, scene)
    assert image.shape == (6, 3, 128, 128) and mask.shape == (6, 1, 128, 128) and lm.shape == (6, 68, 2)
    assert torch.isfinite(image).all() and image.min() >= -1 and image.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    ref = renderer(p)
    assert torch.allclose(lm, ref.landmarks)
    assert (mask <= ref.mask).all()  # the shirt only hides (the lower neck)
    # On the head itself -- every row above the chin -- the mask is exactly the renderer's.
    rows = torch.arange(128).view(1, 1, 128, 1)
    above_chin = rows < lm[:, :, 1].max(dim=1).values.view(-1, 1, 1, 1)
    assert torch.equal(mask * above_chin, ref.mask * above_chin)
    # Whole head inside the frame with a margin; a portrait, not a floating mask (the bottom is clothed).
    assert lm.min() > 10 and lm.max() < 118
    recoloured = dict(scene, shirt=1.0 - scene["shirt"])
    changed = (render_portrait(renderer, p, recoloured)[0] - image).abs().amax(dim=1)[:, -1]  # bottom row
    assert ((changed > 0.02).float().mean(dim=1) > 0.5).all()
    # Above the nose tip (clear of the collar's soft edge) the image is the bare render's face.
    above_nose = rows < lm[:, 33, 1].view(-1, 1, 1, 1)
    m = (mask * above_nose).bool().expand_as(image)
    assert torch.allclose(image[m], ref.image.clamp(-1, 1)[m], atol=1e-5)


def _tiny_train_config(**kw):
    """A tiny :class:`~stylerig.worlds.train.TrainConfig` (a few-second run) with ``kw`` changed."""
    from stylerig.worlds.train import TrainConfig

    return TrainConfig(
        **{"batch": 2, "channel_base": 256, "channel_max": 8, "mapping_layers": 2, "eval_seeds": 2, **kw}
    )


def test_training_writes_checkpoints_and_resumes_exactly(tmp_path) -> None:
    from stylerig.gan import load_generator
    from stylerig.worlds.train import train_world_generator

    cfg = _tiny_train_config(eval_every=2, checkpoint_every=2)
    parted = tmp_path / "parted"
    train_world_generator(parted, 2, config=cfg, log=False)
    assert (parted / "checkpoint.safetensors").is_file() and (parted / "log.jsonl").is_file()
    G_parted = train_world_generator(parted, 4, config=cfg, log=False)
    G_whole = train_world_generator(tmp_path / "whole", 4, config=cfg, log=False)
    a, b = G_parted.state_dict(), G_whole.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (parted / "log.jsonl").read_text().splitlines()
    assert [int(x.split('"step": ')[1].split(",")[0]) for x in lines] == [0, 2, 4]
    G = load_generator(parted / "generator.safetensors")
    assert G.z_dim == NUM_FACTORS and G.w_dim == 512 and G.num_ws == 12 and G.img_resolution == 128
    z = sample_factors([1, 2])
    assert torch.allclose(G(z), G_whole(z), atol=1e-5)


def test_pose_pairs_move_only_the_pose_and_the_pair_loss_sees_only_changes() -> None:
    from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES
    from stylerig.worlds.train import _pair_loss, pose_pairs

    z = pose_pairs(8, 0.3, torch.Generator().manual_seed(0))
    assert z.shape == (8, NUM_FACTORS)
    assert torch.equal(z, pose_pairs(8, 0.3, torch.Generator().manual_seed(0)))  # seeded
    pose = [FACTOR_NAMES.index(f) for f in FACTOR_GROUPS["pose"]]
    rest = [i for i in range(NUM_FACTORS) if i not in pose]
    diff = z[1::2] - z[0::2]
    assert torch.equal(diff[:, rest], torch.zeros(4, len(rest)))
    assert (diff[:, pose].abs() > 0).all() and 0.1 < float(diff[:, pose].std()) < 0.6
    assert float(z[0::2].std()) > 0.7  # the pairs' first rows are ordinary draws
    g = torch.Generator().manual_seed(1)
    target, mask = (
        torch.rand(8, 3, 16, 16, generator=g),
        (torch.rand(8, 1, 16, 16, generator=g) > 0.5).float(),
    )
    # An error common to both images of each pair (the generator's blur of that face) costs nothing...
    common = torch.rand(4, 3, 16, 16, generator=g).repeat_interleave(2, dim=0)
    assert float(_pair_loss(target + common, target, mask, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # ...a wrong change within a pair does, and with weight 1 + face_weight inside either face mask.
    moved = target.clone()
    moved[1] += 0.5
    loss = float(_pair_loss(moved, target, mask, 1.0))
    w = 1.0 + torch.maximum(mask[0], mask[1])
    assert loss == pytest.approx(
        float(((0.5 + 0.25) * w.expand(3, 16, 16)).sum() / (4 * 3 * 16 * 16)), rel=1e-5
    )


def test_training_with_pose_pairs_runs_and_resumes_exactly(tmp_path) -> None:
    from stylerig.worlds.train import train_world_generator

    cfg = _tiny_train_config(pair_weight=1.0, eval_every=0, checkpoint_every=2)
    train_world_generator(tmp_path / "p", 2, config=cfg, log=False)
    G_parted = train_world_generator(tmp_path / "p", 4, config=cfg, log=False)
    G_whole = train_world_generator(tmp_path / "w", 4, config=cfg, log=False)
    G_plain = train_world_generator(
        tmp_path / "x", 4, config=_tiny_train_config(checkpoint_every=2), log=False
    )
    a, b, c = G_parted.state_dict(), G_whole.state_dict(), G_plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the pairs and their loss change the training


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_training_on_a_missing_gpu_fails_before_writing(tmp_path) -> None:
    from stylerig.errors import BackendUnavailableError
    from stylerig.worlds.train import train_world_generator

    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        train_world_generator(tmp_path / "w", 2, config=_tiny_train_config(device="cuda"), log=False)
    assert not (tmp_path / "w").exists()


@pytest.mark.cuda
def test_training_moves_between_devices_at_a_resume(tmp_path) -> None:
    """Two steps on the CPU, two on the GPU: the same run as four on the CPU, up to rounding."""
    from stylerig.worlds.train import train_world_generator

    cfg = _tiny_train_config(eval_every=0, checkpoint_every=0)
    train_world_generator(tmp_path / "moved", 2, config=cfg, log=False)
    G_moved = train_world_generator(
        tmp_path / "moved",
        4,
        config=_tiny_train_config(eval_every=0, checkpoint_every=0, device="cuda"),
        log=False,
    )
    G_cpu = train_world_generator(tmp_path / "cpu", 4, config=cfg, log=False)
    assert next(G_moved.parameters()).device.type == "cuda"
    z = sample_factors([5, 6])
    with torch.no_grad():
        a, b = G_moved.cpu()(z), G_cpu(z)
    assert (a - b).abs().max() <= 1e-3 * b.abs().max()


def test_feature_map_peaks_on_the_inner_landmarks() -> None:
    from stylerig.worlds.train import feature_map

    lm = torch.full((1, 68, 2), -100.0)  # off-image
    lm[0, 30] = torch.tensor([20.5, 40.5])  # nose tip at pixel (x=20, y=40)
    lm[0, 5] = torch.tensor([60.5, 60.5])  # a jaw point: not a feature
    f = feature_map(lm, 64)
    assert f.shape == (1, 1, 64, 64)
    assert f[0, 0, 40, 20] == pytest.approx(1.0, abs=1e-6)
    assert f[0, 0, 60, 60] < 1e-6 and f[0, 0, 40, 30] < 0.01


def test_portrait_gradients_are_finite_everywhere() -> None:
    """The hair dome's rim must not back-propagate NaN (the estimator fits through the whole scene)."""
    from stylerig.face import load_face_model
    from stylerig.render import FaceRenderer
    from stylerig.worlds import factors_to_world, render_portrait, sample_factors

    z = sample_factors([3, 4]).requires_grad_(True)
    p, scene = factors_to_world(z)
    img = render_portrait(FaceRenderer(load_face_model(), 64, backend="torch"), p, scene)[0]
    img.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_world_build_learning_rate_steps():
    from stylerig.worlds.train import TrainConfig, learning_rate

    cfg = TrainConfig(lr=2e-3, decay_start=7000, decay_factor=0.25, decay2_start=12000)
    assert [learning_rate(cfg, s) for s in (0, 6999, 7000, 11999, 12000)] == pytest.approx(
        [2e-3, 2e-3, 5e-4, 5e-4, 1.25e-4]
    )
    assert learning_rate(TrainConfig(lr=1e-3), 10**6) == 1e-3  # no decay by default


def test_prior_version_2_differs_from_1_only_in_the_expressions_and_the_key_light() -> None:
    from stylerig.errors import InputError
    from stylerig.worlds.prior import PRIOR_VERSION

    assert PRIOR_VERSION == 3  # the shipped world's (version 2 + fixed ambient light, the next test)
    z = sample_factors(range(256))
    p1, s1 = factors_to_world(z, version=1)
    p2, s2 = factors_to_world(z, version=2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    changed = (p1 != p2).any(0)
    e = params.LAYOUT["expression"].start
    grown = {"smile", "eye_close", "smile_asym", "mouth_stretch"}
    for name in EXPRESSION_NAMES:
        assert bool(changed[e + EXPRESSION_NAMES.index(name)]) == (name in grown), name
    ill = params.LAYOUT["illumination"]
    assert changed[ill].any()
    others = torch.ones_like(changed)
    others[ill] = False
    for name in grown:
        others[e + EXPRESSION_NAMES.index(name)] = False
    assert not changed[others].any()
    # Every expression factor now varies its parameter by at least 0.6 (in the model's sd units) ...
    sd2 = params.get(p2, "expression").std(0)
    for name in grown:
        assert sd2[EXPRESSION_NAMES.index(name)] > 0.6, name
    # ... and the key light's strength is fixed: factor 24 changes nothing in version 2.
    k = FACTOR_NAMES.index("light_strength")
    z_moved = z.clone()
    z_moved[:, k] += 2.0
    assert torch.equal(factors_to_world(z_moved, version=2)[0], p2)
    assert not torch.equal(factors_to_world(z_moved, version=1)[0], p1)
    with pytest.raises(InputError):
        factors_to_world(z, version=4)


def test_prior_version_3_is_version_2_with_the_ambient_light_fixed() -> None:
    from stylerig.worlds.prior import inert_factors

    z = sample_factors(range(256))
    p2, s2 = factors_to_world(z, version=2)
    p3, s3 = factors_to_world(z, version=3)
    assert all(torch.equal(s2[k], s3[k]) for k in s2)
    ill = params.LAYOUT["illumination"]
    changed = (p2 != p3).any(0)
    constant_band = [ill.start + 9 * c for c in range(3)]  # SH coefficient 0 of each colour
    assert changed[constant_band].all() and int(changed.sum()) == 3
    # Brute force: the constant band is the tint times the ambient default, minus the default.
    from stylerig.render.shading import AMBIENT

    warmth = 0.08 * torch.tanh(z[:, FACTOR_NAMES.index("light_warmth")])
    tint = torch.stack([1 + warmth, torch.ones_like(warmth), 1 - warmth], -1)
    assert torch.allclose(p3[:, constant_band], (tint - 1) * AMBIENT, atol=1e-6)
    # The ambient factor (and v2's light strength) change nothing in version 3.
    for name in ("ambient", "light_strength"):
        z_moved = z.clone()
        z_moved[:, FACTOR_NAMES.index(name)] += 2.0
        assert torch.equal(factors_to_world(z_moved, version=3)[0], p3), name
    z_moved = z.clone()
    z_moved[:, FACTOR_NAMES.index("ambient")] += 2.0
    assert not torch.equal(factors_to_world(z_moved, version=2)[0], p2)
    assert inert_factors(1) == () and inert_factors(2) == ("light_strength",)
    assert inert_factors(3) == ("light_strength", "ambient")


def test_training_warm_starts_from_a_generator_and_draws_from_the_chosen_prior(tmp_path) -> None:
    from stylerig.errors import InputError
    from stylerig.gan import load_generator
    from stylerig.worlds.train import TrainConfig, _World, train_world_generator

    cfg = _tiny_train_config(eval_every=0, checkpoint_every=0, prior_version=1)
    first = tmp_path / "first"
    train_world_generator(first, 2, config=cfg, log=False)
    G1 = load_generator(first / "generator.safetensors")
    # Step 0 of a warm-started run is the first run's generator exactly.
    warm = TrainConfig(**{**cfg.__dict__, "prior_version": 2, "init": str(first / "generator.safetensors")})
    G0 = train_world_generator(tmp_path / "zero", 0, config=warm, log=False)
    z = sample_factors([1, 2])
    with torch.no_grad():
        assert torch.equal(G0(z, noise_mode="const"), G1(z, noise_mode="const"))
    # A resume takes the checkpoint's weights: it needs neither the same --init nor the file.
    (first / "generator.safetensors").rename(first / "moved.safetensors")
    resumed = TrainConfig(**{**warm.__dict__, "init": ""})
    G_resumed = train_world_generator(tmp_path / "zero", 0, config=resumed, log=False)
    with torch.no_grad():
        assert torch.equal(G_resumed(z, noise_mode="const"), G1(z, noise_mode="const"))
    (first / "moved.safetensors").rename(first / "generator.safetensors")
    # A warm start may switch the mapping's z normalisation off (the same weights, fed z as it is).
    raw = TrainConfig(**{**warm.__dict__, "normalize_z": False})
    G_raw = train_world_generator(tmp_path / "raw", 0, config=raw, log=False)
    assert G_raw.config["mapping_kwargs"]["normalize_z"] is False
    G1.mapping.normalize_z = False
    with torch.no_grad():
        assert torch.equal(G_raw(z, noise_mode="const"), G1(z, noise_mode="const"))
    G1.mapping.normalize_z = True
    # ... and the command line spells it --no-normalize-z (a bool field is a flag, not a string).
    from stylerig.worlds.train import main

    threads = torch.get_num_threads()  # main sets the process's torch threads from --threads
    main(
        ["--out", str(tmp_path / "raw-cli"), "--steps", "0", "--no-normalize-z", "--batch", "2"]
        + ["--channel-base", "256", "--channel-max", "8", "--mapping-layers", "2", "--eval-seeds", "2"]
        + ["--eval-every", "0", "--threads", "1", "--prior-version", "2"]
    )
    torch.set_num_threads(threads)
    assert load_generator(tmp_path / "raw-cli" / "generator.safetensors").mapping.normalize_z is False
    # The held-out targets come from the chosen prior.
    w1, w2 = _World(2, prior_version=1), _World(2, prior_version=2)
    assert not torch.equal(w1.eval_images, w2.eval_images)
    bad = TrainConfig(**{**warm.__dict__, "channel_max": 16})
    with pytest.raises(InputError, match="architecture"):
        train_world_generator(tmp_path / "bad", 1, config=bad, log=False)
    with pytest.raises(InputError, match="no such file"):
        train_world_generator(
            tmp_path / "missing",
            1,
            config=TrainConfig(**{**warm.__dict__, "init": str(tmp_path / "x")}),
            log=False,
        )


def test_edge_loss_charges_a_blurred_edge_more_than_l1_does() -> None:
    from stylerig.worlds.train import _loss

    target = torch.zeros(1, 3, 16, 16)
    target[..., 8:] = 1.0  # a sharp vertical edge
    blurred = target.clone()
    blurred[..., 7], blurred[..., 8] = 0.5, 0.5
    ones, zeros = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    plain = _loss(blurred, target, ones, zeros, 1.0, 0.0)
    edged = _loss(blurred, target, ones, zeros, 1.0, 0.0, edge_weight=1.0)
    assert edged > plain > 0
    # A uniform offset has no edge error: the edge term adds nothing.
    shifted = target + 0.1
    assert torch.isclose(
        _loss(shifted, target, ones, zeros, 1.0, 0.0, edge_weight=1.0),
        _loss(shifted, target, ones, zeros, 1.0, 0.0),
    )


def test_critic_loss_reads_only_its_groups_and_steers_training(tmp_path) -> None:
    from stylerig.errors import InputError
    from stylerig.gan import load_generator
    from stylerig.worlds.estimator import EstimatorConfig, EstimatorNet, save_estimator
    from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES
    from stylerig.worlds.train import TrainConfig, _Critic, train_world_generator

    torch.manual_seed(0)
    net = EstimatorNet(EstimatorConfig(input_size=32, widths=(4, 4), reduce=2, hidden=8)).eval()
    path = save_estimator(net, tmp_path / "critic.safetensors")
    critic = _Critic(str(path), "pose, expression")
    names = FACTOR_GROUPS["pose"] + FACTOR_GROUPS["expression"]
    assert critic.index.tolist() == [FACTOR_NAMES.index(n) for n in names]
    images = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    z = sample_factors([3, 4])
    loss = critic.loss(images, z)
    with torch.no_grad():  # brute force, with the file's (float16-rounded) weights
        read = critic.nets[0](images)
        expect = sum(
            (read[b, FACTOR_NAMES.index(n)] - z[b, FACTOR_NAMES.index(n)]) ** 2 for b in (0, 1) for n in names
        )
    assert torch.allclose(loss, expect / (2 * len(names)), rtol=1e-5)
    other = z.clone()
    other[:, FACTOR_NAMES.index("face_width")] += 1.0  # not a chosen factor
    assert torch.equal(critic.loss(images, other), loss)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(prm.grad is None for prm in critic.nets[0].parameters())  # the critic stays frozen
    with pytest.raises(InputError, match="unknown"):
        _Critic(str(path), "pose,mood")
    # Single factors too, without repeats; v2's inert light strength is never pulled (it cannot be shown).
    light = _Critic(str(path), "illumination,light_elevation,yaw", version=2)
    assert "ambient" not in _Critic(str(path), "illumination", version=3).factors
    expect_names = [n for n in FACTOR_GROUPS["illumination"] if n != "light_strength"] + ["yaw"]
    assert light.factors == tuple(expect_names)
    assert light.index.tolist() == [FACTOR_NAMES.index(n) for n in expect_names]
    assert "light_strength" in _Critic(str(path), "illumination", version=1).factors
    with pytest.raises(InputError, match="ignores"):
        _Critic(str(path), "light_strength", version=2)
    with pytest.raises(InputError, match="no such file"):
        _Critic(str(tmp_path / "none.safetensors"), "pose")
    # An ensemble: the mean of each network's loss; factor weights multiply those factors' squared errors.
    torch.manual_seed(1)
    net2 = EstimatorNet(EstimatorConfig(input_size=32, widths=(4, 4), reduce=2, hidden=8)).eval()
    path2 = save_estimator(net2, tmp_path / "critic2.safetensors")
    second = _Critic(str(path2), "pose, expression").loss(images, z)
    both = _Critic(f"{path}, {path2}", "pose, expression")
    assert len(both.nets) == 2
    assert torch.allclose(both.loss(images, z), (loss + second) / 2, rtol=1e-5)
    weighted = _Critic(str(path), "pose, expression", factor_weights="yaw=3")
    with torch.no_grad():
        yaw = FACTOR_NAMES.index("yaw")
        extra = sum((read[b, yaw] - z[b, yaw]) ** 2 for b in (0, 1)) * 2
    assert torch.allclose(weighted.loss(images, z), (expect + extra) / (2 * len(names)), rtol=1e-5)
    with pytest.raises(InputError, match="does not cover"):
        _Critic(str(path), "expression", factor_weights="yaw=3")
    with pytest.raises(InputError, match="named twice"):
        _Critic(f"{path},{path}", "pose")
    # A specialist only critiques what it answers for (its other outputs are not readings).
    eyes = save_estimator(
        EstimatorNet(
            EstimatorConfig(input_size=32, widths=(4, 4), reduce=2, hidden=8), ("eye_close",)
        ).eval(),
        tmp_path / "eyes.safetensors",
    )
    assert _Critic(str(eyes), "eye_close").factors == ("eye_close",)
    with pytest.raises(InputError, match="specialist that answers only for eye_close, not for jaw_open"):
        _Critic(f"{path},{eyes}", "expression")
    # Wired into training: one step with the critic moves the weights differently from one without.
    base = _tiny_train_config(eval_every=0, checkpoint_every=0)
    with_critic = TrainConfig(**{**base.__dict__, "critic": str(path), "critic_weight": 100.0})
    train_world_generator(tmp_path / "a", 1, config=base, log=False)
    train_world_generator(tmp_path / "b", 1, config=with_critic, log=False)
    Ga, Gb = (load_generator(tmp_path / d / "generator.safetensors") for d in "ab")
    assert any(
        not torch.equal(x, y) for x, y in zip(Ga.state_dict().values(), Gb.state_dict().values(), strict=True)
    )
