"""`stylerig sample` and the sample-set contract (stylerig.data, stylerig.sampling)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig.data import FORMAT, FORMAT_VERSION, SampleSet, split_indices
from stylerig.errors import AssetError, BackendUnavailableError, InputError
from stylerig.gan import load_generator, sample_ws, save_generator, z_from_seeds
from stylerig.gan.testing import tiny_generator
from stylerig.sampling import write_sample_set
from stylerig.viz import to_uint8
from stylerig_cli.app import main

ARRAY_FILES = ("ws.npy", "images.npy", "seeds.npy")


@pytest.fixture(scope="module")
def gen_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "tiny16.safetensors"
    save_generator(tiny_generator(3, 16, z_dim=16, w_dim=16, channel_base=128, channel_max=16), path)
    return path


def write(out: Path, gen: Path | torch.nn.Module, n: int = 10, **kw):
    kw.setdefault("batch", 4)
    kw.setdefault("device", "cpu")
    return write_sample_set(out, gen, n, **kw)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ARRAY_FILES}


def test_set_matches_contract_and_reloads_with_numpy_alone(tmp_path: Path, gen_path: Path) -> None:
    out = tmp_path / "set"
    res = write(out, gen_path, 10, seed=7, truncation=0.7, mix_max=3)
    assert res.n == 10 and not res.already_complete and res.generated == 10
    assert sorted(p.name for p in out.iterdir()) == [
        "images.npy",
        "manifest.json",
        "run.json",
        "seeds.npy",
        "ws.npy",
    ]

    m = json.loads((out / "manifest.json").read_text())
    assert (m["format"], m["version"], m["n"], m["num_ws"], m["w_dim"]) == (FORMAT, FORMAT_VERSION, 10, 6, 16)
    assert (m["resolution"], m["seed"], m["truncation"], m["mix_max"]) == (16, 7, 0.7, 3)
    assert m["landmark_detector"] == "none" and m["dropped"] == {"no_landmarks": 0}
    assert m["generator"]["sha256"] == hashlib.sha256(gen_path.read_bytes()).hexdigest()
    assert m["generator"]["path"] == str(gen_path.resolve())
    assert set(m["arrays"]) == {"ws", "images", "seeds"}
    for name, entry in m["arrays"].items():
        assert entry["sha256"] == hashlib.sha256((out / f"{name}.npy").read_bytes()).hexdigest()

    # numpy alone (no mmap, no stylerig) reads the arrays with the contract's shapes and dtypes.
    ws, images, seeds = (np.load(out / f, allow_pickle=False) for f in ARRAY_FILES)
    assert ws.dtype == np.float32 and ws.shape == (10, 6, 16)
    assert images.dtype == np.uint8 and images.shape == (10, 16, 16, 3)
    assert seeds.dtype == np.int64 and seeds.tolist() == list(range(7, 17))

    # ...and they are the generator's: row i is seed 7 + i, mixed and truncated, rendered and quantised.
    G = load_generator(gen_path)
    want_ws = sample_ws(G, [7, 12], mix_max=3, truncation_psi=0.7)
    np.testing.assert_allclose(ws[[0, 5]], want_ws.numpy(), rtol=0, atol=1e-5)  # other batch size
    with torch.no_grad():
        want_img = to_uint8(G.synthesis(want_ws, noise_mode="const"))
    assert np.abs(images[[0, 5]].astype(int) - want_img.astype(int)).max() <= 1

    s = SampleSet(out, verify=True)
    assert len(s) == 10 and isinstance(s.ws, np.memmap) and not s.ws.flags.writeable
    assert s.landmarks is None and s.params is None and s.resolution == 16
    train, val = s.split(0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and sorted(np.r_[train, val].tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(s.split(0.2, seed=1), (train, val), strict=True))
    assert not np.array_equal(split_indices(100, 0.2, 2)[1], split_indices(100, 0.2, 3)[1])
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "sample" and run["seed"] == 7


def test_same_arguments_give_identical_sets_and_rerun_is_a_no_op(tmp_path: Path, gen_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, gen_path, 9)
    write(b, gen_path, 9)
    assert file_bytes(a) == file_bytes(b)
    before = {p.name: p.stat().st_mtime_ns for p in a.iterdir()}
    again = write(a, gen_path, 9)
    assert again.already_complete and again.generated == 0 and any("nothing to do" in x for x in again.notes)
    assert {p.name: p.stat().st_mtime_ns for p in a.iterdir()} == before


def test_a_set_the_demo_wrote_is_a_sample_set_for_sample(tmp_path: Path, gen_path: Path) -> None:
    out = tmp_path / "a"
    write(out, gen_path, 9, command="demo")
    again = write(out, gen_path, 9)  # `stylerig sample` into the demo's samples/: the same set
    assert again.already_complete
    write(out, gen_path, 8, force=True)  # and it may replace it
    assert json.loads((out / "run.json").read_text())["command"] == "sample"


def test_interrupted_run_resumes_to_the_identical_set(tmp_path: Path, gen_path: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "out"
    write(ref, gen_path, 11)
    calls = []

    def stop_after_two_chunks(done: int, total: int) -> None:
        calls.append(done)
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(out, gen_path, 11, progress=stop_after_two_chunks)
    assert calls == [0, 4, 8]
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / ".chunks").glob("chunk-*.npz")) == [
        "chunk-000000.npz",
        "chunk-000001.npz",
    ]
    with pytest.raises(AssetError, match="not a finished sample set"):
        SampleSet(out)

    seen = []
    res = write(out, gen_path, 11, batch=5, progress=lambda d, t: seen.append((d, t)))  # keeps chunk size 4
    assert (res.reused, res.generated) == (8, 3) and seen == [(8, 11), (11, 11)]
    assert any("chunk size" in x for x in res.notes)
    assert file_bytes(out) == file_bytes(ref)
    assert not (out / ".chunks").exists()


def stop_after_first_chunk(done: int, total: int) -> None:
    if done:
        raise KeyboardInterrupt


def test_refuses_to_overwrite_a_different_set_without_force(tmp_path: Path, gen_path: Path) -> None:
    out = tmp_path / "set"
    write(out, gen_path, 6, seed=0)
    old = file_bytes(out)
    with pytest.raises(AssetError) as e:
        write(out, gen_path, 6, seed=1)
    assert "--force" in (e.value.hint or "") and "seed 0 -> 1" in e.value.message
    assert file_bytes(out) == old
    write(out, gen_path, 6, seed=1, force=True)
    assert np.load(out / "seeds.npy").tolist() == list(range(1, 7))

    # an unfinished set with other settings is protected too
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        write(part, gen_path, 12, progress=stop_after_first_chunk)
    with pytest.raises(AssetError, match="unfinished different"):
        write(part, gen_path, 12, mix_max=1)
    assert write(part, gen_path, 12, mix_max=1, force=True).reused == 0


def test_damaged_sets_raise_asset_error_on_open(tmp_path: Path, gen_path: Path) -> None:
    out = tmp_path / "set"
    write(out, gen_path, 6)
    good_manifest = (out / "manifest.json").read_text()
    images = (out / "images.npy").read_bytes()

    (out / "images.npy").write_bytes(images[: len(images) - 100])  # truncated
    with pytest.raises(AssetError, match="images.npy"):
        SampleSet(out)
    (out / "images.npy").write_bytes(images[:40])  # header cut
    with pytest.raises(AssetError, match="images.npy"):
        SampleSet(out)
    flipped = bytearray(images)
    flipped[-1] ^= 0xFF
    (out / "images.npy").write_bytes(bytes(flipped))  # same shape, other bytes: only verify sees it
    SampleSet(out)
    with pytest.raises(AssetError, match="sha256"):
        SampleSet(out, verify=True)
    (out / "images.npy").write_bytes(images)

    m = json.loads(good_manifest)
    m["n"] = 7
    (out / "manifest.json").write_text(json.dumps(m))  # inconsistent with the arrays
    with pytest.raises(AssetError, match="manifest says"):
        SampleSet(out)
    (out / "manifest.json").write_text(good_manifest[:50])  # corrupt
    with pytest.raises(AssetError, match="JSON"):
        SampleSet(out)
    (out / "manifest.json").write_text(good_manifest)
    (out / "ws.npy").unlink()
    with pytest.raises(AssetError, match="missing ws.npy"):
        SampleSet(out)
    with pytest.raises(AssetError, match="not found"):
        SampleSet(tmp_path / "nowhere")
    with pytest.raises(AssetError, match="damaged"):  # the writer will not call a broken set complete
        write(out, gen_path, 6)


def test_mixing_slots(tmp_path: Path, gen_path: Path) -> None:
    write(tmp_path / "k1", gen_path, 12, mix_max=1)
    write(tmp_path / "k5", gen_path, 12, mix_max=5)
    ws1, ws5 = np.load(tmp_path / "k1" / "ws.npy"), np.load(tmp_path / "k5" / "ws.npy")
    assert np.array_equal(ws1, np.broadcast_to(ws1[:, :1], ws1.shape))  # every slot the same w
    G = load_generator(gen_path)
    with torch.no_grad():
        want = G.mapping(z_from_seeds(list(range(12)), 16), None)[:, 0].numpy()
    np.testing.assert_allclose(ws1[:, 0], want, rtol=0, atol=1e-5)
    mixed = [(ws5[i] != ws5[i, :1]).any() for i in range(12)]
    assert 0 < sum(mixed) < 12  # k is uniform in 1..5: some rows mixed, some not (fixed seeds)
    for i in range(12):  # slot 0 is always the sample's own seed
        assert np.array_equal(ws5[i, 0], ws1[i, 0])


def test_resolution_is_antialiased_downsampling(tmp_path: Path, gen_path: Path) -> None:
    write(tmp_path / "full", gen_path, 4)
    res = write(tmp_path / "small", gen_path, 4, resolution=4)
    small = SampleSet(tmp_path / "small")
    assert res.resolution == 4 and small.images.shape == (4, 4, 4, 3) and small.manifest["resolution"] == 4
    full = np.load(tmp_path / "full" / "images.npy").astype(float)
    pooled = full.reshape(4, 4, 4, 4, 4, 3).mean(axis=(2, 4))  # area filter = mean of 4x4 blocks
    assert np.abs(pooled - small.images.astype(float)).max() <= 1.0
    odd = write(tmp_path / "odd", gen_path, 2, resolution=12)  # non-integer factor: antialiased bilinear
    assert SampleSet(tmp_path / "odd").images.shape == (2, 12, 12, 3) and odd.resolution == 12


def test_landmark_options_and_hooks(tmp_path: Path, gen_path: Path, monkeypatch) -> None:
    from stylerig.landmarks import dlib_shape, fan

    monkeypatch.setattr(fan, "_installed_version", lambda: None)  # no detector, whatever is installed
    monkeypatch.setattr(dlib_shape, "_has", lambda module: False)
    for name in ("face-alignment", "dlib"):
        with pytest.raises(BackendUnavailableError, match="not installed"):
            write(tmp_path / name, gen_path, 2, landmarks=name)
    with pytest.raises(InputError):
        write(tmp_path / "bad", gen_path, 2, landmarks="nope")
    res = write(tmp_path / "auto", gen_path, 2, landmarks="auto")
    assert res.manifest["landmark_detector"] == "none" and any("no landmark detector" in x for x in res.notes)

    class OddFails:  # a detector that finds no face in odd seeds
        name = "fake"

        def __call__(self, images):
            b = len(images)
            return np.full((b, 68, 2), 3.0, np.float32), np.arange(b) % 2 == 0

    class Truth:
        name = "fake-world"

        def __call__(self, seeds, ws):
            return np.tile(np.asarray(seeds, np.float32)[:, None], (1, 257)), None

    out = tmp_path / "hooks"
    res = write(out, gen_path, 7, landmarks=OddFails(), truth=Truth())
    s = SampleSet(out)
    assert res.n == len(s) == 4 and s.manifest["dropped"] == {"no_landmarks": 3}
    assert s.seeds.tolist() == [0, 2, 4, 6] and s.params[:, 0].tolist() == [0, 2, 4, 6]
    assert s.landmarks.shape == (4, 68, 2) and s.manifest["landmark_detector"] == "fake"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code or 0, cap.out, cap.err


def test_cli_success_and_one_line_errors(tmp_path: Path, gen_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "cli"
    args = ["sample", "--out", str(out), "--n", "5", "--batch", "2", "--device", "cpu", "--landmarks", "none"]
    code, stdout, err = run_cli([*args, "--generator", str(gen_path)], capsys)
    assert code == 0, err
    assert "5 samples at 16x16" in " ".join(stdout.split()) and len(SampleSet(out)) == 5
    code, stdout, _ = run_cli([*args, "--generator", str(gen_path)], capsys)
    assert code == 0 and "nothing to do" in " ".join(stdout.split())

    import stylerig.worlds.world as world_mod  # a broken install: the built-in world's asset is gone

    monkeypatch.setattr(world_mod, "GENERATOR_FILE", tmp_path / "gone.safetensors")
    monkeypatch.setattr(world_mod, "_CACHE", {})

    for extra, what in (
        (["--generator", str(tmp_path / "missing.pkl")], "not found"),
        ([], "world's generator is missing"),
        (["--generator", str(gen_path), "--seed", "9"], "different sample set"),
    ):
        code, _, err = run_cli([*args, *extra], capsys)
        assert code == 2 and "Traceback" not in err
        text = " ".join(err.split())  # rich wraps long lines at the console width
        assert text.startswith("error:") and text.count("error:") == 1
        assert what in text.split("hint:")[0]


_RANK_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from stylerig.sampling import write_sample_set
    res = write_sample_set(sys.argv[1], sys.argv[2], 10, batch=2, device="cpu", mix_max=3)
    print("GENERATED", res.generated)
    """
)


