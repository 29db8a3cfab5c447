"""``--preset auto|world|paper``: the defaults of fit-dfr and train-rignet (stylerig.presets)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stylerig.errors import InputError
from stylerig.presets import (
    PAPER_DFR,
    PAPER_RIG,
    WORLD_DFR,
    WORLD_RIG,
    WORLD_RIG_ALL,
    dfr_config,
    resolve_preset,
    rig_config,
    rig_preset,
)
from stylerig.training.dfr import DFRConfig
from stylerig.training.rignet import RigConfig

WORLD_SET = SimpleNamespace(manifest={"generator": {"path": None, "world": True}})
OTHER_SET = SimpleNamespace(manifest={"generator": {"path": "g.pkl", "world": False}})


def test_the_paper_preset_is_the_configs_own_defaults() -> None:
    """The help texts state PAPER_RIG / PAPER_DFR: they must be what RigConfig() / DFRConfig() hold."""
    rig, dfr = RigConfig(), DFRConfig()
    assert {k: getattr(rig, k) for k in PAPER_RIG} == PAPER_RIG
    assert {k: getattr(dfr, k) for k in PAPER_DFR} == PAPER_DFR
    # ... and the world preset changes only settings the paper preset names.
    assert set(WORLD_RIG) | set(WORLD_RIG_ALL) == set(PAPER_RIG)
    assert set(WORLD_DFR) == set(PAPER_DFR)


def test_auto_is_world_only_for_a_set_of_the_built_in_world() -> None:
    assert resolve_preset("auto", WORLD_SET) == "world"  # type: ignore[arg-type]
    assert resolve_preset("auto", OTHER_SET) == "paper"  # type: ignore[arg-type]
    assert resolve_preset("auto", SimpleNamespace(manifest={})) == "paper"  # type: ignore[arg-type]
    assert resolve_preset(" World ", OTHER_SET) == "world"  # type: ignore[arg-type]
    assert resolve_preset("paper", WORLD_SET) == "paper"  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown preset 'fast'"):
        resolve_preset("fast", WORLD_SET)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["pose", "expression", "illumination", "all"])
def test_the_world_preset_gives_every_mode_a_config_that_checks(mode: str) -> None:
    cfg = RigConfig(mode=mode, **rig_preset("world", mode))
    cfg.check()  # e.g. no group weight for a group the mode does not edit
    assert (cfg.arch, cfg.subspace, cfg.hidden, cfg.param_weight) == ("delta", 32, 256, 1.0)
    assert cfg.split == (mode == "all") and bool(cfg.group_weights) == (mode == "all")
    RigConfig(mode=mode, **rig_preset("paper", mode)).check()
    with pytest.raises(InputError, match="resolve auto first"):
        rig_preset("auto", mode)


def test_explicit_settings_win_and_none_means_the_presets(tmp_path) -> None:
    cfg, used = rig_config(tmp_path, "all", preset="world", subspace=8, hidden=None, steps=3, arch=None)
    assert used == "world" and cfg.subspace == 8 and cfg.steps == 3
    assert cfg.hidden == WORLD_RIG["hidden"] and cfg.arch == WORLD_RIG["arch"] and cfg.split is True
    cfg, used = rig_config(tmp_path, "pose", preset="paper", param_weight=2.0)
    assert used == "paper" and cfg == RigConfig(mode="pose", param_weight=2.0)
    d, used = dfr_config(tmp_path, preset="world", photo_rows=8, confine=None)
    assert used == "world" and d.photo_rows == 8 and d.confine == WORLD_DFR["confine"]
    assert d.light_prior_weight == WORLD_DFR["light_prior_weight"]
    assert dfr_config(tmp_path, preset="paper")[0] == DFRConfig()
    with pytest.raises(InputError, match="no setting warp"):
        rig_config(tmp_path, "pose", preset="paper", warp=1)
    with pytest.raises(InputError, match="no setting warp"):
        dfr_config(tmp_path, preset="paper", warp=1)


def test_auto_reads_the_sets_manifest_and_a_malformed_option_is_named_first(tmp_path) -> None:
    from stylerig.errors import AssetError

    with pytest.raises(InputError, match="bad group weight"):  # before the (missing) set is read
        rig_config(tmp_path / "none", "all", group_weights="mood")
    with pytest.raises(AssetError):
        rig_config(tmp_path / "none", "all")
    with pytest.raises(AssetError):
        dfr_config(tmp_path / "none")


def test_the_demo_runs_the_world_preset() -> None:
    from stylerig.demo import DemoConfig

    demo = DemoConfig()
    for k, v in rig_preset("world", "all").items():
        assert getattr(demo, f"rig_{k}") == v, k
    for k, v in WORLD_DFR.items():
        assert getattr(demo, f"dfr_{k}") == v, k
