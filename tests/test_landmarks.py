"""Landmark detectors (stylerig.landmarks) and their wiring into `stylerig sample` and `stylerig doctor`."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import stylerig.landmarks as lm
from stylerig.data import LandmarkDetector, SampleSet
from stylerig.errors import AssetError, BackendUnavailableError, InputError
from stylerig.gan import save_generator
from stylerig.gan.testing import tiny_generator
from stylerig.landmarks import dlib_shape, fan
from stylerig.sampling import write_sample_set
from stylerig_cli.app import main


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "tiny16.safetensors"
    save_generator(tiny_generator(3, 16, z_dim=16, w_dim=16, channel_base=128, channel_max=16), path)
    return path


class EveryThird:
    """A fake detector: finds a face in images 0, 3, 6, ... of each call; the points encode the image."""

    name = "fake"

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        imgs = lm.check_images(images)
        n = len(imgs)
        lms = np.broadcast_to(imgs.reshape(n, -1)[:, :1, None].astype(np.float32), (n, 68, 2))
        return lm.check_detections(lms, np.arange(n) % 3 == 0, n, self.name)


@pytest.fixture
def no_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither face-alignment nor dlib available, whatever this machine has."""
    monkeypatch.setattr(fan, "_installed_version", lambda: None)
    monkeypatch.setattr(dlib_shape, "_has", lambda module: False)


@pytest.fixture
def fan_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """face-alignment 1.5.0 'installed', its weight folder an empty tmp folder (returned)."""
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setattr(fan, "_installed_version", lambda: "1.5.0")
    monkeypatch.setattr(fan, "face_alignment_weights_dir", lambda: folder)
    return folder


@pytest.fixture
def downloads_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download fails the test loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args}")

    import urllib.request

    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ----------------------------------------------------------------------------------------------------
# The protocol.


def test_protocol_and_contract_checks() -> None:
    det = EveryThird()
    assert isinstance(det, LandmarkDetector) and isinstance(lm.LandmarkDetector, type)
    images = np.arange(5 * 8 * 8 * 3, dtype=np.int64).reshape(5, 8, 8, 3).astype(np.uint8)
    lms, found = det(images)
    assert lms.dtype == np.float32 and lms.shape == (5, 68, 2) and found.dtype == bool
    assert found.tolist() == [True, False, False, True, False]
    assert np.isnan(lms[~found]).all() and np.isfinite(lms[found]).all()
    for bad in (images.astype(np.float32), images[..., :2], images[:, :4], images[0]):
        with pytest.raises(InputError):
            lm.check_images(bad)
    with pytest.raises(InputError, match="expected"):
        lm.check_detections(np.zeros((2, 5, 2)), [True, True], 2, "x")
    with pytest.raises(InputError, match="non-finite"):
        lm.check_detections(np.full((1, 68, 2), np.nan), [True], 1, "x")
    with pytest.raises(InputError):
        lm.load_detector("nope")


