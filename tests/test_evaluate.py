"""stylerig evaluate / demo: the pose bins, metrics.json's keys, the world-only check, a quick demo end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from stylerig.errors import AssetError
from stylerig.evaluate import (
    ISSUE_KEYS,
    TARGETS,
    PosePairs,
    _section,
    _targets,
    bin_pose_errors,
    evaluate,
    metrics_table,
    pose_pairs,
)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A quick demo (every stage, tiny): ~10 s on a busy 2-core machine."""
    from stylerig.demo import DemoConfig, run_demo

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    try:
        result = run_demo(out, DemoConfig.quick())
    finally:
        torch.set_num_threads(before)
    return out, result


# ----------------------------------------------------------------------------------------------------
# The bins, on fabricated pairs.


def test_bin_pose_errors_by_requested_change():
    # yaw requests of 5, 15, 25, 40 and 60 degrees from 0; each achieves half plus 1 degree of pitch.
    req = torch.tensor([5.0, 15.0, 25.0, 40.0, 60.0])
    before = torch.zeros(5, 3)
    requested = torch.stack([req, torch.zeros(5), torch.zeros(5)], 1)
    achieved = torch.stack([req / 2, torch.ones(5), torch.zeros(5)], 1)
    bins = bin_pose_errors(PosePairs(before=before, requested=requested, achieved=achieved))
    yaw = bins["yaw"]
    assert [b["range"] for b in yaw] == ["0-10", "10-20", "20-30", "30-45", "45+"]
    assert [b["n"] for b in yaw] == [1, 1, 1, 1, 1]
    assert [b["median_abs_err_deg"] for b in yaw] == pytest.approx([2.5, 7.5, 12.5, 20.0, 30.0])
    assert all(b["achieved_over_requested"] == pytest.approx(0.5) for b in yaw)
    # pitch: every request is 0 -> all in the first bin, error 1 degree; the other bins are empty.
    assert bins["pitch"][0]["n"] == 5 and bins["pitch"][0]["median_abs_err_deg"] == pytest.approx(1.0)
    assert bins["pitch"][1]["n"] == 0 and bins["pitch"][1]["median_abs_err_deg"] is None
    assert bins["yaw"][-1]["hi"] is None and math.isfinite(bins["yaw"][0]["hi"])


def test_targets_and_table_on_fabricated_metrics():
    m = {
        "estimator": "world:fast",
        "estimator_info": {"description": "test"},
        "n_pairs": 3,
        "pose": {
            "median_abs_err_deg_within30": {"yaw": 1.0, "pitch": 3.0, "roll": 0.5},
            "median_abs_err_deg": {"yaw": 1.0, "pitch": 3.0, "roll": 0.5},
            "achieved_over_requested": 0.9,
            "err_ratio": 0.2,
            "moved": 1.0,
            "nontarget_drift_ratio": 0.3,
        },
    }
    t = _targets(m)
    assert t["pose.median_abs_err_deg_within30.yaw"]["met"] is True
    assert t["pose.median_abs_err_deg_within30.pitch"]["met"] is False
    assert t["pose.achieved_over_requested"]["met"] is True
    assert t["pose.nontarget_drift_ratio"]["met"] is False
    assert "expression.err_ratio" not in t  # no expression rig: no row
    m["targets"] = t
    md = metrics_table(m)
    assert "| `pose.achieved_over_requested` | 0.900 | – | >= 0.85 | yes |" in md  # no oracle: –
    m["pose"]["oracle"] = {"achieved_over_requested": 0.99, "err_ratio": 0.1}
    md = metrics_table(m)
    assert "| `pose.achieved_over_requested` | 0.900 | 0.990 | >= 0.85 | yes |" in md
    assert "| `pose.err_ratio` | 0.200 | 0.100 | | |" in md


def test_section_nests_the_oracle_like_the_rig():
    flat = {"rotation_err_ratio": 0.3, "yaw_median_err_deg": 2.0, "yaw_transfer_ratio": 0.8}
    assert "oracle" not in _section(flat, "rotation", "rig")  # no oracle keys: no sub-section
    flat |= {
        "oracle_rotation_err_ratio": 0.1,
        "oracle_yaw_median_err_deg": 0.5,
        "oracle_yaw_transfer_ratio": 1.0,
    }
    s = _section(flat, "rotation", "rig")
    assert s["err_ratio"] == 0.3 and s["oracle"]["err_ratio"] == 0.1
    assert s["oracle"]["median_abs_err_deg"]["yaw"] == 0.5 and s["oracle"]["achieved_over_requested"] == 1.0


