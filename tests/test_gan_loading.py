"""Checkpoint readers: same images from every format, exact own-format round trip, refusals, bad files."""

from __future__ import annotations

import argparse
import builtins
import os
import pickle
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig.errors import AssetError, InputError
from stylerig.gan import convert, detect_format, load_generator, save_generator
from stylerig.gan.loading import FORMAT, W_AVG_SAMPLES, read_nvidia_pickle, rename_rosinality
from stylerig.gan.networks import Generator
from stylerig.gan.testing import (
    tiny_generator,
    to_rosinality_state,
    write_nvidia_pickle,
    write_rosinality_checkpoint,
    write_stylegan3_pickle,
    write_tensorflow_pickle,
)


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator(11)  # 32x32


@pytest.fixture(scope="module")
def files(G: Generator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "nvidia": write_nvidia_pickle(G, d / "network-snapshot.pkl"),
        "rosinality": write_rosinality_checkpoint(G, d / "550000.pt"),
        "own": save_generator(G, d / "g.safetensors"),
    }


def _images(G: Generator, psi: float = 1.0) -> torch.Tensor:
    z = torch.from_numpy(np.random.RandomState(0).randn(4, G.z_dim)).float()
    with torch.no_grad():
        return G(z, truncation_psi=psi, noise_mode="const")


# ----------------------------------------------------------------------------------------------------
# Same weights, same images.


@pytest.mark.parametrize("layout", ["ada", "stylegan3"])
@pytest.mark.parametrize("numpy1", [False, True])
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_nvidia_pickle_gives_the_same_images(
    G: Generator, tmp_path: Path, layout: str, numpy1: bool, protocol: int
) -> None:
    path = write_nvidia_pickle(G, tmp_path / "g.pkl", layout=layout, numpy1=numpy1, protocol=protocol)
    assert detect_format(path) == "nvidia-pickle"
    H = load_generator(path)
    assert H.config["synthesis_kwargs"]["channel_base"] == 256 and H.num_ws == G.num_ws
    assert not H.training and not any(p.requires_grad for p in H.parameters())
    for psi in (1.0, 0.5):
        assert (_images(H, psi) - _images(G, psi)).abs().max().item() <= 1e-5


def test_nvidia_pickle_structure_is_the_real_one(files: dict[str, Path]) -> None:
    data = read_nvidia_pickle(files["nvidia"])
    assert set(data) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    g = data["G_ema"]
    assert g.class_name == "Generator" and g.version == 6 and isinstance(g.module_src, str)
    assert type(g.state["_init_kwargs"]).__name__ == "_EasyDict"
    gain = g.state["_modules"]["mapping"].state["_modules"]["fc0"].state["weight_gain"]
    assert isinstance(gain, np.float64)  # numpy scalar records were read
    raw = files["nvidia"].read_bytes()
    for name in (b"_reconstruct_persistent_obj", b"_load_from_bytes", b"EasyDict", b"scalar"):
        assert name in raw


@pytest.mark.parametrize("training", [False, True])
def test_rosinality_checkpoint_gives_the_same_images(G: Generator, tmp_path: Path, training: bool) -> None:
    path = write_rosinality_checkpoint(G, tmp_path / "r.pt", training=training)
    if training:  # really a checkpoint that plain weights_only loading refuses (argparse.Namespace)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
    H = load_generator(path)
    assert (_images(H) - _images(G)).abs().max().item() <= 1e-5
    if not training:
        assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)
        assert (_images(H, 0.5) - _images(G, 0.5)).abs().max().item() <= 1e-5


def test_rosinality_without_latent_avg_computes_it(G: Generator, tmp_path: Path) -> None:
    H = load_generator(write_rosinality_checkpoint(G, tmp_path / "r.pt", latent_avg=False))
    H2 = load_generator(tmp_path / "r.pt")
    assert torch.equal(H.mapping.w_avg, H2.mapping.w_avg)  # seeded
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        mean = G.mapping(torch.randn(W_AVG_SAMPLES, G.z_dim, generator=gen))[:, 0].mean(0)
    assert not torch.allclose(H.mapping.w_avg, G.mapping.w_avg, atol=1e-2)  # not the stored one
    assert torch.allclose(H.mapping.w_avg, mean, atol=0.1 * mean.abs().max().item())


