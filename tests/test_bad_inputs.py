"""User mistakes in what `sample`, `analyze`, `train-rignet` and `evaluate` read and where they write:
NaN in a set's files (named), another command's output folder, a full disk half-way through a set of
files, and options that would be silently ignored."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig.errors import AssetError, InputError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 16x16 generator's set of 12 (6 ws of width 16, fabricated params and landmarks), a DFR, a pose
    rig, and a finished DFR-like output folder (its run.json says fit-dfr)."""
    from stylerig.data import SampleSet
    from stylerig.dfr import DFR, save_dfr, ws_statistics
    from stylerig.gan import save_generator
    from stylerig.gan.testing import tiny_generator
    from stylerig.outputs import write_run_json
    from stylerig.rignet import RigNet, save_rignet
    from stylerig.sampling import write_sample_set

    class Truth:
        name = "fake-truth"

        def __call__(self, seeds, ws):
            rng = np.random.default_rng(list(seeds))
            b = len(seeds)
            return (
                rng.normal(size=(b, 257)).astype(np.float32),
                rng.uniform(4, 12, (b, 68, 2)).astype(np.float32),
            )

    root = tmp_path_factory.mktemp("bad_inputs")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        G = tiny_generator(3, 16, z_dim=16, w_dim=16, channel_base=128, channel_max=16)
        gen = save_generator(G, root / "gen.safetensors")
        write_sample_set(root / "set", gen, 12, batch=6, device="cpu", truth=Truth(), landmarks="world")
        s = SampleSet(root / "set")
        ws = torch.from_numpy(np.array(s.ws, dtype=np.float32))
        mean, std = ws_statistics(ws)
        F = DFR(s.num_ws, s.w_dim, hidden=(16, 16), w_mean=mean, w_std=std)
        torch.nn.init.normal_(F.fc2.weight, 0.0, 0.3)
        dfr_dir = root / "dfr"
        dfr = save_dfr(F, dfr_dir / "dfr.safetensors", metadata={"face_model": {"name": "procedural"}})
        write_run_json(dfr_dir, "fit-dfr", {"batch": 8})
        rig = RigNet(s.num_ws, s.w_dim, "pose", latent=4, init_scale=0.0)
        rig.set_statistics(F(ws).detach())
        rig_path = save_rignet(
            rig, root / "rig" / "rig.safetensors", {"dfr": str(dfr), "sample_set": str(s.root)}
        )
    return {"root": root, "gen": gen, "set": root / "set", "dfr": dfr, "dfr_dir": dfr_dir, "rig": rig_path}


def _with_nan(src: Path, dst: Path, name: str, rows: slice | int = 3) -> Path:
    shutil.copytree(src, dst)
    a = np.load(dst / f"{name}.npy")
    a[rows] = np.nan
    np.save(dst / f"{name}.npy", a)
    return dst


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _full_disk_on(monkeypatch: pytest.MonkeyPatch, folder: Path, nth: int) -> list[int]:
    """Make the ``nth`` file written into ``folder`` (or a staging folder in it) fail with ENOSPC."""
    import stylerig.outputs as outputs

    real, calls = outputs.os.fdopen, []

    def full_disk(fd: int, *a: object, **k: object):
        if str(folder) in os.readlink(f"/proc/self/fd/{fd}"):
            calls.append(fd)
            if len(calls) == nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, *a, **k)

    monkeypatch.setattr(outputs.os, "fdopen", full_disk)
    return calls


# ----------------------------------------------------------------------------------------------------
# analyze


def test_analyze_names_nan_codes_of_the_set(tiny, tmp_path: Path) -> None:
    from stylerig.analysis import run_analysis

    bad = _with_nan(tiny["set"], tmp_path / "set", "ws", (3, 2, 5))
    out = tmp_path / "an"
    with pytest.raises(InputError, match=r"ws\.npy holds 1 NaN") as e:
        run_analysis([tiny["rig"]], bad, out, pairs=50, max_samples=12)
    assert str(bad) in e.value.message and "row 3" in e.value.message and e.value.hint
    assert not out.exists()
    # params: a partly NaN row is damage (a whole NaN row is a row without truth, and allowed)
    bad_p = _with_nan(tiny["set"], tmp_path / "setp", "params", (2, slice(0, 5)))
    with pytest.raises(InputError, match=r"params\.npy holds 5 NaN"):
        run_analysis([tiny["rig"]], bad_p, out, pairs=50, max_samples=12)
    ok_p = _with_nan(tiny["set"], tmp_path / "setq", "params", 2)
    res = run_analysis([tiny["rig"]], ok_p, out, pairs=50, max_samples=12)
    assert json.loads((out / "fig6_parameters.json").read_text())["truth_rows"] == 11
    assert all(np.isfinite(v["mean"]).all() for v in res.curves.values())


