"""Shared pytest options and fixtures.

``--runslow`` runs tests marked ``slow``; tests marked ``cuda`` skip unless CUDA is available.
``--device`` / ``STYLERIG_TEST_DEVICE`` picks the device of device-parametrised tests (default cpu).
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption(
        "--device",
        default=os.environ.get("STYLERIG_TEST_DEVICE", "cpu"),
        help="device for device-aware tests",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA requested but not available")
    return dev


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def make_tiny_face(n_lat: int = 12, n_lon: int = 16, seed: int = 0):
    """A small closed UV-sphere 'face' (radius 0.8 dm, nose bump at +z) as a MorphableModel, for tests."""
    import math

    from stylerig.face import MorphableModel

    g = torch.Generator().manual_seed(seed)
    verts = [[0.0, 0.8, 0.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append(
                [0.8 * math.sin(th) * math.sin(ph), 0.8 * math.cos(th), 0.8 * math.sin(th) * math.cos(ph)]
            )
    verts.append([0.0, -0.8, 0.0])
    v = torch.tensor(verts)
    v[:, 2] += 0.3 * torch.exp(-((v[:, 0] ** 2 + v[:, 1] ** 2) / 0.05)) * (v[:, 2] > 0)  # nose
    nv = v.shape[0]
    tris = []
    for j in range(n_lon):  # top cap
        tris.append([0, 1 + (j + 1) % n_lon, 1 + j])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a = 1 + i * n_lon + j
            b = 1 + i * n_lon + (j + 1) % n_lon
            c = a + n_lon
            d = b + n_lon
            tris += [[a, b, d], [a, d, c]]
    last = nv - 1
    base = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        tris.append([last, base + j, base + (j + 1) % n_lon])
    tri = torch.tensor(tris)
    # Make the winding outward (CCW seen from outside).
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    flip = (torch.linalg.cross(b - a, c - a) * (a + b + c)).sum(-1) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return MorphableModel(
        mean_shape=v,
        id_basis=0.01 * torch.randn(3 * nv, 10, generator=g),
        exp_basis=0.01 * torch.randn(3 * nv, 8, generator=g),
        mean_albedo=torch.full((nv, 3), 0.6),
        alb_basis=0.02 * torch.randn(3 * nv, 5, generator=g),
        triangles=tri,
        landmarks=torch.arange(68) % nv,
        skin_mask=v[:, 2] > 0,
        name="tiny-test-sphere",
        licence="test",
    )


@pytest.fixture
def tiny_face():
    return make_tiny_face()