def test_torchrun_style_two_ranks_write_the_same_set(tmp_path: Path, gen_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write(tmp_path / "one", gen_path, 10, batch=2, mix_max=3)
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, "-c", _RANK_SCRIPT, str(tmp_path / "two"), str(gen_path)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e
    # 5 chunks of 2: rank 0 draws chunks 0, 2, 4 and rank 1 chunks 1, 3.
    assert [o.split("GENERATED")[1].strip() for o, _ in outs] == ["6", "4"]
    assert file_bytes(tmp_path / "two") == file_bytes(tmp_path / "one")
    assert SampleSet(tmp_path / "two").manifest["key"] == SampleSet(tmp_path / "one").manifest["key"]


def test_bad_truncation_cutoff_and_full_disk(tmp_path: Path, gen_path: Path, monkeypatch) -> None:
    with pytest.raises(InputError, match="truncation-cutoff"):
        write(tmp_path / "a", gen_path, 4, truncation=0.7, truncation_cutoff=99)
    assert not (tmp_path / "a" / "manifest.json").exists()

    import stylerig.sampling as sampling

    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sampling.os, "posix_fallocate", no_space, raising=False)
    out = tmp_path / "b"
    with pytest.raises(AssetError, match="reserve"):
        write(out, gen_path, 4)
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".npy") or ".tmp" in p.name]
    monkeypatch.undo()
    write(out, gen_path, 4)  # rerun after "freeing space" completes the set from its chunks
    assert (out / "manifest.json").is_file()


