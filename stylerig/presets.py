"""Named recipes of ``fit-dfr`` and ``train-rignet``: ``paper``, ``world`` and ``auto``.

* ``paper``: the paper's networks and losses -- :class:`~stylerig.training.dfr.DFRConfig` and
  :class:`~stylerig.training.rignet.RigConfig` as they are (a linear RigNet, L_rec + L_edit + L_consist,
  600 steps of 8 pairs). What a generator other than the built-in world gets under ``auto``.
* ``world``: what measurably works on the built-in world (``docs/rignet.md`` has every measurement; the
  comments below give the figures that chose each value). ``stylerig demo`` runs it.
* ``auto`` (the commands' default): ``world`` for a sample set drawn from the built-in world (its
  manifest says so, :func:`~stylerig.training.dfr.sampled_from_world`), ``paper`` otherwise.

A preset only supplies defaults: a setting given explicitly (a CLI option, a keyword of
:func:`dfr_config` / :func:`rig_config`) always wins. The resolved preset is recorded with each run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from stylerig.errors import InputError

if TYPE_CHECKING:  # torch-free at import (the demo's help reads the values): the configs load when used
    from stylerig.data import SampleSet
    from stylerig.training.dfr import DFRConfig
    from stylerig.training.rignet import RigConfig

__all__ = [
    "PAPER_DFR",
    "PAPER_RIG",
    "PRESETS",
    "WORLD_DFR",
    "WORLD_RIG",
    "WORLD_RIG_ALL",
    "dfr_config",
    "resolve_preset",
    "rig_config",
    "rig_preset",
]

#: The names a ``--preset`` option takes.
PRESETS = ("auto", "world", "paper")

#: ``train-rignet``'s ``paper`` preset: the values of :class:`~stylerig.training.rignet.RigConfig`'s defaults
#: that the ``world`` preset changes (the paper's linear RigNet; AdaDelta aside, the paper's losses), named
#: here so that help texts can state them without importing torch. ``tests/test_presets.py`` checks that
#: they are RigConfig's.
PAPER_RIG: dict[str, Any] = {
    "arch": "rignet",
    "subspace": 0,
    "hidden": 0,
    "param_weight": 0.0,
    "steps": 600,
    "batch": 8,
    "split": False,
    "group_weights": "",
}

#: ... and ``fit-dfr``'s: the values of :class:`~stylerig.training.dfr.DFRConfig`'s defaults that ``world``
#: changes (8 photometric rows per batch is a speed setting, not the paper's).
PAPER_DFR: dict[str, Any] = {"photo_rows": 8, "light_prior_weight": 0.0, "confine": ()}

#: ``fit-dfr``'s ``world`` preset: changes to :class:`~stylerig.training.dfr.DFRConfig` (not in the paper).
WORLD_DFR: dict[str, Any] = {
    # Every row of each batch rendered for the photometric term, and a Gaussian prior on the light along
    # the light model's directions (1e-5 per squared sd): F had read a dark skin as light from above
    # (vertical light read at 0.53 of the truth; with these 0.72). On session 12's demo set, the demo's
    # rig otherwise, DFR seeds 0 / 1: light drift 0.270 -> 0.206 / 0.259 -> 0.199, light error 0.385 ->
    # 0.364 / 0.367 -> 0.364 (docs/rignet.md, session 13). About twice the fitting time (2.5 min).
    "photo_rows": 0,
    "light_prior_weight": 1e-5,
    # F's coefficients confined to the components the world's faces use: unconfined, F puts part of each
    # expression into components the world never uses and reads the used ones short (smile slope 0.67;
    # confined 0.85). DFR seeds 0 / 1: the rig's expression error 0.443 -> 0.343 / 0.349, light 0.372 ->
    # 0.339 / 0.327 (docs/rignet.md, session 14).
    "confine": ("identity", "expression", "reflectance"),
}

#: ``train-rignet``'s ``world`` preset for every mode: changes to :class:`~stylerig.training.rignet.RigConfig`.
WORLD_RIG: dict[str, Any] = {
    # RigNet conditioned on the parameter change: no change is exactly no edit, so the samples of the
    # other groups no longer hold a group's decoder at zero (light error ratio 0.85 -> 0.47, light drift
    # 0.42 -> 0.27; docs/rignet.md, session 10).
    "arch": "delta",
    # Not the paper's linear decoder: the linear rig learns to fool the frozen DFR (the estimator sees 0.30
    # of the requested yaw); residuals restricted to the codes' top principal directions and decoded
    # through a 256-wide hidden layer carry the pose into the image. Fewer directions keep a turn nearer
    # the codes' manifold, where F reads what changes: pose drift 0.262 (64) -> 0.245 (48) -> 0.227 (40)
    # (session 15). 32, not 40, since session 17: on four seeds (mode all, through demo20's DFR) 40 missed
    # a target on three of them by 0.001-0.003 (pose drift or expression), 32 met every target on all
    # four, and was the same on seed 0 (docs/rignet.md, "Other seeds"). 24 went no further.
    "subspace": 32,
    "hidden": 256,
    # L_param: the edit and consistency conditions on F's parameters as well as through the renderer; the
    # rig had delivered 1.69 of 2.85 sd of the requested expression change by F's own reading (expression
    # error ratio 0.59 -> 0.44, light 0.47 -> 0.39; docs/rignet.md, session 11).
    "param_weight": 1.0,
    # Pairs and steps: 1,600 steps of 4 pairs did as well as 2,000 and 2,400 (sessions 14-15), and 1,200
    # and 1,000 as well as 1,600 (session 16, through the same DFR, mode all, 1,600 / 1,200 / 1,000 steps:
    # expression 0.335 / 0.335 / 0.336, light 0.342 / 0.343 / 0.344, pose drift 0.227 / 0.226 / 0.227).
    # 1,000 keeps mode all within 5 minutes on 2 CPU cores in the machine's slow hours too (4.4 min at
    # 0.26 s per step; 3.8 in a quicker one); the single-group modes render a third as much per step
    # (docs/rignet.md, session 16).
    "steps": 1000,
    "batch": 4,
}

#: ... and for mode ``all`` besides (settings that only a rig of several groups takes).
WORLD_RIG_ALL: dict[str, Any] = {
    # One decoder per group: yaw error 2.21 -> 1.62 deg, light error ratio 1.00 -> 0.93 (docs/demo.md).
    "split": True,
    # A smile costs far less render loss than a turn of the head: weighted 1:1 the pose edits starve the
    # expression edits (DFR-measured expression error ratio 0.83 -> 0.56 with expression=10; measured when
    # the demo adopted it).
    "group_weights": "expression=10",
}


def resolve_preset(preset: str, data: SampleSet | None = None) -> str:
    """``auto`` -> ``world`` when ``data`` was sampled from the built-in world, else ``paper``; ``world`` and
    ``paper`` as they are.

    Raises:
        InputError: an unknown preset name.
    """
    from stylerig.training.dfr import sampled_from_world

    name = str(preset).strip().lower()
    if name not in PRESETS:
        raise InputError(f"unknown preset {preset!r}", hint=f"use one of {', '.join(PRESETS)}")
    if name == "auto":
        return "world" if data is not None and sampled_from_world(data) else "paper"
    return name


def rig_preset(preset: str, mode: str) -> dict[str, Any]:
    """The changes a resolved preset (``world`` | ``paper``) makes to ``RigConfig(mode=mode)``."""
    if preset == "paper":
        return dict(PAPER_RIG)
    if preset != "world":
        raise InputError(f"rig_preset takes world or paper, got {preset!r}", hint="resolve auto first")
    return dict(WORLD_RIG) | (dict(WORLD_RIG_ALL) if mode == "all" else {})


def _resolve(
    config: type, data: SampleSet | str | os.PathLike[str], preset: str, settings: dict[str, Any]
) -> str:
    """Refuse settings ``config`` lacks, then resolve ``preset`` (opening ``data`` only for ``auto``)."""
    bad = sorted(set(settings) - {f.name for f in dataclasses.fields(config)})
    if bad:
        raise InputError(f"{config.__name__} has no setting {', '.join(bad)}")
    name = str(preset).strip().lower()
    if name != "auto":
        return resolve_preset(name)
    from stylerig.data import SampleSet

    return resolve_preset(name, data if isinstance(data, SampleSet) else SampleSet(data))


def _given(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings given explicitly (``None`` = the preset's value)."""
    return {k: v for k, v in settings.items() if v is not None}