def test_analyze_full_disk_keeps_the_previous_analysis_whole(tiny, tmp_path: Path, monkeypatch) -> None:
    from stylerig.analysis import run_analysis

    out = tmp_path / "an"
    run_analysis([tiny["rig"]], tiny["set"], out, pairs=20, max_samples=12, seed=0)
    before = _files(out)
    assert set(before) >= {"fig4_slot_change.csv", "fig6_parameters.json", "run.json"}
    calls = _full_disk_on(monkeypatch, out, 5)  # fig4 written, fig6 half-way
    with pytest.raises(AssetError, match="No space left"):
        run_analysis([tiny["rig"]], tiny["set"], out, pairs=30, max_samples=12, seed=1)
    assert len(calls) == 5
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    monkeypatch.undo()
    # A later Figure-6-only analysis replaces the whole set: no Figure 4 of another run stays beside it.
    run_analysis([], tiny["set"], out, dfr=tiny["dfr"], max_samples=12)
    assert not (out / "fig4_slot_change.csv").exists() and (out / "fig6_parameters.csv").is_file()


def test_analyze_and_sample_refuse_another_commands_folder(tiny, tmp_path: Path) -> None:
    from stylerig.analysis import run_analysis
    from stylerig.sampling import write_sample_set

    for folder, owner in ((tiny["set"], "stylerig sample"), (tiny["dfr_dir"], "fit-dfr")):
        before = _files(folder)
        with pytest.raises(InputError, match=owner):
            run_analysis([tiny["rig"]], tiny["set"], folder, pairs=5, max_samples=12)
        assert _files(folder) == before
    before = _files(tiny["dfr_dir"])
    with pytest.raises(InputError, match="fit-dfr"):
        write_sample_set(tiny["dfr_dir"], tiny["gen"], 4, device="cpu")
    assert _files(tiny["dfr_dir"]) == before and not (tiny["dfr_dir"] / ".chunks").exists()
    # a command that samples on another's behalf names itself; a set of `sample` stays a set to finish
    with pytest.raises(InputError, match="stylerig demo"):
        write_sample_set(tiny["dfr_dir"], tiny["gen"], 4, device="cpu", command="demo")
    res = write_sample_set(tmp_path / "s", tiny["gen"], 4, device="cpu")
    assert write_sample_set(tmp_path / "s", tiny["gen"], 4, device="cpu", command="demo").already_complete
    assert res.n == 4


# ----------------------------------------------------------------------------------------------------
# train-rignet


def _rig_config(**kw):
    from stylerig.training.rignet import RigConfig

    return RigConfig(**{"mode": "pose", "steps": 1, "batch": 2, "val_every": 0, **kw})


def test_train_rignet_names_nan_codes_before_the_dfr_runs(tiny, tmp_path: Path) -> None:
    from stylerig.training.rignet import train_rignet

    bad = _with_nan(tiny["set"], tmp_path / "set", "ws")
    out = tmp_path / "rig"
    with pytest.raises(InputError, match=r"ws\.npy holds \d+ NaN") as e:
        train_rignet(bad, tiny["dfr"], out, config=_rig_config(), device="cpu")
    assert str(bad / "ws.npy") in e.value.message and "stylerig sample" in (e.value.hint or "")
    assert not out.exists()


def test_train_rignet_refuses_another_commands_folder(tiny, tmp_path: Path) -> None:
    from stylerig.training.rignet import train_rignet

    for folder, owner in ((tiny["dfr_dir"], "fit-dfr"), (tiny["set"], "stylerig sample")):
        before = _files(folder)
        with pytest.raises(InputError, match=owner) as e:
            train_rignet(tiny["set"], tiny["dfr"], folder, config=_rig_config(), device="cpu")
        assert "--no-resume" not in (e.value.hint or "") and "another --out" in (e.value.hint or "")
        assert _files(folder) == before


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"group_weights": "expression=3"}, "does not edit"),
        ({"mode": "expression", "group_weights": "pose=2"}, "does not edit"),
        ({"rec_weight": 0.0, "edit_weight": 0.0, "consist_weight": 0.0}, "loss of 0"),
        ({"rec": False, "edit_weight": 0.0, "consist_weight": 0.0}, "loss of 0"),
        ({"rec_weight": 0.0, "group_weights": "pose=0"}, "loss of 0"),
        ({"arch": "delta", "edit_weight": 0.0, "consist_weight": 0.0}, "loss of 0"),  # L_rec ≡ 0 there
    ],
)
def test_rig_settings_that_would_be_ignored_or_train_nothing(tiny, tmp_path: Path, kw, what) -> None:
    from stylerig.training.rignet import train_rignet

    out = tmp_path / "rig"
    with pytest.raises(InputError, match=what):
        train_rignet(tiny["set"], tiny["dfr"], out, config=_rig_config(**kw), device="cpu")
    assert not out.exists()
    if "does not edit" in what:  # the same weights are fine for a rig that edits every group
        _rig_config(**kw | {"mode": "all"}).check()


