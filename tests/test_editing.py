"""`stylerig edit` / `mix` / `analyze` / `sample --rig --fix` (issue 7) on a tiny generator, DFR and rigs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig import params
from stylerig.editing import (
    EditRequest,
    Sweep,
    build_target,
    describe_params,
    light_sh,
    load_editor,
    mix_codes,
    parse_assignments,
    parse_groups,
    parse_seeds,
    parse_sweep,
    run_edit,
    style_groups,
    style_mix,
)
from stylerig.errors import InputError
from stylerig.rignet import RigNet, save_rignet


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------
# A tiny world: a 16x16 generator (6 ws of width 16) saved to a file, its sample set, a DFR and rigs.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from stylerig.data import SampleSet
    from stylerig.dfr import DFR, save_dfr, ws_statistics
    from stylerig.gan import save_generator
    from stylerig.gan.testing import tiny_generator
    from stylerig.sampling import write_sample_set

    root = tmp_path_factory.mktemp("editing")
    G = tiny_generator(3, 16, z_dim=16, w_dim=16, channel_base=128, channel_max=16)
    gen = save_generator(G, root / "gen.safetensors")
    write_sample_set(root / "set", gen, 24, batch=12, device="cpu", landmarks="none")
    s = SampleSet(root / "set")
    ws = torch.from_numpy(np.array(s.ws, dtype=np.float32))
    mean, std = ws_statistics(ws)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        F = DFR(s.num_ws, s.w_dim, hidden=(16, 16), w_mean=mean, w_std=std)
        torch.nn.init.normal_(F.fc2.weight, 0.0, 0.3)
    dfr = save_dfr(F, root / "dfr.safetensors", metadata={"face_model": {"name": "procedural"}})
    extra = {"dfr": str(dfr), "sample_set": str(root / "set")}
    out = {"root": root, "set": root / "set", "dfr": dfr, "gen": gen}
    for mode in ("pose", "expression", "illumination", "all"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            rig = RigNet(s.num_ws, s.w_dim, mode, latent=4, init_scale=0.0)
        rig.set_statistics(F(ws).detach())
        out[mode] = save_rignet(rig, root / mode / "rig.safetensors", extra)
    return out


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from stylerig_cli.app import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code or 0, " ".join(cap.out.split()), " ".join(cap.err.split())


# ----------------------------------------------------------------------------------------------------
# Parsing and units.


def test_parse_sweep_and_seeds_and_assignments() -> None:
    s = parse_sweep("yaw=-30:30:7")
    assert s.name == "yaw" and s.values == (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0) and s.is_angle
    assert parse_sweep(" smile = 0 : 2 : 3 ").values == (0.0, 1.0, 2.0)
    assert parse_sweep("expr3=1:0:2").values == (1.0, 0.0)
    for bad in ("yaw=-30:30", "yaw-30:30:7", "yaw=a:30:7", "yaw=0:1:1", "yaw=0:1:2.5", "yaw=0:inf:3"):
        with pytest.raises(InputError):
            parse_sweep(bad)
    assert parse_seeds("1,2,5-7") == [1, 2, 5, 6, 7]
    for bad in ("1,,x", "5-3", ""):
        with pytest.raises(InputError):
            parse_seeds(bad)
    assert parse_assignments(["yaw=20,Smile=1.5", "light=left"]) == {
        "yaw": "20",
        "smile": "1.5",
        "light": "left",
    }
    for bad in (["yaw"], ["yaw=1,yaw=2"], ["=3"]):
        with pytest.raises(InputError):
            parse_assignments(bad)
    assert parse_groups("pose,light") == ("illumination", "rotation")
    with pytest.raises(InputError):
        parse_groups("pose,hair")


def test_degrees_at_the_interface_radians_inside() -> None:
    p = params.zeros(2)
    p = params.replace(p, "rotation", torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]]))
    t = build_target(p, EditRequest(angles={"yaw": 30.0}, deltas={"pitch": 10.0}))
    rot = params.get(t, "rotation")
    assert torch.allclose(rot[:, 0], torch.full((2,), math.radians(30.0)))
    assert torch.allclose(rot[:, 1], torch.tensor([0.2 + math.radians(10.0), math.radians(10.0)]))
    assert torch.allclose(rot[:, 2], torch.tensor([0.3, 0.0]))  # untouched
    d = describe_params(t[0])
    assert d["rotation_deg"]["yaw"] == pytest.approx(30.0, abs=1e-3)
    assert d["rotation_deg"]["roll"] == pytest.approx(math.degrees(0.3), abs=1e-3)
    frames = build_target(p[:1], EditRequest(), sweep=Sweep("roll", (-5.0, 5.0)))
    assert torch.allclose(params.get(frames, "rotation")[:, 2], torch.tensor([-5.0, 5.0]) * math.pi / 180)
    with pytest.raises(InputError):
        EditRequest(angles={"yaw": 1.0}, deltas={"yaw": 2.0})
    with pytest.raises(InputError):
        EditRequest(angles={"tilt": 1.0})


def test_named_lights_and_expressions() -> None:
    from stylerig.editing import _light_direction
    from stylerig.face.procedural import EXPRESSION_NAMES

    d = _light_direction(light_sh(azimuth=30.0, elevation=15.0, strength=0.5))
    assert d["azimuth_deg"] == pytest.approx(30.0, abs=0.1) and d["elevation_deg"] == pytest.approx(
        15.0, abs=0.1
    )
    assert d["strength"] == pytest.approx(0.5, abs=1e-3)
    assert torch.equal(light_sh(strength=0.0), torch.zeros(27))
    t = build_target(
        params.zeros(1),
        EditRequest(expression="smile", expr={"jaw_open": 0.5, "expr5": 0.25}, light="left"),
        expression_names=EXPRESSION_NAMES,
    )
    e = params.get(t, "expression")[0]
    assert e[EXPRESSION_NAMES.index("smile")] == 1.5 and e[0] == 0.5 and e[5] == 0.25
    assert _light_direction(params.get(t, "illumination")[0])["azimuth_deg"] < -30
    with pytest.raises(InputError, match="procedural"):
        build_target(params.zeros(1), EditRequest(expression="smile"), expression_names=None)
    with pytest.raises(InputError):
        EditRequest(light="disco")
    with pytest.raises(InputError, match="unknown expression component"):
        build_target(params.zeros(1), EditRequest(expr={"jaw": 1.0}), expression_names=EXPRESSION_NAMES)
    with pytest.raises(InputError, match="outside"):
        build_target(params.zeros(1), EditRequest(expr={"64": 1.0}))


# ----------------------------------------------------------------------------------------------------
# Grids: which cell holds which pair.


def test_pair_grid_puts_each_pair_in_its_cell() -> None:
    from stylerig.viz import grid_cell_origin, pair_grid

    h = w = 8
    S, T = 3, 4

    def solid(r: int, g: int, b: int) -> np.ndarray:
        return np.full((h, w, 3), (r, g, b), np.uint8)

    sources = [solid(200, 10 * i, 0) for i in range(S)]
    targets = [solid(0, 10 * j, 200) for j in range(T)]
    cells = [[solid(100 + 10 * i, 100 + 10 * j, 77) for j in range(T)] for i in range(S)]
    img = pair_grid(sources, targets, cells, [f"s{i}" for i in range(S)], [f"t{j}" for j in range(T)])

    def at(row: int, col: int) -> np.ndarray:
        y, x = grid_cell_origin(row, col, (h, w))
        patch = img[y : y + h, x : x + w].reshape(-1, 3)
        assert (patch == patch[0]).all(), (row, col)  # a whole solid cell, not straddling two
        return patch[0]

    for j in range(T):
        assert tuple(at(0, j + 1)) == (0, 10 * j, 200)  # targets across the top
    for i in range(S):
        assert tuple(at(i + 1, 0)) == (200, 10 * i, 0)  # sources down the left
        for j in range(T):
            assert tuple(at(i + 1, j + 1)) == (100 + 10 * i, 100 + 10 * j, 77)


def test_mix_codes_cell_ij_is_target_j_with_source_i_params(tiny) -> None:
    ed = load_editor([tiny["pose"]], need_generator=False)
    rig = ed.rigs[0]
    with torch.no_grad():  # make the rig depend on its input: decoder reads the normalised pose
        rig.decoder.weight[:, :, rig.latent :].normal_(0.0, 1.0)
    g = torch.Generator().manual_seed(0)
    ws_s, ws_t = torch.randn(3, ed.num_ws, 16, generator=g), torch.randn(4, ed.num_ws, 16, generator=g)
    cells, target = mix_codes(ed, ws_s, ws_t, ("rotation",))
    assert cells.shape == (3, 4, ed.num_ws, 16)
    p_s, p_t = ed.estimate(ws_s), ed.estimate(ws_t)
    for i in range(3):
        for j in range(4):
            want_p = params.replace(p_t[j : j + 1], "rotation", params.get(p_s[i : i + 1], "rotation"))
            assert torch.allclose(target[i, j], want_p[0])
            with torch.no_grad():
                want = rig(ws_t[j : j + 1], want_p)
            assert torch.allclose(cells[i, j], want[0], atol=1e-5)
    assert not torch.allclose(cells[0, 0], cells[1, 0])  # rows (sources) matter
    with pytest.raises(InputError, match="no given rig"):
        mix_codes(ed, ws_s, ws_t, ("expression",))


def test_style_groups_and_mixing() -> None:
    assert style_groups(18) == {"coarse": (0, 1, 2, 3), "middle": (4, 5, 6, 7), "fine": tuple(range(8, 18))}
    assert style_groups(12)["fine"] == (8, 9, 10, 11)
    assert style_groups(6) == {"coarse": (0, 1, 2, 3), "middle": (4, 5)}
    s, t = torch.zeros(2, 6, 3), torch.ones(2, 6, 3)
    m = style_mix(s, t, (4, 5))
    assert (m[:, :4] == 1).all() and (m[:, 4:] == 0).all()


# ----------------------------------------------------------------------------------------------------
# Edit.


def test_edit_to_current_params_returns_the_same_code(tiny) -> None:
    ed = load_editor([tiny["pose"], tiny["expression"]])
    assert ed.world is None and ed.generator_info["path"].endswith("gen.safetensors")
    res = run_edit(ed, seed=5)  # nothing asked: target = F(w)
    assert torch.equal(res.ws_edited, res.ws)  # zero-init decoders: exactly w
    assert torch.allclose(res.p_target, res.p_before)
    assert res.images_before.shape == res.images_after.shape == (1, 3, 16, 16)


def test_briefly_trained_rig_keeps_the_code_at_its_own_params(tiny, one_thread) -> None:
    from stylerig.data import SampleSet
    from stylerig.dfr import load_dfr

    s = SampleSet(tiny["set"])
    F = load_dfr(tiny["dfr"])
    ws = torch.from_numpy(np.array(s.ws, dtype=np.float32))
    with torch.no_grad():
        p = F(ws)
    torch.manual_seed(0)
    rig = RigNet(s.num_ws, s.w_dim, "pose", latent=4, init_scale=1.0)  # far from the identity at start
    rig.set_statistics(p)
    opt = torch.optim.Adam(rig.parameters(), lr=3e-2)
    for _ in range(150):  # L_rec only: what makes rig(w, F(w)) = w
        opt.zero_grad()
        loss = (rig(ws, p) - ws).pow(2).sum(-1).mean()
        loss.backward()
        opt.step()
    rig.eval()
    ed = load_editor([rig], dfr=F, generator=tiny["gen"])
    res = run_edit(ed, latent=ws[3:4])
    rel = float((res.ws_edited - res.ws).norm() / res.ws.norm())
    assert rel < 0.05, rel
    moved = run_edit(ed, latent=ws[3:4], request=EditRequest(deltas={"yaw": 40.0}))
    assert float((moved.ws_edited - moved.ws).norm() / moved.ws.norm()) > rel


def test_cli_edit_writes_images_code_and_json(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e"
    code, stdout, err = _run_cli(
        [
            "edit",
            "--rig",
            str(tiny["pose"]),
            "--rig",
            str(tiny["expression"]),
            "--seed",
            "2",
            "--yaw",
            "25",
            "--delta-pitch",
            "-5",
            "--expression",
            "smile",
            "--expr",
            "jaw_open=0.4",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    for f in ("edited.png", "comparison.png", "edited_ws.npy", "edit.json", "run.json"):
        assert (out / f).is_file(), f
    assert np.load(out / "edited_ws.npy").shape == (6, 16)
    doc = json.loads((out / "edit.json").read_text())
    tgt = doc["frames"][0]["target"]
    assert tgt["rotation_deg"]["yaw"] == pytest.approx(25.0, abs=1e-3)
    before = doc["before"]["dfr"]["rotation_deg"]
    assert tgt["rotation_deg"]["pitch"] == pytest.approx(before["pitch"] - 5.0, abs=1e-2)
    assert tgt["expression"]["smile"] == 1.5 and tgt["expression"]["jaw_open"] == 0.4
    assert "after_dfr" in doc["frames"][0] and doc["requested"]["yaw_deg"] == 25.0
    assert [r["mode"] for r in doc["rigs"]] == ["pose", "expression"]


def test_cli_edit_sweep_and_latent(tiny, tmp_path: Path, capsys) -> None:
    first = tmp_path / "one.png"
    code, _, err = _run_cli(["edit", "-r", str(tiny["pose"]), "--seed", "1", "--out", str(first)], capsys)
    assert code == 0, err
    assert first.is_file() and (tmp_path / "one.npy").is_file() and (tmp_path / "one.json").is_file()
    assert "run" in json.loads((tmp_path / "one.json").read_text())  # file mode: the run record inside
    code, stdout, err = _run_cli(
        [
            "edit",
            "-r",
            str(tiny["all"]),
            "--latent",
            str(tmp_path / "one.npy"),
            "--sweep",
            "yaw=-30:30:5",
            "--light",
            "left",
            "--out",
            str(tmp_path / "sw"),
        ],
        capsys,
    )
    assert code == 0, err
    assert np.load(tmp_path / "sw" / "edited_ws.npy").shape == (5, 6, 16)
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "sw" / "sweep.gif", index=None).shape[0] == 8  # 5 frames there and 3 back
    frames = json.loads((tmp_path / "sw" / "edit.json").read_text())["frames"]
    assert [f["target"]["rotation_deg"]["yaw"] for f in frames] == pytest.approx(
        [-30, -15, 0, 15, 30], abs=1e-3
    )
    assert frames[0]["label"] == "yaw -30°"


def test_cli_edit_warns_outside_training_range(tiny, tmp_path: Path, capsys) -> None:
    code, _, err = _run_cli(
        ["edit", "-r", str(tiny["pose"]), "--seed", "1", "--yaw", "170", "--out", str(tmp_path / "w")], capsys
    )
    assert code == 0
    assert err.count("warning:") == 1 and "yaw 170.0°" in err and "saw" in err


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        (["--seed", "1", "--sweep", "yaw=0:1"], "--sweep"),
        (["--seed", "1", "--light", "disco"], "unknown light"),
        (["--seed", "1", "--latent", "x.npy"], "exactly one"),
        (["--yaw", "3"], "exactly one"),
        (["--seed", "1", "--expression", "smile"], "no given rig controls"),
        (["--seed", "1", "--yaw", "3", "--delta-yaw", "2"], "both"),
        (["--seed", "1", "--expr", "jaw"], "--expr"),
    ],
)
def test_cli_edit_bad_input_is_one_line(tiny, tmp_path: Path, capsys, extra: list[str], what: str) -> None:
    code, _, err = _run_cli(["edit", "-r", str(tiny["pose"]), "--out", str(tmp_path / "x"), *extra], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("error:") and err.count("error:") == 1 and what in err, err


def test_cli_edit_bad_files(tiny, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 16), np.float32))
    for argv, what in (
        (["-r", str(tmp_path / "none"), "--seed", "1"], "not found"),
        (["-r", str(tiny["pose"]), "--latent", str(bad)], "shape"),
        (["-r", str(tiny["pose"]), "-r", str(tiny["all"]), "--seed", "1"], "two rigs control"),
    ):
        code, _, err = _run_cli(["edit", *argv, "--out", str(tmp_path / "y")], capsys)
        assert code == 2 and err.startswith("error:") and what in err, err


# ----------------------------------------------------------------------------------------------------
# Mix, analyze, conditional sampling.


def test_cli_mix_with_baseline(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    code, stdout, err = _run_cli(
        [
            "mix",
            "-r",
            str(tiny["pose"]),
            "-r",
            str(tiny["illumination"]),
            "--source",
            "1,2",
            "--target",
            "3-5",
            "--params",
            "pose,illumination",
            "--baseline",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "coarse ws 0-3, middle ws 4-5" in stdout
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [(c["row"], c["column"], c["source"], c["target"]) for c in doc["cells"]][:4] == [
        (0, 0, 1, 3),
        (0, 1, 1, 4),
        (0, 2, 1, 5),
        (1, 0, 2, 3),
    ]
    assert doc["style_mixing_slots"] == {"coarse": [0, 1, 2, 3], "middle": [4, 5]}
    import imageio.v3 as iio

    img = iio.imread(out)
    # 3 panels (StyleRig, coarse, middle), each 3 rows x 4 columns of 16 px cells plus labels
    assert img.shape[0] > 3 * 16 and img.shape[1] > 3 * (4 * 16)
    code, _, err = _run_cli(
        [
            "mix",
            "-r",
            str(tiny["pose"]),
            "--source",
            "1",
            "--target",
            "2",
            "--params",
            "expression",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 2 and "no given rig controls" in err


def test_cli_analyze(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "an"
    code, stdout, err = _run_cli(
        [
            "analyze",
            "-r",
            str(tiny["pose"]),
            "-r",
            str(tiny["all"]),
            "--data",
            str(tiny["set"]),
            "--out",
            str(out),
            "--pairs",
            "60",
        ],
        capsys,
    )
    assert code == 0, err
    for f in (
        "fig4_slot_change.png",
        "fig4_slot_change.csv",
        "fig4_slot_change.json",
        "fig6_parameters.png",
        "fig6_parameters.csv",
        "fig6_parameters.json",
        "run.json",
    ):
        assert (out / f).is_file(), f
    doc = json.loads((out / "fig4_slot_change.json").read_text())
    assert len(doc["curves"]) == 5  # pose + all: rotation / expression / illumination / joint
    for c in doc["curves"].values():
        assert len(c["mean"]) == 6 and c["n"] == [60]
        assert all(v == 0 for v in c["mean"])  # zero-init rigs do not move the code
    rows = (out / "fig6_parameters.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 + 64 + 27 and rows[1].startswith("rotation,0,yaw,")


def test_slot_profile_finds_the_slots_a_rig_moves(tiny) -> None:
    from stylerig.analysis import draw_pairs, slot_change_profile
    from stylerig.data import SampleSet
    from stylerig.dfr import load_dfr

    s = SampleSet(tiny["set"])
    F = load_dfr(tiny["dfr"])
    rig = RigNet(s.num_ws, s.w_dim, "pose", latent=4, init_scale=0.0)
    with torch.no_grad():
        rig.decoder.weight[1, :, rig.latent :] = 1.0  # only slot 1 reads the pose
    w, v = draw_pairs(len(s), 50, seed=1)
    assert (w != v).all()
    prof = slot_change_profile(rig, F, s.ws, w, v)["pose"]
    assert prof["mean"][1] > 0 and np.count_nonzero(prof["mean"]) == 1


def test_conditional_sampling(tiny, tmp_path: Path, capsys) -> None:
    from stylerig.data import SampleSet

    base = ["sample", "--generator", str(tiny["gen"]), "-n", "4", "--device", "cpu", "--landmarks", "none"]
    assert _run_cli([*base, "--out", str(tmp_path / "plain")], capsys)[0] == 0
    plain = SampleSet(tmp_path / "plain")
    assert "edit" not in plain.manifest["key"] and "conditional" not in plain.manifest  # unchanged format
    code, _, err = _run_cli(
        [*base, "--out", str(tmp_path / "cond"), "--rig", str(tiny["all"]), "--fix", "yaw=20,smile=1"], capsys
    )
    assert code == 0, err
    cond = SampleSet(tmp_path / "cond")
    assert cond.manifest["conditional"]["fixed"] == {"yaw_deg": 20.0, "expr": {"smile": 1.0}}
    assert cond.manifest["key"]["edit"]["rigs"][0]["sha256"]
    # zero-init rig: the codes are unchanged, so the images are too
    assert np.array_equal(np.asarray(cond.ws), np.asarray(plain.ws))
    for argv, what in (
        (["--rig", str(tiny["pose"])], "--fix"),
        (["--fix", "yaw=20"], "--rig"),
        (["--rig", str(tiny["pose"]), "--fix", "light=left"], "no given rig controls"),
        (["--rig", str(tiny["pose"]), "--fix", "yaw=abc"], "not a number"),
    ):
        code, _, err = _run_cli([*base, "--out", str(tmp_path / "bad"), *argv], capsys)
        assert code == 2 and err.startswith("error:") and what in err, err


# ----------------------------------------------------------------------------------------------------
# Input validation (audit): bad .npy files, NaN codes, non-finite truncation, names, conflicts, outputs.


def _bad_npy_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "strings": root / "strings.npy",
        "npz": root / "arch.npz",
        "empty": root / "empty.npy",
        "objects": root / "objects.npy",
        "truncated": root / "truncated.npy",
        "text": root / "text.npy",
    }
    np.save(files["strings"], np.array(["a", "b"]))
    np.savez(files["npz"], a=np.zeros(3))
    files["empty"].write_bytes(b"")
    np.save(files["objects"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(files["truncated"], np.zeros((6, 16), np.float32))
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:60])
    files["text"].write_text("1 2 3\n")
    return files


def test_read_npy_turns_every_bad_file_into_one_error(tmp_path: Path) -> None:
    from stylerig.errors import AssetError
    from stylerig.tensorfile import read_npy

    bad = _bad_npy_files(tmp_path)
    want = {
        "strings": (InputError, "text values"),
        "npz": (AssetError, ".npz archive"),
        "empty": (AssetError, "is empty"),
        "objects": (AssetError, "not a readable .npy"),
        "truncated": (AssetError, "not a readable .npy"),
        "text": (AssetError, "not a .npy file"),
    }
    for name, path in bad.items():
        kind, what = want[name]
        with pytest.raises(kind, match=re.escape(what)) as ex:
            read_npy(path, what="latent", hint="pass a good file")
        assert str(path) in ex.value.message and "\n" not in ex.value.message and ex.value.hint, name
    with pytest.raises(AssetError, match="not found"):
        read_npy(tmp_path / "none.npy", what="latent", hint="h")
    np.save(tmp_path / "ints.npy", np.arange(4))
    out = read_npy(tmp_path / "ints.npy", what="latent", hint="h")
    assert out.dtype == np.float32 and out.tolist() == [0, 1, 2, 3]


def test_load_latent_and_vector_files_reject_unreadable_npy(tmp_path: Path) -> None:
    from stylerig.editing import load_latent
    from stylerig.errors import StylerigError

    for name, path in _bad_npy_files(tmp_path).items():
        with pytest.raises(StylerigError, match="latent file"):
            load_latent(path, 6, 16)
        for field, what in (("expression", "expression file"), ("light", "light file")):
            with pytest.raises(StylerigError, match=what):
                build_target(params.zeros(1), EditRequest(**{field: str(path)}))
        assert name


@pytest.mark.parametrize("flag", ["--latent", "--expression", "--light"])
@pytest.mark.parametrize("kind", ["strings", "npz", "empty"])
def test_cli_edit_bad_npy_is_one_line(tiny, tmp_path: Path, capsys, flag: str, kind: str) -> None:
    path = _bad_npy_files(tmp_path / "in")[kind]
    src = [] if flag == "--latent" else ["--seed", "1"]
    code, _, err = _run_cli(
        ["edit", "-r", str(tiny["all"]), "--out", str(tmp_path / "o"), *src, flag, str(path)], capsys
    )
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert path.name in err and "hint:" in err, err
    assert not (tmp_path / "o").exists()


def test_latent_with_nan_says_so_not_shape(tmp_path: Path) -> None:
    from stylerig.editing import load_latent

    a = np.zeros((6, 16), np.float32)
    a[0, 0], a[2, 3] = np.nan, np.inf
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(InputError) as ex:
        load_latent(tmp_path / "nan.npy", 6, 16)
    assert "2 NaN or infinite values" in ex.value.message and "shape" not in ex.value.message
    np.save(tmp_path / "shape.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(InputError) as ex:
        load_latent(tmp_path / "shape.npy", 6, 16)
    assert "shape [3, 16]" in ex.value.message and "finite" not in ex.value.message
    e = np.zeros(64)
    e[5] = np.nan
    np.save(tmp_path / "e.npy", e)
    with pytest.raises(InputError, match="1 NaN or infinite value"):
        build_target(params.zeros(1), EditRequest(expression=str(tmp_path / "e.npy")))


def test_nonfinite_truncation_is_refused(tiny, tmp_path: Path, capsys) -> None:
    from stylerig.editing import run_mix

    ed = load_editor([tiny["pose"]])
    for psi in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError, match="truncation must be finite"):
            run_edit(ed, seed=1, truncation=psi)
        with pytest.raises(InputError, match="truncation must be finite"):
            run_mix(ed, [1], [2], ("rotation",), truncation=psi)
    for argv in (
        ["edit", "-r", str(tiny["pose"]), "--seed", "1", "--yaw", "5", "--out", str(tmp_path / "e")],
        ["mix", "-r", str(tiny["pose"]), "--source", "1", "--target", "2", "--out", str(tmp_path / "m.png")],
    ):
        code, _, err = _run_cli([*argv, "--truncation", "nan"], capsys)
        assert code == 2 and "truncation must be finite, got nan" in err, err
    assert not (tmp_path / "e").exists() and not (tmp_path / "m.png").exists()


def test_unknown_sweep_component_is_named_before_rig_coverage(tiny) -> None:
    ed = load_editor([tiny["pose"]])
    with pytest.raises(InputError, match="unknown expression component 'banana'"):
        run_edit(ed, seed=1, sweep=parse_sweep("banana=1:2:3"))
    with pytest.raises(InputError, match="unknown expression component 'banana'"):
        run_edit(ed, seed=1, request=EditRequest(expr={"banana": 1.0}))
    with pytest.raises(InputError, match="no given rig controls"):  # a real component: the rig is missing
        run_edit(ed, seed=1, sweep=parse_sweep("smile=1:2:3"))


def test_sweep_conflicting_with_a_fixed_value_is_refused(tiny) -> None:
    from stylerig.face.procedural import EXPRESSION_NAMES

    p = params.zeros(1)
    for req, sweep, clash in (
        (EditRequest(angles={"yaw": 5.0}), "yaw=0:1:3", "--yaw"),
        (EditRequest(deltas={"pitch": 5.0}), "pitch=0:1:3", "--delta-pitch"),
        (EditRequest(light="left"), "light-azimuth=-20:20:3", "--light"),
        (EditRequest(expr={"expr1": 0.5}), "smile=0:1:3", "--expr expr1"),
    ):
        with pytest.raises(InputError, match=f"conflicts with {clash}"):
            build_target(p, req, expression_names=EXPRESSION_NAMES, sweep=parse_sweep(sweep))
    # Other values beside a sweep stay fine.
    t = build_target(p, EditRequest(angles={"pitch": 5.0}, light="left"), sweep=parse_sweep("yaw=0:1:3"))
    assert t.shape == (3, 257)
    ed = load_editor([tiny["all"]])
    with pytest.raises(InputError, match="conflicts with --yaw"):
        run_edit(ed, seed=1, request=EditRequest(angles={"yaw": 5.0}), sweep=parse_sweep("yaw=0:1:3"))


def _folder_state(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_edit_files_land_as_one_set_on_a_full_disk(tiny, tmp_path: Path, monkeypatch) -> None:
    import errno

    import stylerig.outputs as outputs
    from stylerig.editing import write_edit

    ed = load_editor([tiny["all"]])
    out = tmp_path / "e"
    single = run_edit(ed, seed=1, request=EditRequest(angles={"yaw": 10.0}))
    write_edit(single, ed, out)
    old = _folder_state(out)
    assert set(old) == {"edited.png", "comparison.png", "edited_ws.npy", "edit.json", "run.json"}
    sw = parse_sweep("yaw=-10:10:3")
    swept = run_edit(ed, seed=2, sweep=sw)
    real = outputs.atomic_write
    for nth in (1, 2, 3, 4, 5):
        calls: list[Path] = []

        def full_disk(path, data, _n=nth, _calls=calls):
            _calls.append(Path(path))
            if len(_calls) == _n:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, data)

        monkeypatch.setattr(outputs, "atomic_write", full_disk)
        with pytest.raises(OSError):
            write_edit(swept, ed, out, sweep=sw)
        monkeypatch.setattr(outputs, "atomic_write", real)
        assert _folder_state(out) == old, nth  # the earlier edit, whole; no staging folder left
    files = write_edit(swept, ed, out, sweep=sw)
    # The sweep's set replaced the single edit's; its comparison.png did not survive.
    assert set(_folder_state(out)) == {
        "edited.png",
        "sweep.png",
        "sweep.gif",
        "edited_ws.npy",
        "edit.json",
        "run.json",
    }
    assert all(Path(f).parent == out for f in files.values())
    assert np.load(out / "edited_ws.npy").shape == (3, 6, 16)
    assert json.loads((out / "edit.json").read_text())["source"] == {}
    write_edit(single, ed, out)
    assert set(_folder_state(out)) == set(old)  # and back: the sweep's strip and GIF are gone


def test_edit_refuses_another_commands_folder(tiny, tmp_path: Path, capsys) -> None:
    from stylerig.editing import write_edit

    dfr_dir = tmp_path / "dfr"
    dfr_dir.mkdir()
    (dfr_dir / "run.json").write_text(json.dumps({"command": "fit-dfr"}))
    set_dir = tmp_path / "set"
    set_dir.mkdir()
    (set_dir / "manifest.json").write_text("{}")
    np.save(set_dir / "ws.npy", np.zeros((1, 6, 16), np.float32))
    before = {d: _folder_state(d) for d in (dfr_dir, set_dir)}
    ed = load_editor([tiny["pose"]])
    res = run_edit(ed, seed=1)
    for d in (dfr_dir, set_dir):
        with pytest.raises(InputError, match="already holds the outputs"):
            write_edit(res, ed, d)
        with pytest.raises(InputError, match="already holds the outputs"):
            write_edit(res, ed, d / "run.png")  # file mode: its run.json would be overwritten
        code, _, err = _run_cli(["edit", "-r", str(tiny["pose"]), "--seed", "1", "--out", str(d)], capsys)
        assert code == 2 and "already holds the outputs" in err, err
        assert _folder_state(d) == before[d]
    edit_dir = tmp_path / "again"
    write_edit(res, ed, edit_dir)
    write_edit(res, ed, edit_dir)  # a rerun into its own folder is fine