def rig_config(
    data: SampleSet | str | os.PathLike[str], mode: str, *, preset: str = "auto", **settings: Any
) -> tuple[RigConfig, str]:
    """The :class:`~stylerig.training.rignet.RigConfig` a ``train-rignet`` run on ``data`` uses.

    Args:
        data: the sample set (or its folder; only its manifest is read).
        mode: ``pose`` | ``expression`` | ``illumination`` | ``all``.
        preset: ``auto`` | ``world`` | ``paper`` (module docstring).
        **settings: RigConfig fields given explicitly; ``None`` = the preset's value.

    Returns:
        (config, the resolved preset name).

    Raises:
        InputError: an unknown preset or field. AssetError: an unreadable set.
    """
    from stylerig.training.rignet import RigConfig, parse_group_weights

    if settings.get("group_weights") is not None:  # a malformed option is named before the set is read
        parse_group_weights(settings["group_weights"])
    name = _resolve(RigConfig, data, preset, settings)
    return RigConfig(mode=mode, **(rig_preset(name, mode) | _given(settings))), name


def dfr_config(
    data: SampleSet | str | os.PathLike[str], *, preset: str = "auto", **settings: Any
) -> tuple[DFRConfig, str]:
    """The :class:`~stylerig.training.dfr.DFRConfig` a ``fit-dfr`` run on ``data`` uses (as
    :func:`rig_config`: ``settings`` given explicitly win, ``None`` = the preset's value)."""
    from stylerig.training.dfr import DFRConfig

    name = _resolve(DFRConfig, data, preset, settings)
    changes = dict(WORLD_DFR) if name == "world" else dict(PAPER_DFR)
    return DFRConfig(**(changes | _given(settings))), name
