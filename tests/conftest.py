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