def test_train_rignet_cli_group_weight_and_zero_weights(tiny, tmp_path: Path, capsys) -> None:
    from stylerig_cli.app import main

    base = ["train-rignet", "--data", str(tiny["set"]), "--dfr", str(tiny["dfr"]), "--mode", "pose"]
    base += ["--out", str(tmp_path / "r"), "--steps", "1", "--batch", "2", "--device", "cpu"]
    for extra, what in (
        (["--group-weight", "expression=3"], "does not edit"),
        (["--rec-weight", "0", "--edit-weight", "0", "--consist-weight", "0"], "loss of 0"),
    ):
        with pytest.raises(SystemExit) as ex:
            main([*base, *extra])
        err = " ".join(capsys.readouterr().err.split())
        assert ex.value.code == 2 and "Traceback" not in err and what in err, err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------------
# evaluate (on the built-in world: its sample set of 20, an untrained DFR and rig of its code size)


@pytest.fixture(scope="module")
def world_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from stylerig.data import SampleSet
    from stylerig.dfr import DFR, save_dfr, ws_statistics
    from stylerig.rignet import RigNet, save_rignet
    from stylerig.sampling import write_sample_set

    root = tmp_path_factory.mktemp("world_eval")
    write_sample_set(root / "set", None, 20, batch=10, device="cpu", landmarks="none")
    s = SampleSet(root / "set")
    ws = torch.from_numpy(np.array(s.ws, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        F = DFR(s.num_ws, s.w_dim, hidden=(8, 8), w_mean=ws_statistics(ws)[0], w_std=ws_statistics(ws)[1])
        rig = RigNet(s.num_ws, s.w_dim, "pose", latent=4, init_scale=0.0)
    rig.set_statistics(F(ws).detach())
    dfr = save_dfr(F, root / "dfr.safetensors")
    rig_path = save_rignet(
        rig, root / "rig" / "rig.safetensors", {"dfr": str(dfr), "sample_set": str(s.root)}
    )
    return {"set": root / "set", "dfr": dfr, "rig": rig_path}


def test_evaluate_names_params_without_truth(world_set, tmp_path: Path) -> None:
    from stylerig.evaluate import evaluate

    out = tmp_path / "ev"
    for tag, rows, what in (("all", slice(None), "in 20 of 20 rows"), ("one", 2, "in 1 of 20 rows")):
        bad = _with_nan(world_set["set"], tmp_path / tag, "params", rows)
        with pytest.raises(InputError, match=what) as e:
            evaluate([world_set["rig"]], world_set["dfr"], bad, n_pairs=2, out_dir=out, method="fast")
        assert str(bad / "params.npy") in e.value.message and "images" not in e.value.message
        assert "stylerig sample" in (e.value.hint or "")
    # A NaN code in a held-out row (the rows evaluate reads; it never reads the training rows' codes).
    from stylerig.data import SampleSet

    held_out = int(SampleSet(world_set["set"]).split(0.1, seed=0)[1][0])
    bad = _with_nan(world_set["set"], tmp_path / "setw", "ws", (held_out, 0, 0))
    with pytest.raises(InputError, match=r"ws\.npy holds 1 NaN"):
        evaluate([world_set["rig"]], world_set["dfr"], bad, n_pairs=2, out_dir=out, method="fast")
    assert not out.exists()


def test_evaluate_refuses_generator_options_on_the_world(world_set, tmp_path: Path, capsys) -> None:
    from stylerig.evaluate import evaluate
    from stylerig_cli.app import main

    out = tmp_path / "ev"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(64))
    for kw, what in (
        ({"detector": "banana"}, "--landmarks only applies with --generator"),
        ({"face_model": str(junk)}, "--face-model only applies with --generator"),
        ({"fit": {"steps": 3}}, "fit only applies with --generator"),
    ):
        with pytest.raises(InputError, match=what):
            evaluate([world_set["rig"]], world_set["dfr"], world_set["set"], n_pairs=2, out_dir=out, **kw)
    base = ["evaluate", "--rig", str(world_set["rig"]), "--data", str(world_set["set"]), "--out", str(out)]
    with pytest.raises(SystemExit) as ex:
        main([*base, "--n-pairs", "2", "--landmarks", "banana"])
    err = " ".join(capsys.readouterr().err.split())
    assert ex.value.code == 2 and "--landmarks only applies" in err and "Traceback" not in err
    # ... and another command's folder
    before = _files(world_set["set"])
    with pytest.raises(InputError, match="stylerig sample"):
        evaluate([world_set["rig"]], world_set["dfr"], world_set["set"], n_pairs=2, out_dir=world_set["set"])
    assert _files(world_set["set"]) == before
    assert not out.exists()


def test_evaluate_full_disk_keeps_the_previous_files(world_set, tmp_path: Path, monkeypatch) -> None:
    from stylerig.evaluate import evaluate

    out = tmp_path / "ev"
    out.mkdir()
    old = {"metrics.json": b"{}\n", "metrics.md": b"old\n", "run.json": b'{"command": "evaluate"}\n'}
    for name, data in old.items():
        (out / name).write_bytes(data)
    _full_disk_on(monkeypatch, out, 2)
    with pytest.raises(AssetError, match="No space left"):
        evaluate(
            [world_set["rig"]], world_set["dfr"], world_set["set"], n_pairs=2, out_dir=out, method="fast"
        )
    assert _files(out) == old and sorted(p.name for p in out.iterdir()) == sorted(old)