def test_rosinality_renaming_accounts_for_every_key(G: Generator) -> None:
    ros = to_rosinality_state(G)
    renamed = rename_rosinality(ros)
    ours = G.state_dict()
    skipped = [k for k in ros if k.endswith(("blur.kernel", "upsample.kernel"))]
    assert len(renamed) + len(skipped) == len(ros)
    assert set(renamed) == {k for k in ours if not k.endswith("resample_filter")} - {"mapping.w_avg"}
    for k, v in renamed.items():
        assert torch.equal(v, ours[k]), k
    with pytest.raises(AssetError, match="match no renaming rule"):
        rename_rosinality({**ros, "convs.0.conv.extra": torch.zeros(1)})
    bad_kernel = dict(ros)
    bad_kernel["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    with pytest.raises(AssetError, match="resampling kernel"):
        rename_rosinality(bad_kernel)


def test_own_format_round_trip_is_exact(G: Generator, files: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(str(files["own"]), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT
    H = load_generator(files["own"])
    assert H.config == G.config
    a, b = G.state_dict(), H.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(_images(H), _images(G))


def test_convert_writes_the_own_format(G: Generator, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sub" / "g.safetensors"
    convert(files["nvidia"], out)
    assert detect_format(out) == "stylerig"
    assert torch.equal(_images(load_generator(out)), _images(load_generator(files["nvidia"])))
    with pytest.raises(AssetError, match="already exists"):
        convert(files["rosinality"], out)
    convert(files["rosinality"], out, overwrite=True)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_convert(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stylerig_cli.app import main

    out = tmp_path / "cli.safetensors"
    main(["convert", str(files["rosinality"]), str(out)])
    assert out.is_file() and detect_format(out) == "stylerig"
    assert "num_ws 8" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path / "missing.pkl"), str(tmp_path / "x.safetensors")])
    assert e.value.code == 2
    assert "not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Never run code from a checkpoint.


def test_embedded_source_is_never_executed(G: Generator, tmp_path: Path) -> None:
    marker = tmp_path / "source-ran"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\n"
    exec(compile(src, "<check>", "exec"), {})  # positive control: this source does leave a mark
    assert marker.exists()
    marker.unlink()
    path = write_nvidia_pickle(G, tmp_path / "g.pkl", module_src=src)
    H = load_generator(path)
    assert not marker.exists()
    assert read_nvidia_pickle(path)["G_ema"].module_src == src
    assert (_images(H) - _images(G)).abs().max().item() <= 1e-5
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"

    def __reduce__(self):
        return (builtins.eval, (self.code,))


class _System:
    def __init__(self, marker: Path) -> None:
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_pickle_with_code_running_globals_is_refused(G: Generator, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    plain = pickle.dumps(_Eval(marker))
    pickle.loads(plain)  # positive control: an ordinary unpickler runs it
    assert marker.exists()
    marker.unlink()

    bare = tmp_path / "bare.pkl"
    bare.write_bytes(plain)
    with pytest.raises(AssetError, match=r"non-allow-listed object builtins\.eval"):
        load_generator(bare)
    for payload in (_Eval(marker), _System(marker)):
        path = write_nvidia_pickle(G, tmp_path / "evil.pkl", extra={"aaa": payload})
        with pytest.raises(AssetError, match="non-allow-listed") as e:
            load_generator(path)
        assert "nothing was run" in str(e.value)
        assert not marker.exists()


def test_nested_storage_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "storage-ran"
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    blob = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (
            torch.serialization.MAGIC_NUMBER,
            torch.serialization.PROTOCOL_VERSION,
            sys_info,
            _Eval(marker),
        )
    )

    class Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (blob,))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Storage()}, protocol=4))
    with pytest.raises(AssetError, match="non-tensor content"):
        load_generator(path)
    assert not marker.exists()


def test_torch_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "torch-ran"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": OrderedDict(), "x": _Eval(marker)}, path)
    with pytest.raises(AssetError, match="refused, nothing was run"):
        load_generator(path)
    assert not marker.exists()


def test_object_arrays_are_refused(G: Generator, tmp_path: Path) -> None:
    path = write_nvidia_pickle(G, tmp_path / "g.pkl", extra={"aaa": np.array([1, "x"], dtype=object)})
    with pytest.raises(AssetError, match="not numeric"):
        load_generator(path)
    path = write_nvidia_pickle(G, tmp_path / "g.pkl", extra={"aaa": np.arange(6.0).reshape(2, 3)})
    assert read_nvidia_pickle(path)["aaa"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_stylegan3_and_tensorflow_pickles_are_refused(tmp_path: Path) -> None:
    path = write_stylegan3_pickle(tmp_path / "sg3.pkl")
    assert b"_reconstruct" in path.read_bytes()  # numpy array attributes, as in real StyleGAN3 pickles
    with pytest.raises(AssetError, match="StyleGAN3"):
        load_generator(path)
    with pytest.raises(AssetError, match="TensorFlow"):
        load_generator(write_tensorflow_pickle(tmp_path / "tf.pkl"))


# ----------------------------------------------------------------------------------------------------
# Bad files: one AssetError each.


@pytest.mark.parametrize("kind", ["nvidia", "rosinality", "own"])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_files_raise_asset_error(
    files: dict[str, Path], tmp_path: Path, kind: str, keep: float
) -> None:
    data = files[kind].read_bytes()
    path = tmp_path / files[kind].name
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AssetError, match=str(path.name)):
        load_generator(path)


