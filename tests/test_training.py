"""stylerig.training: schedule, data order, checkpoints, exact resume, Ctrl-C, torchrun/DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _dfr_data import write_tiny_set

from stylerig.errors import AssetError, InputError
from stylerig.tensorfile import load_tensors, save_tensors
from stylerig.training import Trainer, TrainerConfig, batch_rows, lr_factor
from stylerig.training.dfr import DFRConfig, fit_dfr

REPO = Path(__file__).resolve().parents[1]


class ToyTask:
    """Noisy linear regression: uses the trainer's RNG, so an exact resume must restore it."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(40, 5, generator=g)
        self.y = self.x @ torch.randn(5, 2, generator=g)

    def loss(self, model, rows, step, rng):
        x = self.x[torch.from_numpy(rows)]
        noise = 0.1 * torch.randn(x.shape, generator=rng)
        loss = (model(x + noise) - self.y[torch.from_numpy(rows)]).square().mean()
        return loss, {"mse": float(loss.detach())}

    def validate(self, model, step):
        return {"val_mse": float((model(self.x) - self.y).square().mean())}


def toy_trainer(out: Path, steps: int = 12, **kw) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainerConfig(steps=steps, batch=8, lr=0.05, warmup=2, checkpoint_every=4, log_every=1, **kw)
    return Trainer(torch.nn.Linear(5, 2), ToyTask(), np.arange(40), cfg, out)