# ----------------------------------------------------------------------------------------------------
# On the real world, with the quick demo's tiny rig.


def test_demo_quick_writes_everything(demo_dir):
    out, result = demo_dir
    assert [s.name for s in result.stages] == [
        "sample",
        "fit-dfr",
        "train-rignet",
        "mix",
        "analyze",
        "evaluate",
    ]
    for path in result.pictures.values():
        assert path.endswith(".png") and Path(path).exists(), path
    for name in ("metrics.json", "metrics.md", "run.json"):
        assert (out / "evaluate" / name).exists()
    assert json.loads((out / "demo.json").read_text())["stages"][0]["name"] == "sample"
    from stylerig.dfr import load_dfr
    from stylerig.worlds.prior import used_coefficients

    F = load_dfr(out / "dfr" / "dfr.safetensors")  # the demo's DFR holds what the world never draws
    assert F.confined and torch.equal(F.p_keep.bool(), used_coefficients())


def test_metrics_json_has_the_issue_keys(demo_dir):
    out, _ = demo_dir
    m = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert m["estimator"] in ("world:fast", "world:fit")
    if m["estimator"] == "world:fast":  # the judge is recorded: which files, each one's factors
        files = m["estimator_info"]["files"]
        assert files[0]["file"] == "world-estimator.safetensors" and files[0]["answers_for"] == "all"
        assert all(len(f["sha256"]) == 64 for f in files)
        from stylerig.worlds.estimator import EYE_ESTIMATOR_FILE

        if EYE_ESTIMATOR_FILE.is_file():
            assert files[1] == {
                "file": EYE_ESTIMATOR_FILE.name,
                "sha256": files[1]["sha256"],
                "answers_for": ["eye_close"],
            }
    for a in ("yaw", "pitch", "roll"):
        assert isinstance(m["pose"]["median_abs_err_deg"][a], float)
    for key in ISSUE_KEYS:
        section, name = key.split(".")
        assert isinstance(m[section][name], float), key
    for mode in ("expression", "illumination"):  # the share of the request that arrived, and the oracle's
        assert isinstance(m[mode]["achieved_over_requested"], float), mode
        assert isinstance(m[mode]["oracle"]["achieved_over_requested"], float), mode
        assert f"`{mode}.achieved_over_requested`" in (out / "evaluate" / "metrics.md").read_text()
    assert set(m["targets"]) == set(TARGETS)  # an `all` rig: every target has a number
    bins = m["pose"]["by_requested_change"]
    assert sum(b["n"] for b in bins["yaw"]) == m["n_pairs"]
    assert "joint" in m and "floor" in m and m["anchor"]
    lm = m["expression"]["landmark_rmse_px"]
    assert lm["before"] >= 0 and lm["after"] >= 0
    # The image change outside the face: measured for every edited group, for the rig and the oracle.
    for section in ("pose", "expression", "illumination"):
        o = m[section]["image_change_outside_face"]
        assert 0 <= o["mean"] < 2 and 0 <= o["oracle_mean"] < 2, section
    assert "image_change_outside_face" in (out / "evaluate" / "metrics.md").read_text()
    # The perfect edit (oracle) is measured for every group of the world's sample set.
    for section in ("pose", "expression", "illumination"):
        assert isinstance(m[section]["oracle"]["err_ratio"], float), section
    assert m["pose"]["oracle"]["achieved_over_requested"] > 0.5  # the oracle really turns the head
    # The light by SH term: the world varies the constant band and the three linear terms, and no other.
    by_term = m["illumination"]["err_ratio_by_sh_term"]
    assert set(by_term) == {"constant", "y", "z", "x"}
    assert set(m["illumination"]["oracle"]["err_ratio_by_sh_term"]) == set(by_term)
    assert "illumination.err_ratio_by_sh_term.x" in (out / "evaluate" / "metrics.md").read_text()
    # The expression by the world's named components (one expression coefficient per factor).
    by_comp = m["expression"]["err_ratio_by_component"]
    assert set(by_comp) == {"jaw_open", "smile", "eye_close", "brow_raise", "smile_asym", "mouth_stretch"}
    assert set(m["expression"]["oracle"]["err_ratio_by_component"]) == set(by_comp)