def stop_when_done(done: int, total: int) -> None:
    if done == total:  # every chunk is written: stop before the assembly
        raise KeyboardInterrupt


@pytest.mark.parametrize("damage", ["truncated", "short_ws", "other_seeds"])
def test_resume_draws_a_damaged_chunk_anew(tmp_path: Path, gen_path: Path, damage: str) -> None:
    ref, out = tmp_path / "ref", tmp_path / "out"
    write(ref, gen_path, 8)
    with pytest.raises(KeyboardInterrupt):
        write(out, gen_path, 8, progress=stop_when_done)
    chunk = out / ".chunks" / "chunk-000000.npz"
    if damage == "truncated":  # a zipfile.BadZipFile escaped before
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    else:  # an IndexError escaped the assembly before
        z = dict(np.load(chunk))
        if damage == "short_ws":
            z["ws"] = z["ws"][:3]
        else:
            z["seeds"] = z["seeds"] + 100
        with open(chunk, "wb") as f:
            np.savez(f, **z)
    res = write(out, gen_path, 8)
    assert (res.reused, res.generated) == (4, 4)
    assert any("chunk-000000.npz" in x and "drawn anew" in x for x in res.notes)
    assert file_bytes(out) == file_bytes(ref)


def test_assembly_names_an_inconsistent_chunk(tmp_path: Path, gen_path: Path) -> None:
    import stylerig.sampling as sampling

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        write(out, gen_path, 8, progress=stop_when_done)
    chunk = out / ".chunks" / "chunk-000001.npz"
    z = dict(np.load(chunk))
    z["images"] = z["images"][:2]
    with open(chunk, "wb") as f:
        np.savez(f, **z)
    plan = json.loads((out / ".chunks" / "plan.json").read_text())
    meta = {"num_ws": 6, "w_dim": 16}
    with pytest.raises(AssetError, match="chunk-000001.npz") as e:
        sampling._assemble(out, plan, meta)
    assert "anew" in (e.value.hint or "") and not chunk.exists()
    assert not (out / "manifest.json").exists()