def test_importing_the_package_imports_no_detector() -> None:
    code = (
        "import sys, stylerig.landmarks as lm, stylerig.sampling, stylerig.doctor\n"
        "lm.best_detector(); lm.face_alignment_weights_dir(); lm.dlib_predictor_path()\n"
        "print(sorted(m for m in ('face_alignment', 'dlib', 'face_recognition_models', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------------
# Sampling: auto, dropped rows, errors.


def test_sample_drops_and_counts_rows_without_a_face(tmp_path: Path, gen_path: Path) -> None:
    res = write_sample_set(tmp_path / "s", gen_path, 8, batch=4, device="cpu", landmarks=EveryThird())
    s = SampleSet(tmp_path / "s")
    # chunks of 4: rows 0 and 3 of each are kept -> seeds 0, 3, 4, 7
    assert res.n == len(s) == 4 and s.manifest["dropped"] == {"no_landmarks": 4}
    assert s.seeds.tolist() == [0, 3, 4, 7] and s.manifest["n_requested"] == 8
    assert s.landmarks is not None and np.isfinite(s.landmarks).all()
    assert s.landmarks[:, 0, 0].tolist() == s.images.reshape(4, -1)[:, 0].astype(np.float32).tolist()
    assert s.manifest["landmark_detector"] == "fake"


def test_sample_auto_without_detectors_writes_none_with_a_note(
    tmp_path: Path, gen_path: Path, no_detectors: None
) -> None:
    res = write_sample_set(tmp_path / "a", gen_path, 2, batch=2, device="cpu", landmarks="auto")
    assert res.manifest["landmark_detector"] == "none" and "landmarks" not in res.manifest["arrays"]
    note = " ".join(res.notes)
    assert "no landmark detector" in note and "stylerig[landmarks]" in note and "stylerig[dlib]" in note
    for name in ("face-alignment", "dlib"):
        with pytest.raises(BackendUnavailableError, match="not installed"):
            write_sample_set(tmp_path / name, gen_path, 2, device="cpu", landmarks=name)
    with pytest.raises(BackendUnavailableError, match="ground truth"):
        write_sample_set(tmp_path / "w", gen_path, 2, device="cpu", landmarks="world")
    with pytest.raises(InputError, match="seeds"):
        write_sample_set(tmp_path / "wl", gen_path, 2, device="cpu", landmarks=lm.WorldLandmarks(object()))


def test_cli_auto_is_the_default_and_uses_the_best_detector(
    tmp_path: Path, gen_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = []
    monkeypatch.setattr(lm, "best_detector", lambda: ("dlib", []))
    monkeypatch.setattr(lm, "load_detector", lambda name, device="cpu": chosen.append(name) or EveryThird())
    out = tmp_path / "cli"
    argv = ["sample", "--out", str(out), "--n", "6", "--batch", "3", "--device", "cpu", "-g", str(gen_path)]
    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    assert (ex.value.code or 0) == 0, cap.err
    assert chosen == ["dlib"] and "4 dropped (no face found)" in " ".join(cap.out.split())
    s = SampleSet(out)
    assert len(s) == 2 and s.manifest["dropped"] == {"no_landmarks": 4}


# ----------------------------------------------------------------------------------------------------
# face-alignment: weights looked up, never downloaded.


def test_face_alignment_missing_weights_name_files_and_folder(
    fan_installed: Path, downloads_fail: None
) -> None:
    with pytest.raises(AssetError) as ex:
        lm.FaceAlignmentDetector()
    text = str(ex.value)
    assert all(f in text for f in lm.FAN_FILES) and str(fan_installed) in text
    (fan_installed / "s3fd-619a316812.pth").write_bytes(b"")
    with pytest.raises(AssetError) as ex:
        lm.load_detector("face-alignment")
    assert "2DFAN4-11f355bf06.pth.tar" in str(ex.value) and "s3fd" not in ex.value.message
    status = lm.face_alignment_status()
    assert not status.ok and status.missing_files == ("2DFAN4-11f355bf06.pth.tar",)
    assert str(fan_installed) in status.fix


def test_face_alignment_old_version_and_default_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(fan, "_installed_version", lambda: "1.4.1")
    with pytest.raises(BackendUnavailableError, match="1.4.1"):
        lm.FaceAlignmentDetector()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert lm.face_alignment_weights_dir() == tmp_path / "th" / "hub" / "checkpoints"


def _stub_face_alignment(calls: dict[str, object]) -> types.ModuleType:
    """A stand-in for the face_alignment package with the 1.5 API surface the adapter uses."""
    pkg = types.ModuleType("face_alignment")
    api = types.ModuleType("face_alignment.api")

    def load_file_from_url(url: str, *a: object, **k: object) -> str:
        raise AssertionError("the package's own (downloading) resolver was called")

    api.load_file_from_url = load_file_from_url

    class FaceAlignment:
        def __init__(
            self, landmarks_type, *, device, flip_input, face_detector, face_detector_kwargs, compile=True
        ):
            calls.update(
                type=landmarks_type, device=device, compile=compile, detector_kwargs=face_detector_kwargs
            )
            calls["fan_file"] = api.load_file_from_url("https://example.invalid/x/2DFAN4-11f355bf06.pth.tar")

        def get_landmarks_from_image(self, image, return_bboxes=False):
            if image.max() == 0:
                return None, None, None
            small = np.zeros((68, 2), np.float32) + 1
            big = np.zeros((68, 2), np.float32) + 7
            return [small, big], None, [np.array([0, 0, 2, 2, 0.9]), np.array([0, 0, 5, 5, 0.8])]

    pkg.FaceAlignment = FaceAlignment
    pkg.LandmarksType = types.SimpleNamespace(TWO_D=1)
    pkg.api = api
    return pkg


def test_face_alignment_adapter_passes_compile_false_and_local_files(
    fan_installed: Path, downloads_fail: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for f in lm.FAN_FILES:
        (fan_installed / f).write_bytes(b"")
    calls: dict[str, object] = {}
    pkg = _stub_face_alignment(calls)
    monkeypatch.setitem(sys.modules, "face_alignment", pkg)
    monkeypatch.setitem(sys.modules, "face_alignment.api", pkg.api)
    det = lm.load_detector("face-alignment")
    assert calls["compile"] is False and calls["type"] == 1 and calls["device"] == "cpu"
    assert calls["detector_kwargs"] == {"path_to_detector": str(fan_installed / "s3fd-619a316812.pth")}
    assert calls["fan_file"] == str(fan_installed / "2DFAN4-11f355bf06.pth.tar")
    assert pkg.api.load_file_from_url.__name__ == "load_file_from_url"  # restored after construction
    images = np.zeros((3, 8, 8, 3), np.uint8)
    images[0] = images[2] = 9
    lms, found = det(images)
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(lms[0], np.full((68, 2), 7.5, np.float32))  # the largest box, +0.5
    assert np.isnan(lms[1]).all()


# ----------------------------------------------------------------------------------------------------
# dlib.


def test_dlib_missing_predictor_and_bad_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dlib_shape, "_has", lambda module: True)
    monkeypatch.setattr(dlib_shape, "dlib_predictor_path", lambda: None)
    with pytest.raises(AssetError) as ex:
        lm.DlibDetector()
    assert lm.PREDICTOR_FILE in ex.value.message and "face-recognition-models" in (ex.value.hint or "")
    with pytest.raises(AssetError, match="not found"):
        lm.DlibDetector(tmp_path / "nothing.dat")
    with pytest.raises(InputError):
        lm.DlibDetector(upsample=9)


def test_dlib_predictor_is_located_without_importing_its_package() -> None:
    path = lm.dlib_predictor_path()
    if path is None:
        pytest.skip("face-recognition-models is not installed")
    assert path.name == lm.PREDICTOR_FILE and path.is_file() and "face_recognition_models" not in sys.modules


def test_dlib_on_the_astronaut() -> None:
    pytest.importorskip("dlib")
    skimage_data = pytest.importorskip("skimage.data")
    if not lm.dlib_status().ok:
        pytest.skip(lm.dlib_status().detail)
    image = skimage_data.astronaut()  # 512x512 RGB, NASA portrait of Eileen Collins (public domain)
    det = lm.DlibDetector()
    lms, found = det(np.stack([image, np.zeros_like(image)]))
    assert found.tolist() == [True, False] and np.isnan(lms[1]).all()
    pts = lms[0]
    # Boxes checked by eye once on an overlay: both eyes at x 185-265, y 88-115; the subject's right eye
    # (points 36-41) left of her left eye (42-47); nose between them; mouth below; jaw around it all.
    eyes = pts[36:48]
    assert (eyes[:, 0] > 185).all() and (eyes[:, 0] < 265).all()
    assert (eyes[:, 1] > 88).all() and (eyes[:, 1] < 115).all()
    assert pts[36:42, 0].max() < pts[42:48, 0].min()
    assert pts[36:42, 0].mean() < pts[30, 0] < pts[42:48, 0].mean() and pts[30, 1] > eyes[:, 1].max()
    assert (pts[48:68, 1] > 130).all() and (pts[48:68, 1] < 165).all()
    assert pts[:17, 0].min() > 170 and pts[:17, 0].max() < 285 and 165 < pts[8, 1] < 190  # chin
    assert lm.best_detector()[0] in ("dlib", "face-alignment")


# ----------------------------------------------------------------------------------------------------
# The world's exact landmarks, and doctor.


def test_world_landmarks_scale_to_the_requested_resolution() -> None:
    class FakeWorld:
        resolution = 128

        def landmarks(self, seeds: list[int]) -> torch.Tensor:
            out = torch.arange(68 * 2, dtype=torch.float32).reshape(1, 68, 2).repeat(len(seeds), 1, 1)
            out[[i for i, s in enumerate(seeds) if s < 0]] = torch.nan  # a row the world cannot describe
            return out + torch.tensor(seeds, dtype=torch.float32)[:, None, None]

    adapter = lm.WorldLandmarks(FakeWorld())
    lms, found = adapter([3, -1], resolution=64)
    assert lms.shape == (2, 68, 2) and lms.dtype == np.float32 and found.tolist() == [True, False]
    np.testing.assert_allclose(lms[0], (np.arange(136).reshape(68, 2) + 3) / 2)
    same, _ = adapter([3])
    np.testing.assert_allclose(same[0], np.arange(136).reshape(68, 2) + 3)
    with pytest.raises(InputError):
        adapter([])


def test_doctor_reports_the_adapters_lookups(fan_installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stylerig.doctor import run_checks

    monkeypatch.setattr(dlib_shape, "_has", lambda module: False)
    checks = {c.name: c for c in run_checks([]) if c.area == "landmarks"}
    fa = checks["face-alignment"]
    assert (
        fa.status == "missing" and str(fan_installed) in fa.fix and all(f in fa.detail for f in lm.FAN_FILES)
    )
    assert checks["dlib"].status == "missing" and checks["dlib"].fix == "pip install 'stylerig[dlib]'"
    for f in lm.FAN_FILES:
        (fan_installed / f).write_bytes(b"")
    checks = {c.name: c for c in run_checks([]) if c.area == "landmarks"}
    assert checks["face-alignment"].status == "ok" and "--landmarks auto" in checks["face-alignment"].detail