def test_pose_pairs_agree_with_evaluate_on_world(demo_dir):
    from stylerig.data import SampleSet
    from stylerig.dfr import load_dfr
    from stylerig.rignet import load_rignet

    out, _ = demo_dir
    m = json.loads((out / "evaluate" / "metrics.json").read_text())
    rig, F = load_rignet(out / "rig"), load_dfr(out / "dfr" / "dfr.safetensors")
    pairs = pose_pairs(rig, F, SampleSet(out / "samples"), n_pairs=m["n_pairs"])
    err = (pairs.achieved - pairs.requested).abs().median(0).values
    for j, a in enumerate(("yaw", "pitch", "roll")):
        assert float(err[j]) == pytest.approx(m["pose"]["median_abs_err_deg"][a], abs=1e-4)


def test_non_world_generator_is_one_clear_error(demo_dir, tmp_path, capsys):
    from stylerig_cli.app import main

    out, _ = demo_dir
    # A generator file is read by the image fit (tests/test_image_fit.py); a missing one is one clear error.
    with pytest.raises(AssetError, match="generator file not found") as ex:
        evaluate([out / "rig"], generator="ffhq.pkl", out_dir=tmp_path)
    assert ex.value.hint and "built-in world" in ex.value.hint
    with pytest.raises(SystemExit) as ex2:
        main(["evaluate", "--rig", str(out / "rig"), "--generator", "ffhq.pkl", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert ex2.value.code == 2 and "not found" in err and "hint:" in err
    assert not (tmp_path / "metrics.json").exists()


def test_demo_rerun_skips_and_cli_evaluate(demo_dir, capsys, tmp_path):
    from stylerig_cli.app import main

    out, _ = demo_dir
    with pytest.raises(SystemExit) as ex:
        main(["demo", "--quick", "--out", str(out), "--threads", "1"])
        raise SystemExit(0)
    assert (ex.value.code or 0) == 0
    shown = capsys.readouterr().out
    assert "skipped" in shown and "pose.achieved_over_requested" in shown and "mix_pose" in shown
    stages = json.loads((out / "demo.json").read_text())["stages"]
    assert all(s["skipped"] for s in stages)
    with pytest.raises(SystemExit) as ex:
        main(
            [
                "evaluate",
                "--rig",
                str(out / "rig"),
                "--n-pairs",
                "4",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        raise SystemExit(0)
    assert (ex.value.code or 0) == 0
    assert "pose.achieved_over_requested" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["n_pairs"] == 4


def test_evaluate_reports_progress_while_it_measures(demo_dir, tmp_path):
    from stylerig.evaluate import evaluate

    out, _ = demo_dir
    said: list[str] = []
    evaluate([out / "rig"], n_pairs=2, out_dir=tmp_path, method="fast", log=said.append)
    assert any("estimated" in m and "images" in m for m in said)  # not silent on a long measurement


def test_oracle_codes_swap_exactly_the_groups_factors(demo_dir):
    """The perfect edit: the mapping of the source's factors with the group's factors from the partner."""
    import numpy as np

    from stylerig.data import SampleSet
    from stylerig.training.rignet import oracle_codes
    from stylerig.worlds import load_world
    from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES

    out, _ = demo_dir
    data, world = SampleSet(out / "samples"), load_world()
    w_rows, v_rows = np.array([0, 1, 2]), np.array([3, 4, 5])
    codes = oracle_codes(world, data, w_rows, v_rows, [("rotation",), ("expression", "illumination")])
    assert codes is not None and [tuple(c.shape) for c in codes] == [(3, world.generator.num_ws, 512)] * 2
    z_w, z_v = world.z(data.seeds[w_rows]), world.z(data.seeds[v_rows])
    z = z_w.clone()
    z[:, :3] = z_v[:, :3]  # yaw, pitch, roll are the first three factors
    torch.testing.assert_close(codes[0], world.generator.mapping(z, None, truncation_psi=1))
    assert not torch.allclose(codes[0], world.generator.mapping(z_w, None, truncation_psi=1))
    # the second edit swaps both groups: the truth of its factors has the partner's light and expression
    z2 = z_w.clone()
    for names in ("expression", "illumination"):
        idx = [FACTOR_NAMES.index(n) for n in FACTOR_GROUPS[names]]
        z2[:, idx] = z_v[:, idx]
    torch.testing.assert_close(codes[1], world.generator.mapping(z2, None, truncation_psi=1))

    class NotWorld:  # a set whose codes are not its seeds' world codes: no oracle
        seeds = data.seeds
        ws = data.ws[:] + 0.5

    assert oracle_codes(world, NotWorld(), w_rows, v_rows, [("rotation",)]) is None


def test_outside_change_is_zero_for_a_no_op_edit(demo_dir):
    """A rig that returns w unchanged moves no pixel outside (or inside) the face; the oracle does."""
    from stylerig.data import SampleSet
    from stylerig.dfr import load_dfr
    from stylerig.evaluate import edit_pairs

    out, _ = demo_dir

    class NoOp:
        groups = ("illumination",)
        mode = "illumination"

        def cpu(self):
            return self

        def eval(self):
            return self

        def __call__(self, ws, p, p_current=None):
            return ws

    pairs = edit_pairs(
        NoOp(),
        load_dfr(out / "dfr" / "dfr.safetensors"),
        SampleSet(out / "samples"),
        ["illumination"],
        n_pairs=4,
        outside_change=True,
    )["illumination"]
    # (up to float noise: the generator runs the codes in different batches)
    assert pairs.outside_change.shape == (4,) and float(pairs.outside_change.abs().max()) < 1e-5
    assert float(pairs.oracle_outside_change.max()) > 1e-2  # the perfect light edit changes the hair/shirt


def test_a_shared_reader_generates_each_image_once_and_reads_the_same(demo_dir):
    """evaluate's per-pair pass and evaluate_on_world measure the same edits; one WorldReader makes the
    second generate only the joint edits (rig and perfect), and changes no number."""
    from stylerig.data import SampleSet
    from stylerig.dfr import load_dfr
    from stylerig.evaluate import edit_pairs
    from stylerig.rignet import load_rignet
    from stylerig.training.rignet import WorldReader, evaluate_on_world
    from stylerig.worlds import load_world

    out, _ = demo_dir
    rig, F, data = (
        load_rignet(out / "rig"),
        load_dfr(out / "dfr" / "dfr.safetensors"),
        SampleSet(out / "samples"),
    )
    assert rig.groups == ("rotation", "expression", "illumination")
    n = 6
    fresh = evaluate_on_world(rig, F, data, n_pairs=n, method="fast")
    reader = WorldReader(load_world(), "fast")
    pairs = edit_pairs(rig, F, data, list(rig.groups), n_pairs=n, outside_change=True, reader=reader)
    assert set(pairs) == set(rig.groups)
    first = reader.n_generated
    shared = evaluate_on_world(rig, F, data, n_pairs=n, reader=reader)
    assert reader.n_generated - first == 2 * n  # the joint edit and its perfect edit, nothing else
    assert shared == fresh
    ws = torch.from_numpy(data.ws[:3].astype("float32"))
    a = reader(ws)
    a += 1.0  # a caller's change to what it got back does not reach what the reader remembers
    torch.testing.assert_close(reader(ws), a - 1.0, rtol=0, atol=1e-6)
    assert reader.n_generated - first == 2 * n + 3


def test_evaluate_measures_on_the_rows_the_rig_held_out(demo_dir, tmp_path):
    """Without --seed, evaluate uses the rig's training seed (which chose its held-out split)."""
    from stylerig.evaluate import training_seed
    from stylerig.rignet import load_rignet

    out, _ = demo_dir
    rig = load_rignet(out / "rig")
    assert training_seed(rig) == 0
    rig.extra_config = {**rig.extra_config, "config": {**rig.extra_config["config"], "seed": 3}}
    assert training_seed(rig) == 3
    m = evaluate(
        [rig], out / "dfr" / "dfr.safetensors", out / "samples", n_pairs=3, out_dir=tmp_path / "e"
    ).metrics
    assert m["seed"] == 3
    # The demo's DFR was fitted with split seed 0: seed 3's held-out rows include some it trained on.
    notes = [n for n in m.get("notes", []) if "DFR's training rows" in n]
    assert len(notes) == 1 and "pass --seed 0" in notes[0], m.get("notes")
    assert "DFR's training rows" in (tmp_path / "e" / "metrics.md").read_text()
    rig.extra_config = {}
    assert training_seed(rig) == 0
    m = evaluate(
        [rig], out / "dfr" / "dfr.safetensors", out / "samples", n_pairs=3, out_dir=tmp_path / "f"
    ).metrics
    assert not any("DFR's training rows" in n for n in m.get("notes", []))  # the same split: no note