def test_reduced_precision_changes_only_the_images_and_is_part_of_the_key(
    tmp_path: Path, gen_path: Path
) -> None:
    full, half = tmp_path / "f32", tmp_path / "bf16"
    write(full, gen_path, 8)
    res = write(half, gen_path, 8, precision="bfloat16")
    assert res.manifest["key"]["precision"] == "bfloat16"
    assert (
        "precision" not in json.loads((full / "manifest.json").read_text())["key"]
    )  # float32 keys unchanged
    assert (half / "ws.npy").read_bytes() == (full / "ws.npy").read_bytes()
    a = np.load(full / "images.npy").astype(np.int16)
    b = np.load(half / "images.npy").astype(np.int16)
    diff = np.abs(a - b)
    assert 0 < diff.max() <= 16 and diff.mean() < 2.0  # computed in bfloat16, not ignored, and close
    # a float32 set is another set: protected without --force
    old = file_bytes(full)
    with pytest.raises(AssetError, match="precision"):
        write(full, gen_path, 8, precision="bfloat16")
    assert file_bytes(full) == old


def test_float16_is_refused_on_cpu_before_anything_is_written(tmp_path: Path, gen_path: Path, capsys) -> None:
    out = tmp_path / "set"
    with pytest.raises(InputError, match="CUDA") as e:
        write(out, gen_path, 4, precision="float16")
    assert "bfloat16" in (e.value.hint or "")
    with pytest.raises(InputError, match="precision must be one of"):
        write(out, gen_path, 4, precision="half")
    assert not out.exists()
    with pytest.raises(SystemExit) as ex:
        main(
            [
                "sample",
                "--out",
                str(out),
                "-n",
                "4",
                "--generator",
                str(gen_path),
                "--precision",
                "float16",
                "--device",
                "cpu",
            ]
        )
    assert ex.value.code == 2 and "Traceback" not in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.cuda
def test_float16_sample_set_on_cuda_is_close_to_float32(tmp_path: Path, gen_path: Path) -> None:
    full, half = tmp_path / "f32", tmp_path / "f16"
    write(full, gen_path, 8, device="cuda")
    write(half, gen_path, 8, device="cuda", precision="float16")
    assert (half / "ws.npy").read_bytes() == (full / "ws.npy").read_bytes()
    diff = np.abs(
        np.load(full / "images.npy").astype(np.int16) - np.load(half / "images.npy").astype(np.int16)
    )
    assert diff.max() <= 8 and diff.mean() < 1.0
