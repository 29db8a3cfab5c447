"""The command line: help, version, doctor, render-demo, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylerig_cli.app import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ex.value.code or 0, cap.out, cap.err


def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and "stylerig" in out
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "render-demo" in out and "doctor" in out


def test_doctor_lists_every_area(capsys):
    code, out, _ = run(["doctor"], capsys)
    assert code == 0
    for area in ("compute", "renderer", "landmarks", "face models", "generators"):
        assert area in out
    assert "nvdiffrast" in out and "fix:" in out


def test_doctor_says_when_omp_wait_policy_slows_a_lone_run(capsys, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    code, out, _ = run(["doctor"], capsys)
    assert code == 0 and "OMP_WAIT_POLICY" not in out
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    code, out, _ = run(["doctor"], capsys)
    assert code == 0 and "OMP_WAIT_POLICY=PASSIVE" in out and "unset OMP_WAIT_POLICY" in out


def test_doctor_refuses_a_search_folder_that_is_not_there(tmp_path, capsys):
    code, out, err = run(["doctor", "--search", str(tmp_path / "nope")], capsys)
    text = " ".join((out + err).split())  # the console wraps long lines
    assert code == 2 and "does not exist" in text and "Traceback" not in text
    (tmp_path / "f").write_text("x")
    code, out, err = run(["doctor", "--search", str(tmp_path / "f")], capsys)
    assert code == 2 and "is a file" in " ".join((out + err).split())
    code, out, _ = run(["doctor", "--search", str(tmp_path)], capsys)
    assert code == 0


def test_render_demo_writes_grid_and_record(tmp_path, tiny_face, capsys):
    fm_path = tmp_path / "tiny.safetensors"
    tiny_face.save(fm_path)
    out = tmp_path / "demo"
    code, stdout, err = run(
        [
            "render-demo",
            "--face-model",
            str(fm_path),
            "--out",
            str(out),
            "--resolution",
            "32",
            "--columns",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    import imageio.v3 as iio

    grid = iio.imread(out / "sweep.png")
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.dtype == np.uint8
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["command"] == "render-demo"
    assert run_json["assets"]["face_model"]["name"] == "tiny-test-sphere"
    assert (out / "mean.png").is_file()


def test_readme_main_command_runs_on_the_builtin_model(tmp_path, capsys):
    """README command 1 (`stylerig render-demo`) with the built-in face model, at a small size."""
    out = tmp_path / "demo"
    code, stdout, err = run(
        ["render-demo", "--out", str(out), "--resolution", "32", "--columns", "2"], capsys
    )
    assert code == 0, err
    assert "rendered" in stdout and (out / "sweep.png").is_file()
    import json

    assert json.loads((out / "run.json").read_text())["assets"]["face_model"]["name"] == "procedural"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["render-demo", "--face-model", "/nonexistent/model.mat"], "not found"),
        (["render-demo", "--device", "cuda:7"], "CUDA"),
        (["render-demo", "--resolution", "3"], "resolution"),
        (["no-such-command"], "No such command"),
        (["world", "build"], "--minutes or --steps"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, needle, capsys, tmp_path):
    import torch

    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code, out, err = run([*argv, "--out", str(tmp_path)] if argv[0] == "render-demo" else argv, capsys)
    assert code == 2
    assert needle in err + out
    assert "Traceback" not in err + out


def test_corrupt_face_model_file(tmp_path, capsys):
    bad = tmp_path / "BFM_model_front.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
    code, _, err = run(["render-demo", "--face-model", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "sweep.png").exists()


def test_bad_critic_and_group_weights_exit_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "world"
    code, stdout, err = run(
        ["world", "build", "--out", str(out), "--steps", "1", "--critic", str(tmp_path / "none.safetensors")],
        capsys,
    )
    assert code == 2 and "no such file" in err + stdout and "Traceback" not in err + stdout
    assert not out.exists()  # nothing written
    dfr = tmp_path / "dfr.safetensors"
    dfr.write_bytes(b"")
    rig = tmp_path / "rig"
    argv = ["train-rignet", "--data", str(tmp_path), "--dfr", str(dfr), "--mode", "all", "--out", str(rig)]
    code, stdout, err = run([*argv, "--group-weight", "mood=1"], capsys)
    assert code == 2 and "bad group weight" in err + stdout and "Traceback" not in err + stdout
    assert not rig.exists()


def test_demo_help_states_the_real_defaults(capsys, monkeypatch):
    from stylerig.demo import DemoConfig

    monkeypatch.setenv("COLUMNS", "200")  # one help line per option
    code, out, _ = run(["demo", "--help"], capsys)
    cfg = DemoConfig()
    assert code == 0
    for text in (
        f"Sample set size (default {cfg.n_samples})",
        f"DFR steps (default {cfg.dfr_steps})",
        f"RigNet steps (default {cfg.rig_steps})",
        f"RigNet pairs per step (default {cfg.rig_batch})",
        f"Held-out pairs per edit (default {cfg.eval_pairs})",
    ):
        assert text in out, text


def test_demo_refuses_a_renderer_it_cannot_use_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    for choice, said in (("nvdiffrast", "needs CUDA"), ("opengl", "unknown renderer backend")):
        code, stdout, err = run(["demo", "--quick", "--out", str(out), "--renderer", choice], capsys)
        assert code == 2 and said in err + stdout and "Traceback" not in err + stdout, choice
        assert not out.exists()  # refused before the sample stage wrote anything


def test_sample_threads_and_world_build_intervals_reach_the_library(tmp_path, capsys, monkeypatch):
    import torch

    import stylerig.sampling
    import stylerig.worlds.train

    threads, configs = [], []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # leave the suite's own threads alone

    class Stop(Exception):
        pass

    def fake_sample(*args, **kw):
        raise Stop

    monkeypatch.setattr(stylerig.sampling, "write_sample_set", fake_sample)
    with pytest.raises(Stop):
        main(["sample", "--out", str(tmp_path / "s"), "-n", "2", "--threads", "1"])
    assert threads == [1]
    monkeypatch.setattr(
        stylerig.worlds.train, "train_world_generator", lambda *a, config=None, **kw: configs.append(config)
    )
    code, _, err = run(
        ["world", "build", "--out", str(tmp_path / "w"), "--steps", "3", "--eval-every", "0",
         "--checkpoint-every", "7", "--threads", "1", "--device", "auto"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert (configs[0].eval_every, configs[0].checkpoint_every, configs[0].threads) == (0, 7, 1)
    assert configs[0].device == "auto"


def _command_callbacks():
    """(name, callback) of every command, sub-apps included."""
    from stylerig_cli.app import _register, app

    _register()
    todo, out = [app], []
    while todo:
        a = todo.pop()
        out += [(c.name or c.callback.__name__, c.callback) for c in a.registered_commands]
        todo += [g.typer_instance for g in a.registered_groups]
    return out


def test_every_option_names_its_flag_where_typer_could_take_the_metavar():
    """typer 0.27.2 names an option without flags after a metavar equal to its parameter's name in capitals
    (``--DFR``, ``--LR``): `stylerig evaluate --dfr` then failed. Such options must spell out their flag."""
    import typing

    from typer.models import OptionInfo

    callbacks = _command_callbacks()
    assert len(callbacks) >= 12
    bad = []
    for name, cb in callbacks:
        for pname, hint in typing.get_type_hints(cb, include_extras=True).items():
            for info in getattr(hint, "__metadata__", ()):
                if not isinstance(info, OptionInfo):
                    continue
                # in Annotated, typer takes a first positional flag as the default
                flags = [
                    *(info.param_decls or ()),
                    *([info.default] if isinstance(info.default, str) else []),
                ]
                if (
                    not any(f.startswith("-") for f in flags)
                    and (info.metavar or "").lower() == pname.lower()
                ):
                    bad.append(f"{name} {pname}")
    assert not bad, f"options without an explicit flag whose metavar is their name: {bad}"
