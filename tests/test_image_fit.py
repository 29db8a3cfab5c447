"""The image-based fit (stylerig.image_fit) and ``stylerig evaluate --generator FILE`` (issue 8).

(a) the fit recovers the pose of procedural-model renders from their true landmarks; (b) the
real-generator path end to end on a tiny case (the world's generator as a file, a fake detector);
(c) no detector -> one InputError / CLI exit 2 with an install hint.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stylerig import params
from stylerig.errors import InputError
from stylerig.image_fit import FitResult, fit_landmarks, fit_params, initial_params


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def face_model():
    from stylerig.face import load_face_model

    return load_face_model()


# ----------------------------------------------------------------------------------------------------
# (a) The fit on renders with known parameters.


def test_fit_recovers_pose_and_landmarks_of_renders(face_model):
    from stylerig.render import FaceRenderer
    from stylerig.worlds.prior import factors_to_world, sample_factors

    renderer = FaceRenderer(face_model, 64, backend="torch")
    # World-prior faces: yaw -32..39 deg, varied identity, expression, albedo and light.
    p_true = factors_to_world(sample_factors(list(range(100, 106))))[0]
    with torch.no_grad():
        out = renderer(p_true)
    lms = out.landmarks.clone()
    lms[5] = float("nan")  # no face found in the last image: not fitted
    res = fit_params(out.image, lms, face_model, renderer)
    assert isinstance(res, FitResult) and res.p.shape == (6, 257)
    assert res.ok.tolist() == [True] * 5 + [False]
    assert bool(torch.isnan(res.p[5]).all()) and bool(torch.isnan(res.landmark_rmse_px[5]))
    err = (params.get(res.p[:5], "rotation") - params.get(p_true[:5], "rotation")).abs().rad2deg()
    assert float(err.max()) < 3.0, err
    assert float(res.landmark_rmse_px[:5].max()) < 1.0
    assert float(res.photo_psnr[:5].min()) > 25.0
    # Deterministic: the same call gives the same numbers.
    again = fit_params(out.image[:2], lms[:2], face_model, renderer, steps=2, land_steps=4)
    torch.testing.assert_close(
        again.p, fit_params(out.image[:2], lms[:2], face_model, renderer, steps=2, land_steps=4).p
    )


def test_light_model_confines_the_fitted_light_and_reads_it_better(face_model):
    """With the world's light model the fit's light lies in its affine subspace, at every stage count,
    and lands closer to the truth than 27 free coefficients (which trade the constant light against the
    reflectance)."""
    from stylerig.dfr import light_model
    from stylerig.render import FaceRenderer
    from stylerig.worlds.prior import factors_to_world, light_statistics, sample_factors

    renderer = FaceRenderer(face_model, 64, backend="torch")
    p_true = factors_to_world(sample_factors(list(range(200, 204))))[0]
    with torch.no_grad():
        out = renderer(p_true)
    model = light_model(*light_statistics(), 4)
    mean, basis = model
    s = params.LAYOUT["illumination"]
    for steps in (0, 30):
        p = fit_params(
            out.image,
            out.landmarks,
            face_model,
            renderer,
            steps=steps,
            land_steps=20,
            restarts=1,
            light_model=model,
        ).p
        off = p[:, s] - mean
        assert float((off - (off @ basis) @ basis.T).abs().max()) < 1e-5, steps
    free = fit_params(out.image, out.landmarks, face_model, renderer, steps=30, land_steps=20, restarts=1).p
    err = lambda q: float((q[:, s] - p_true[:, s]).pow(2).mean().sqrt())  # noqa: E731
    assert err(p) < err(free), (err(p), err(free))
    with pytest.raises(InputError, match="light_model"):
        fit_params(
            out.image,
            out.landmarks,
            face_model,
            renderer,
            steps=1,
            land_steps=1,
            light_model=(mean[:5], basis),
        )


def test_landmark_fit_recovers_shape_expression_and_pose_from_exact_landmarks(face_model):
    from stylerig.render import FaceRenderer
    from stylerig.worlds.prior import factors_to_world, sample_factors

    renderer = FaceRenderer(face_model, 128, backend="torch")
    p_true = factors_to_world(sample_factors(list(range(200, 216))))[0]  # yaw up to ~40 deg
    with torch.no_grad():
        lms = renderer.landmarks(p_true)
    lms[3] = float("nan")  # a row without landmarks is not fitted
    p = fit_landmarks(renderer, lms, prior_weight=1e-6)
    assert p.shape == (16, 257) and p.dtype == torch.float32
    assert bool(torch.isnan(p[3]).all()) and bool(torch.isfinite(p[torch.arange(16) != 3]).all())
    keep = torch.arange(16) != 3
    rot = (params.get(p[keep], "rotation") - params.get(p_true[keep], "rotation")).abs().rad2deg()
    assert float(rot.max()) < 1.0, rot
    # The landmarks are matched to a small fraction of a pixel ...
    rmse = (renderer.landmarks(p[keep]) - lms[keep]).square().sum(-1).mean(-1).sqrt()
    assert float(rmse.max()) < 0.05, rmse
    # ... and the expression the faces show is recovered (the Adam landmark stage of fit_params, with
    # its 1e-3 prior, shrinks it; a Gauss-Newton step does not).
    e_fit, e_true = params.get(p[keep], "expression"), params.get(p_true[keep], "expression")
    used = e_true.abs().amax(0) > 1e-6
    err = (e_fit - e_true)[:, used].square().mean().sqrt() / e_true[:, used].square().mean().sqrt()
    assert float(err) < 0.3, err  # 0.19 here; the Adam stage of fit_params: 0.60
    assert bool((params.get(p, "reflectance")[keep] == 0).all())
    # Deterministic, and chunking does not change the answer.
    torch.testing.assert_close(
        fit_landmarks(renderer, lms[:6], prior_weight=1e-6, chunk=4), p[:6], equal_nan=True
    )
    for bad in (0.0, float("nan")):
        with pytest.raises(InputError):
            fit_landmarks(renderer, lms, prior_weight=bad)
    with pytest.raises(InputError):
        fit_landmarks(renderer, lms[:, :10])


def test_initial_params_put_the_mean_face_on_the_landmarks(face_model):
    from stylerig.render import FaceRenderer

    renderer = FaceRenderer(face_model, 128, backend="torch")
    p = params.concat(translation=torch.tensor([[0.3, -0.2, -2.0], [-0.1, 0.1, 1.0]]))
    with torch.no_grad():
        target = renderer.landmarks(p)
    p0 = initial_params(renderer, target)
    assert p0.shape == (2, 257) and bool((params.get(p0, "rotation") == 0).all())
    got = renderer.landmarks(p0)
    # the centre within 1 px, the spread within 2 % (closed form under the pinhole camera)
    assert float((got.mean(1) - target.mean(1)).norm(dim=-1).max()) < 1.0
    spread = lambda x: (x - x.mean(1, keepdim=True)).square().sum(-1).mean(-1).sqrt()  # noqa: E731
    torch.testing.assert_close(spread(got), spread(target), rtol=0.02, atol=0.0)


def test_fit_rejects_bad_inputs(face_model):
    import copy

    from stylerig.render import FaceRenderer

    renderer = FaceRenderer(face_model, 32, backend="torch")
    img, lm = torch.zeros(2, 3, 32, 32), torch.zeros(2, 68, 2)
    with pytest.raises(InputError):
        fit_params(img, torch.zeros(3, 68, 2), face_model, renderer)  # batch mismatch
    with pytest.raises(InputError):
        fit_params(torch.zeros(2, 3, 64, 64), lm, face_model, renderer)  # not the renderer's size
    with pytest.raises(InputError):
        fit_params(img, lm, face_model, renderer, restarts=0)
    other = copy.deepcopy(face_model)
    with pytest.raises(InputError, match="another face model"):
        fit_params(img, lm, other, renderer)
    res = fit_params(img, torch.full((2, 68, 2), float("nan")), face_model, renderer)
    assert not bool(res.ok.any()) and bool(torch.isnan(res.p).all())


def test_identity_embedder_is_none_without_the_model(monkeypatch):
    import stylerig.image_fit as image_fit
    from stylerig.evaluate import IDENTITY_MISSING, _resolve_embedder

    monkeypatch.setattr(image_fit, "recognition_model_path", lambda: None)
    assert image_fit.identity_embedder() is None
    emb, label = _resolve_embedder("auto")
    assert emb is None and label == IDENTITY_MISSING and "pip install 'stylerig[dlib]'" in label
    assert _resolve_embedder(None) == (None, "off")


def test_dlib_identity_embedder_when_installed():
    from stylerig.image_fit import identity_embedder
    from stylerig.viz import to_uint8
    from stylerig.worlds import load_world

    emb = identity_embedder()
    if emb is None:
        pytest.skip("dlib or its face-recognition model is not installed")
    world = load_world()
    images = to_uint8(world.images([0, 1]))
    lms = world.landmarks([0, 1]).numpy()
    lms[1] = np.nan
    d = emb(np.concatenate([images, images[:1]]), np.concatenate([lms, lms[:1]]))
    assert d.shape == (3, 128) and d.dtype == np.float32
    assert np.isnan(d[1]).all()
    np.testing.assert_allclose(np.linalg.norm(d[[0, 2]], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(d[0], d[2], atol=1e-6)  # same image, same landmarks: same descriptor


# ----------------------------------------------------------------------------------------------------
# (b) + (c) evaluate on a generator file.


class FixedDetector:
    """A stand-in detector: the same landmarks (the set's mean) in every image, always found."""

    name = "fixed"

    def __init__(self, landmarks: np.ndarray) -> None:
        self.landmarks = np.asarray(landmarks, dtype=np.float32)
        self.calls = 0

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        n = len(images)
        return np.repeat(self.landmarks[None], n, 0), np.ones(n, dtype=bool)


def _mean_colour_embedder(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A stand-in identity embedder: unit vectors of the images' coarse colour layout."""
    x = images.reshape(len(images), 8, -1, 3).astype(np.float32).mean(2).reshape(len(images), -1)
    x = np.pad(x - 127.5, ((0, 0), (0, 128 - x.shape[1])))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


_mean_colour_embedder.name = "mean-colour"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 12-sample world set, the world's generator as a file, an untrained DFR and `all` rig on disk."""
    from stylerig.data import SampleSet
    from stylerig.dfr import DFR, save_dfr
    from stylerig.rignet import RigNet, save_rignet
    from stylerig.sampling import write_sample_set
    from stylerig.worlds.world import GENERATOR_FILE

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("image_fit_eval")
    write_sample_set(root / "set", None, 12, landmarks="world", device="cpu")
    data = SampleSet(root / "set")
    gen = shutil.copy(GENERATOR_FILE, root / "G.safetensors")  # a generator file, not "builtin"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        F = DFR(data.num_ws, data.w_dim, (16,))
        rig = RigNet(data.num_ws, data.w_dim, "all", latent=4, init_scale=0.02)
    rig.set_statistics(torch.from_numpy(np.array(data.params)))
    dfr_path = save_dfr(F, root / "dfr.safetensors")
    rig_path = save_rignet(
        rig, root / "rig.safetensors", {"dfr": str(dfr_path), "sample_set": str(data.root)}
    )
    torch.set_num_threads(before)
    return {"root": root, "data": data, "gen": gen, "dfr": dfr_path, "rig": rig_path}


def test_evaluate_on_a_generator_file_end_to_end(tiny, tmp_path):
    from stylerig.evaluate import ISSUE_KEYS, evaluate

    data = tiny["data"]
    det = FixedDetector(np.nanmean(np.asarray(data.landmarks), axis=0))
    res = evaluate(
        [tiny["rig"]],
        tiny["dfr"],
        data,
        tiny["gen"],
        n_pairs=2,
        out_dir=tmp_path,
        val_fraction=0.5,
        detector=det,
        embedder=_mean_colour_embedder,
        fit={"steps": 2, "land_steps": 6, "restarts": 1},
    )
    assert det.calls > 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m == json.loads(json.dumps(res.metrics))
    assert m["estimator"].startswith("image-fit") and m["estimator"] == "image-fit:fixed"
    info = m["estimator_info"]
    assert info["identity"] == "mean-colour" and info["detector"] == "fixed" and info["description"]
    assert info["fit"]["steps"] == 2 and info["fit"]["restarts"] == 1
    assert info["light_model"].startswith("none")  # this DFR has no light model: the fit's light is free
    for a in ("yaw", "pitch", "roll"):
        assert isinstance(m["pose"]["median_abs_err_deg"][a], float)
    for key in (
        *ISSUE_KEYS,
        "pose.identity_similarity",
        "expression.identity_similarity",
        "illumination.identity_similarity",
    ):
        section, name = key.split(".")
        assert isinstance(m[section][name], float), key
    assert -1.0 <= m["pose"]["identity_similarity"] <= 1.0
    assert isinstance(m["joint"]["identity_similarity"], float)
    assert m["pose"]["n"] == 2 and m["pose"]["no_face"] == 0
    assert sum(b["n"] for b in m["pose"]["by_requested_change"]["yaw"]) == 2
    assert m["expression"]["landmark_rmse_px"]["after"] >= 0
    assert "floor" not in m and "oracle" not in m["pose"]
    fq = m["fit_quality"]
    assert fq["no_face"] == 0 and fq["n_images"] >= 2 and fq["landmark_rmse_px_median"] >= 0
    assert "notes" not in m  # the file is the set's own generator (same sha256)
    assert m["targets"] and all(isinstance(t["met"], bool) for t in m["targets"].values())
    md = (tmp_path / "metrics.md").read_text()
    assert "image-fit:fixed" in md and "No ground truth" in md and "identity_similarity" in md
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["assets"]["generator"]["sha256"]


def test_evaluate_on_a_generator_file_fits_the_light_in_the_dfrs_light_model(tiny, tmp_path, monkeypatch):
    import stylerig.image_fit as image_fit
    from stylerig.dfr import DFR, light_model, save_dfr
    from stylerig.evaluate import evaluate
    from stylerig.worlds.prior import light_statistics

    data = tiny["data"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        F = DFR(data.num_ws, data.w_dim, (16,), light_dims=4)
    F.set_light_model(*light_model(*light_statistics(), 4))
    seen = []
    real = image_fit.fit_params
    monkeypatch.setattr(
        image_fit, "fit_params", lambda *a, **kw: seen.append(kw.get("light_model")) or real(*a, **kw)
    )
    det = FixedDetector(np.nanmean(np.asarray(data.landmarks), axis=0))
    fit = {"steps": 1, "land_steps": 2, "restarts": 1}
    evaluate(
        [tiny["rig"]],
        save_dfr(F, tmp_path / "dfr.safetensors"),
        data,
        tiny["gen"],
        n_pairs=2,
        out_dir=tmp_path / "e",
        val_fraction=0.5,
        detector=det,
        embedder=None,
        fit=fit,
    )
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["estimator_info"]["light_model"].startswith("the DFR's light model (4")
    assert seen and all(lm is not None and torch.equal(lm[1], F.light_basis) for lm in seen)


def test_evaluate_on_a_generator_file_without_dlib_says_so(tiny, tmp_path, monkeypatch):
    import stylerig.image_fit as image_fit
    from stylerig.evaluate import IDENTITY_MISSING, evaluate

    monkeypatch.setattr(image_fit, "recognition_model_path", lambda: None)
    data = tiny["data"]
    det = FixedDetector(np.nanmean(np.asarray(data.landmarks), axis=0))
    m = evaluate(
        [tiny["rig"]],
        tiny["dfr"],
        data,
        tiny["gen"],
        n_pairs=1,
        out_dir=tmp_path,
        val_fraction=0.5,
        detector=det,
        fit={"steps": 0, "land_steps": 2, "restarts": 1},
    ).metrics
    assert m["estimator_info"]["identity"] == IDENTITY_MISSING
    assert m["pose"]["identity_similarity"] is None


def _no_detectors(monkeypatch):
    from stylerig.landmarks import Availability, dlib_shape, fan

    monkeypatch.setattr(
        fan,
        "face_alignment_status",
        lambda: Availability("face-alignment", False, "not installed", "pip install 'stylerig[landmarks]'"),
    )
    monkeypatch.setattr(
        dlib_shape,
        "dlib_status",
        lambda: Availability("dlib", False, "not installed", "pip install 'stylerig[dlib]'"),
    )


def test_no_detector_is_one_input_error_with_a_hint(tiny, tmp_path, monkeypatch, capsys):
    from stylerig.evaluate import evaluate
    from stylerig_cli.app import main

    _no_detectors(monkeypatch)
    with pytest.raises(InputError, match="landmark detector") as ex:
        evaluate([tiny["rig"]], tiny["dfr"], tiny["data"], tiny["gen"], out_dir=tmp_path)
    assert "pip install 'stylerig[landmarks]'" in ex.value.hint and "stylerig doctor" in ex.value.hint
    argv = ["evaluate", "--rig", str(tiny["rig"]), "--data", str(tiny["data"].root)]
    argv += ["--generator", str(tiny["gen"]), "--out", str(tmp_path), "--threads", "1"]
    with pytest.raises(SystemExit) as ex2:
        main(argv)
    err = capsys.readouterr().err
    assert ex2.value.code == 2 and "landmark detector" in err and "hint:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "metrics.json").exists()


def test_generator_path_errors(tiny, tmp_path):
    from stylerig.errors import AssetError
    from stylerig.evaluate import evaluate

    det = FixedDetector(np.zeros((68, 2)))
    with pytest.raises(AssetError, match="not found"):
        evaluate([tiny["rig"]], tiny["dfr"], tiny["data"], tmp_path / "nope.pkl", out_dir=tmp_path)
    with pytest.raises(InputError, match="built-in world's estimators"):
        evaluate(
            [tiny["rig"]],
            tiny["dfr"],
            tiny["data"],
            tiny["gen"],
            out_dir=tmp_path,
            method="fast",
            detector=det,
        )
    with pytest.raises(InputError, match="unknown fit settings"):
        evaluate(
            [tiny["rig"]],
            tiny["dfr"],
            tiny["data"],
            tiny["gen"],
            out_dir=tmp_path,
            detector=det,
            fit={"stepz": 1},
        )
