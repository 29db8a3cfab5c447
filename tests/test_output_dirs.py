"""Output folders: one command's outputs are never written over another's, and a set of files lands
whole or not at all."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from _dfr_data import write_tiny_set

from stylerig.demo import _read_metrics, _verify_output
from stylerig.dfr import DFR, load_dfr, save_dfr
from stylerig.errors import AssetError, InputError
from stylerig.outputs import claim_output_dir, staged_outputs, write_json, write_run_json


def test_a_folder_is_claimed_by_its_own_command_only(tmp_path: Path) -> None:
    assert claim_output_dir(tmp_path / "new", "fit-dfr") == tmp_path / "new"  # nothing is created
    assert not (tmp_path / "new").exists()
    rig = tmp_path / "rig"
    write_run_json(rig, "train-rignet", {})
    assert claim_output_dir(rig, "train-rignet") == rig  # a rerun or a resume
    with pytest.raises(InputError, match="train-rignet") as e:
        claim_output_dir(rig, "fit-dfr")
    assert "another --out" in (e.value.hint or "")
    assert claim_output_dir(rig, "fit-dfr", accept=("train-rignet",)) == rig
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        claim_output_dir(tmp_path / "file", "fit-dfr")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable run.json"):
        claim_output_dir(broken, "fit-dfr")
    sample_set = tmp_path / "set"  # a set written before run.json existed: its manifest and arrays
    sample_set.mkdir()
    (sample_set / "manifest.json").write_text("{}")
    (sample_set / "ws.npy").write_bytes(b"")
    with pytest.raises(InputError, match="stylerig sample"):
        claim_output_dir(sample_set, "analyze")


def test_fit_dfr_refuses_a_rig_folder_before_writing(tmp_path: Path, tiny_face) -> None:
    from stylerig.training.dfr import DFRConfig, fit_dfr

    data = write_tiny_set(tmp_path / "set", tiny_face)
    rig = tmp_path / "rig"
    write_run_json(rig, "train-rignet", {})
    before = (rig / "run.json").read_bytes()
    with pytest.raises(InputError, match="train-rignet"):
        fit_dfr(data, rig, config=DFRConfig(steps=2, batch=4), device="cpu", face_model=tiny_face)
    assert sorted(p.name for p in rig.iterdir()) == ["run.json"]
    assert (rig / "run.json").read_bytes() == before
    with pytest.raises(InputError, match="stylerig sample"):  # nor the sample set it reads
        fit_dfr(data, data, config=DFRConfig(steps=2, batch=4), device="cpu", face_model=tiny_face)


def test_staged_outputs_land_together_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    with staged_outputs(out) as stage:
        write_json(stage / "a.json", {"run": 1})
        write_json(stage / "sub" / "b.json", {"run": 1})
    assert json.loads((out / "a.json").read_text()) == {"run": 1}
    assert json.loads((out / "sub" / "b.json").read_text()) == {"run": 1}

    # The second run fills the disk after its first file: the first run's files stay, both of them.
    import stylerig.outputs as outputs

    real, calls = outputs.os.fdopen, []

    def full_disk(fd, *a, **k):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, *a, **k)

    monkeypatch.setattr(outputs.os, "fdopen", full_disk)
    with pytest.raises(AssetError, match="No space left"), staged_outputs(out) as stage:
        write_json(stage / "a.json", {"run": 2})
        write_json(stage / "sub" / "b.json", {"run": 2})
    assert json.loads((out / "a.json").read_text()) == {"run": 1}
    assert json.loads((out / "sub" / "b.json").read_text()) == {"run": 1}
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "sub"]  # no staging folder left behind


def test_the_demo_does_not_skip_a_damaged_stage(tmp_path: Path) -> None:
    path = save_dfr(DFR(2, 8, (4,)), tmp_path / "dfr.safetensors")
    _verify_output("fit-dfr", lambda: load_dfr(path))  # a good output passes
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AssetError, match="fit-dfr stage .* damaged") as e:
        _verify_output("fit-dfr", lambda: load_dfr(path))
    assert "delete" in (e.value.hint or "")
    (tmp_path / "metrics.json").write_text('{"pose": ')
    with pytest.raises(AssetError, match="metrics.json"):
        _read_metrics(tmp_path / "metrics.json")


def test_fit_dfr_calls_a_target_it_cannot_measure_not_measured(tmp_path: Path, tiny_face) -> None:
    from stylerig.training.dfr import DFRConfig, fit_dfr

    data = write_tiny_set(tmp_path / "set", tiny_face)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["generator"] = {"path": None, "world": True}  # a world set ...
    del manifest["arrays"]["params"]  # ... without its truth
    (data / "params.npy").unlink()
    (data / "manifest.json").write_text(json.dumps(manifest))
    cfg = DFRConfig(steps=4, batch=4, val_every=0, checkpoint_every=0, landmark_steps=2, photo_ramp=1)
    res = fit_dfr(data, tmp_path / "dfr", config=cfg, device="cpu", face_model=tiny_face)
    targets = res.metrics["targets"]
    assert targets["rotation_median_deg_yaw"] == {"target": "<= 1.5", "measured": False, "met": False}
    assert targets["psnr_mask_db"]["measured"] is True


def test_refusals_name_commands_as_they_are_typed(tmp_path: Path) -> None:
    write_run_json(tmp_path, "stylerig.worlds.train", {})
    with pytest.raises(
        InputError, match="`stylerig world build`; `python -m stylerig.worlds.estimator_train`"
    ):
        claim_output_dir(tmp_path, "stylerig.worlds.estimator_train")


def test_staged_outputs_clear_what_a_killed_run_left(tmp_path: Path) -> None:
    import os
    import time

    old, live = tmp_path / ".staging-old", tmp_path / ".staging-live"
    for d in (old, live):
        d.mkdir()
        (d / "big.png").write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))  # two hours old: a killed run's
    with staged_outputs(tmp_path) as stage:
        write_json(stage / "a.json", {})
    assert not old.exists() and live.exists()  # a recent one may belong to a run still going


def test_the_demo_says_how_to_redo_a_damaged_sample_set(tmp_path: Path, monkeypatch) -> None:
    import stylerig.sampling
    from stylerig.demo import run_demo

    def damaged(*a, **k):
        raise AssetError("runs/demo/samples holds this sample set but it is damaged", hint="pass --force")

    monkeypatch.setattr(stylerig.sampling, "write_sample_set", damaged)
    with pytest.raises(AssetError, match="sample stage") as e:
        run_demo(tmp_path / "demo")
    assert "delete" in (e.value.hint or "") and "--force" not in (e.value.hint or "")
