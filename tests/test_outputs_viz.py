"""Atomic outputs, labelled grids, device selection."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from stylerig.devices import resolve_device
from stylerig.errors import AssetError, InputError
from stylerig.outputs import atomic_write, save_png, write_run_json
from stylerig.viz import labelled_grid, to_uint8


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write(target, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(AssetError, match="No space left"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_run_json(tmp_path):
    p = write_run_json(tmp_path, "render-demo", {"a": 1}, seed=3, assets={"face_model": {"licence": "MIT"}})
    import json

    d = json.loads(p.read_text())
    assert d["command"] == "render-demo" and d["seed"] == 3 and "torch" in d["versions"]


def test_to_uint8_range():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    u = to_uint8(x)
    assert u.shape == (1, 1, 5, 3) and u.dtype == np.uint8
    assert u[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_labelled_grid_puts_each_cell_in_its_place(tmp_path):
    cells = [[np.full((8, 10, 3), 10 * (i * 3 + j + 1), np.uint8) for j in range(3)] for i in range(2)]
    grid = labelled_grid(cells, ["r0", "r1"], ["c0", "c1", "c2"], pad=2, label_width=20, label_height=6)
    for i in range(2):
        for j in range(3):
            y = 6 + 2 + i * (8 + 2)
            x = 20 + 2 + j * (10 + 2)
            assert (grid[y : y + 8, x : x + 10] == 10 * (i * 3 + j + 1)).all()
    save_png(tmp_path / "g.png", grid)
    import imageio.v3 as iio

    assert np.array_equal(iio.imread(tmp_path / "g.png"), grid)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        from stylerig.errors import BackendUnavailableError

        with pytest.raises(BackendUnavailableError):
            resolve_device("cuda")


def test_tune_allocator_applies_on_glibc():
    import platform

    from stylerig.runtime import tune_allocator

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert tune_allocator() is True  # mallopt accepted every setting
    assert tune_allocator() is True  # cached, idempotent