@pytest.mark.parametrize("kind", ["nvidia", "rosinality", "own"])
def test_corrupt_files_raise_asset_error(files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    data = bytearray(files[kind].read_bytes())
    rng = np.random.RandomState(0)
    failures = 0
    for trial in range(6):
        corrupt = bytearray(data)
        start = rng.randint(16, len(data) // 4) if trial < 3 else len(data) // 2
        corrupt[start : start + 64] = rng.bytes(64)
        path = tmp_path / f"{trial}-{files[kind].name}"
        path.write_bytes(bytes(corrupt))
        try:
            load_generator(path)
        except AssetError:
            failures += 1
        # Anything else escaping is a bug: pytest reports it as an error here.
    assert failures >= 1
    # Garbage header: always refused.
    path = tmp_path / f"garbage-{files[kind].name}"
    path.write_bytes(bytes(data[:2]) + os.urandom(200))
    with pytest.raises(AssetError):
        load_generator(path)


def test_missing_empty_and_wrong_kind_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pkl"
    with pytest.raises(AssetError, match="nope.pkl"):
        load_generator(missing)
    with pytest.raises(AssetError, match="not a file"):
        load_generator(tmp_path)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(AssetError, match="empty"):
        load_generator(empty)
    text = tmp_path / "notes.pkl"
    text.write_text("hello, this is not a network\n")
    with pytest.raises(AssetError, match="not a generator checkpoint"):
        load_generator(text)
    other_torch = tmp_path / "dfr.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, other_torch)
    with pytest.raises(AssetError, match="without a rosinality g_ema"):
        load_generator(other_torch)
    other_pickle = tmp_path / "stats.pkl"
    other_pickle.write_bytes(pickle.dumps({"fid": 3.2, "kimg": 100}, protocol=4))
    with pytest.raises(AssetError, match="no G_ema"):
        load_generator(other_pickle)
    from safetensors.torch import save_file

    face = tmp_path / "face.safetensors"
    save_file(
        {"mean_shape": torch.zeros(3, 3)}, str(face), metadata={"config": '{"format": "stylerig.face_model"}'}
    )
    with pytest.raises(AssetError, match="not a stylerig generator"):
        load_generator(face)
    with pytest.raises(InputError):
        load_generator(face, device="not-a-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_a_clear_error(files: dict[str, Path]) -> None:
    from stylerig.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="cuda"):
        load_generator(files["own"], device="cuda")


def test_mismatched_tensors_raise_asset_error(G: Generator, tmp_path: Path) -> None:
    ros = to_rosinality_state(G)
    del ros["noises.noise_3"]
    path = tmp_path / "r.pt"
    torch.save({"g_ema": ros, "latent_avg": G.mapping.w_avg}, path)
    with pytest.raises(AssetError, match="missing 1 tensor"):
        load_generator(path)
    ros = to_rosinality_state(G)
    ros["convs.1.conv.weight"] = ros["convs.1.conv.weight"][:, :, :-1]
    torch.save({"g_ema": ros}, path)
    with pytest.raises(AssetError, match="shape"):
        load_generator(path)
    ros = to_rosinality_state(G)
    ros["style.1.weight"] = ros["style.1.weight"].clone()
    ros["style.1.weight"][0, 0] = float("nan")
    torch.save({"g_ema": ros, "latent_avg": G.mapping.w_avg}, path)
    with pytest.raises(AssetError, match="NaN"):
        load_generator(path)


def test_storage_reader_accepts_the_blobs_torch_pickles_tensors_with() -> None:
    from stylerig.gan.loading import _load_storage, _rebuild_tensor_v2

    t = torch.arange(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated, but it is what pickling uses
        typed = torch.storage.TypedStorage(wrap_storage=t.untyped_storage(), dtype=t.dtype, _internal=True)
        fn, (blob,) = typed.__reduce__()
    assert fn is torch.storage._load_from_bytes and isinstance(blob, bytes)
    assert torch.equal(_rebuild_tensor_v2(_load_storage(blob), 0, (5,), (1,)), t)
    assert b"_load_from_bytes" in pickle.dumps(t)


def test_training_checkpoint_args_survive_the_retry(G: Generator, tmp_path: Path) -> None:
    path = write_rosinality_checkpoint(G, tmp_path / "t.pt", training=True)
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, weights_only=True)
    assert isinstance(ckpt["args"], argparse.Namespace) and "g_optim" in ckpt and "latent_avg" not in ckpt
    assert load_generator(path).num_ws == G.num_ws