def test_lr_schedule() -> None:
    cfg = TrainerConfig(steps=100, batch=1, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(99, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert lr_factor(50, TrainerConfig(steps=100, batch=1, lr=1.0, schedule="constant")) == 1.0


def test_second_warmup_ramps_the_schedule_from_its_step() -> None:
    plain = TrainerConfig(steps=100, batch=1, lr=1.0, warmup=10, min_lr_ratio=0.1)
    re = TrainerConfig(steps=100, batch=1, lr=1.0, warmup=10, min_lr_ratio=0.1, rewarm_at=40, rewarm=10)
    for step in range(100):  # brute force: the plain schedule times a ramp over steps 40..49
        ramp = (step - 39) / 10 if 40 <= step < 50 else 1.0
        assert lr_factor(step, re) == pytest.approx(ramp * lr_factor(step, plain))
    assert lr_factor(40, re) == pytest.approx(0.1 * lr_factor(40, plain))
    with pytest.raises(InputError, match="rewarm"):
        TrainerConfig(steps=10, batch=1, lr=1.0, rewarm=-1).check()
    cfg = DFRConfig()
    assert (cfg.trainer_config().rewarm_at, cfg.trainer_config().rewarm) == (
        cfg.photo_start,
        cfg.photo_ramp,
    )
    off = DFRConfig(photo_rewarm=False).trainer_config()
    assert (off.rewarm_at, off.rewarm) == (0, 0)


def test_checkpoint_from_before_rewarm_still_resumes(tmp_path: Path) -> None:
    toy_trainer(tmp_path, steps=4).fit()
    path = tmp_path / "checkpoint.safetensors"
    tensors, meta = load_tensors(path, what="x", hint="y")
    config = json.loads(meta["config"])
    for key in ("rewarm_at", "rewarm"):  # an older checkpoint has neither
        del config["trainer"][key]
    save_tensors(path, tensors, {**meta, "config": json.dumps(config)})
    res = toy_trainer(tmp_path, steps=6).fit()
    assert res.resumed_from == 4 and res.step == 6
    with pytest.raises(InputError, match="other settings"):  # but a run that now re-warms is another run
        toy_trainer(tmp_path, steps=8, rewarm_at=5, rewarm=2).fit()


def test_batch_rows_is_a_pure_function_covering_each_epoch() -> None:
    rows = np.arange(100, 130)
    epoch = np.concatenate([batch_rows(rows, s, 10, seed=3) for s in range(3)])
    assert sorted(epoch.tolist()) == rows.tolist()  # 3 steps of 10 = one permutation
    assert (batch_rows(rows, 4, 10, seed=3) == batch_rows(rows, 4, 10, seed=3)).all()
    assert not (batch_rows(rows, 0, 10, seed=3) == batch_rows(rows, 3, 10, seed=3)).all()  # a new epoch
    with pytest.raises(InputError):
        batch_rows(rows, 0, 31, seed=0)


def test_trainer_checkpoint_log_and_validation(tmp_path: Path) -> None:
    res = toy_trainer(tmp_path).fit()
    assert res.step == 12 and not res.interrupted and "val_mse" in res.validation
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == list(range(1, 13))
    assert lines[-1]["kind"] == "val"
    tensors, meta = load_tensors(tmp_path / "checkpoint.safetensors", what="x", hint="y")
    assert meta["format"] == "stylerig.train-checkpoint" and meta["step"] == "12"
    assert {"model.weight", "rng.torch", "rng.task"} <= set(tensors)
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)


def _interrupt_at(step: int):
    def progress(s, total, record):
        if s == step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    return progress


def test_ctrl_c_saves_and_resume_is_exact(tmp_path: Path) -> None:
    whole = toy_trainer(tmp_path / "whole")
    whole.fit()
    part = toy_trainer(tmp_path / "part")
    res = part.fit(progress=_interrupt_at(5))
    assert res.interrupted and res.step == 5
    stored = load_tensors(tmp_path / "part" / "checkpoint.safetensors", what="x", hint="y")[1]
    assert stored["step"] == "5"
    torch.manual_seed(123)  # a different global RNG state before resuming: the checkpoint restores it
    again = toy_trainer(tmp_path / "part")
    res = again.fit(resume=True)
    assert res.resumed_from == 5 and res.step == 12 and not res.interrupted
    for a, b in zip(whole.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    log = [json.loads(s) for s in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 13))  # no duplicates


def test_fused_adam_is_the_loops_update_and_a_run_resumes_across_it(tmp_path: Path) -> None:
    """The default optimizer is Adam's fused kernel; it updates as the per-tensor loop does (to rounding),
    and a run started with one resumes with the other (``fused`` is a free setting)."""
    fused, loop = toy_trainer(tmp_path / "f"), toy_trainer(tmp_path / "l", fused=False)
    assert fused.optimizer.param_groups[0]["fused"] is True and not loop.optimizer.param_groups[0]["fused"]
    fused.fit()
    loop.fit()
    for a, b in zip(fused.model.state_dict().values(), loop.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    part = toy_trainer(tmp_path / "p", steps=5, fused=False)
    part.fit()
    res = toy_trainer(tmp_path / "p", steps=12).fit(resume=True)
    assert res.resumed_from == 5 and res.step == 12


def test_resume_refuses_other_settings_and_bad_checkpoints(tmp_path: Path) -> None:
    toy_trainer(tmp_path, steps=4).fit()
    with pytest.raises(InputError, match="other settings"):
        toy_trainer(tmp_path, steps=8, weight_decay=0.1).fit()
    toy_trainer(tmp_path, steps=6).fit()  # more steps: allowed
    (tmp_path / "checkpoint.safetensors").write_bytes(b"junk")
    with pytest.raises(AssetError):
        toy_trainer(tmp_path, steps=8).fit()
    res = toy_trainer(tmp_path, steps=3).fit(resume=False)  # --no-resume starts afresh
    assert res.resumed_from == 0 and res.step == 3


def _dfr_config(**kw) -> DFRConfig:
    base = dict(steps=8, batch=4, lr=2e-3, warmup=0, hidden=(16, 16), landmark_steps=3, photo_rows=2)
    base.update(val_every=0, val_rows_quick=2, log_every=1, checkpoint_every=3, grid_rows=2)
    base.update(kw)
    return DFRConfig(**base)


def test_fit_dfr_interrupted_and_resumed_ends_bitwise_equal(tmp_path: Path, tiny_face) -> None:
    data = write_tiny_set(tmp_path / "set", tiny_face)
    whole = fit_dfr(data, tmp_path / "whole", config=_dfr_config(), device="cpu", face_model=tiny_face)
    part = fit_dfr(
        data,
        tmp_path / "part",
        config=_dfr_config(),
        device="cpu",
        face_model=tiny_face,
        progress=_interrupt_at(5),
    )
    assert part.train.interrupted and part.dfr_path is None and part.metrics == {}
    again = fit_dfr(data, tmp_path / "part", config=_dfr_config(), device="cpu", face_model=tiny_face)
    assert again.train.resumed_from == 5 and again.train.step == 8
    a = load_tensors(whole.dfr_path, what="x", hint="y")[0]
    b = load_tensors(again.dfr_path, what="x", hint="y")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.metrics["psnr_mask_db"] == whole.metrics["psnr_mask_db"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path: Path, tiny_face) -> None:
    """``torchrun --nproc_per_node 2 -m stylerig_cli fit-dfr`` trains data-parallel with gloo."""
    data = write_tiny_set(tmp_path / "set", tiny_face)
    face = tmp_path / "face.safetensors"
    tiny_face.save(face)
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "stylerig_cli", "fit-dfr", "--data", str(data), "--out", str(out), "--face-model", str(face),
        "--steps", "4", "--batch", "4", "--device", "cpu", "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "dfr.safetensors").is_file() and (out / "metrics.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["arguments"]["world_size"] == 2
    assert proc.stdout.count("PSNR inside the face mask") == 1  # rank 0 alone prints
    # The two ranks shared the batch: the same weights as one process with the same global batch?
    # (Not bitwise -- the gradient average is summed in another order -- but the same to float precision.)
    single = tmp_path / "single"
    shutil.copytree(out, single, ignore=shutil.ignore_patterns("*"))  # an empty folder
    from stylerig.training.dfr import DFRConfig as Cfg
    from stylerig.training.dfr import fit_dfr as fit

    cfg = Cfg(steps=4, batch=4, lr=1e-3, seed=0)
    fit(data, single, config=cfg, device="cpu", face_model=tiny_face)
    a = load_tensors(out / "dfr.safetensors", what="x", hint="y")[0]
    b = load_tensors(single / "dfr.safetensors", what="x", hint="y")[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
