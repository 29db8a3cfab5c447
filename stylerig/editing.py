"""Using trained rigs: edit one W+ code, transfer parameters between faces, condition sampling (paper §5, §8).

The three uses of a rig, behind ``stylerig edit``, ``stylerig mix`` and ``stylerig sample --rig``:

* **edit** (:func:`run_edit`): a code w (from a seed or a ``.npy``), a request (angles in degrees,
  a named or given expression, a named or given light, or a sweep of one value), and
  ``ŵ = rig(w, p_target)`` with ``p_target = F(w)`` changed where the request says -- F is the rig's
  DFR, so everything the request leaves alone is the code's own estimate;
* **mix** (:func:`run_mix`, the paper's Figures 5 and 9): for every (source, target) pair, the target's
  code edited to the source's parameters of the chosen groups, ``rig(w_t, [F(w_t) with g <- F(w_s)^g])``;
  optionally beside StyleGAN's own style mixing of the same pair (:func:`style_mix`);
* **conditional generation** (:class:`ConditionalEdit`, §8.3): every drawn code edited to fixed
  parameters before synthesis.

**Several rigs.** Each rig edits only its own groups (``rig.groups``); two rigs controlling the same group
are refused. The target vector is built once, from F of the *unedited* code, and the rigs are applied one
after another in the order given, each to the previous one's output (a steering rig gets
``p_current = F(current code)``). A later rig may disturb a group an earlier one set (RigNet's L_consist
keeps that small); the reported ``after`` estimates show it.

**Units at this interface** (``docs/conventions.md``): angles in **degrees** everywhere a person types or
reads them (flags, sweep values, JSON); inside p they are radians. Expression coefficients and SH values
are in p's own units (standard deviations; SH coefficients added to the renderer's ambient 0.8).

**Named expressions** (:data:`NAMED_EXPRESSIONS`) are coefficient settings of the built-in procedural face
model (:data:`stylerig.face.procedural.EXPRESSION_NAMES`), inside the built-in world's range; they are only
offered when the rig's DFR was trained with that face model (another model's basis means something
else: pass a file or ``--expr i=v``). **Named lights** (:data:`NAMED_LIGHTS`) are the world's white key
light (:func:`light_sh`): a direction (azimuth, + = light from image right; elevation, + = from above),
a band-1 strength, a change of the ambient band and a warm/cool tint.

**Style-mixing slots** (:func:`style_groups`): StyleGAN's coarse / middle / fine groups are the ws of
resolutions 4²–8², 16²–32² and 64² and up. With the W+ layout of ``docs/conventions.md`` (the block at
resolution R reads ws 2k−1, 2k, 2k+1 with k = log2 R − 2) that is slots 0–3, 4–7 and 8..num_ws−1 (the
paper's 0–3 / 4–7 / 8–17 for 18 ws; 0–3 / 4–7 / 8–11 for the built-in world's 12). A generator below 64²
has no fine group (and below 16², no middle one).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig import params
from stylerig.dfr import DFR, load_dfr
from stylerig.errors import AssetError, InputError, StylerigError
from stylerig.gan import Generator
from stylerig.rignet import RigNet, load_rignet
from stylerig.tensorfile import looks_like_npy, read_npy

__all__ = [
    "ANGLE_NAMES",
    "GROUP_ALIASES",
    "NAMED_EXPRESSIONS",
    "NAMED_LIGHTS",
    "ConditionalEdit",
    "EditRequest",
    "EditResult",
    "Editor",
    "MixResult",
    "Sweep",
    "apply_rigs",
    "build_target",
    "conditional_edit",
    "describe_params",
    "light_sh",
    "load_editor",
    "load_latent",
    "mix_figure",
    "named_expression",
    "mix_codes",
    "parse_assignments",
    "parse_groups",
    "parse_seeds",
    "parse_sweep",
    "range_warnings",
    "run_edit",
    "run_mix",
    "style_groups",
    "style_mix",
    "sweep_group",
    "write_edit",
    "write_mix",
]

#: The rotation angles a person names, in the order they are stored in p.
ANGLE_NAMES: tuple[str, str, str] = params.ROTATION_NAMES

#: Named expressions: procedural-model component -> coefficient (standard deviations); unnamed = 0.
NAMED_EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"smile": 1.5},
    "laugh": {"smile": 2.0, "jaw_open": 0.9},
    "open-mouth": {"jaw_open": 1.2},
    "surprise": {"jaw_open": 0.8, "brow_raise": 1.2, "eye_close": -0.3},
    "eyes-closed": {"eye_close": 2.6},
    "brows-up": {"brow_raise": 1.2},
}

#: Named lights: keyword arguments of :func:`light_sh` (degrees; see the module docstring).
NAMED_LIGHTS: dict[str, dict[str, float]] = {
    "ambient": {"strength": 0.0},  # p = 0: the renderer's soft white frontal default
    "front": {"azimuth": 0.0, "elevation": 20.0, "strength": 0.45},
    "left": {"azimuth": -35.0, "elevation": 20.0, "strength": 0.55},
    "right": {"azimuth": 35.0, "elevation": 20.0, "strength": 0.55},
    "top": {"azimuth": 0.0, "elevation": 35.0, "strength": 0.55},
    "dim": {"azimuth": 0.0, "elevation": 20.0, "strength": 0.3, "ambient": -0.15},
    "bright": {"azimuth": 0.0, "elevation": 20.0, "strength": 0.6, "ambient": 0.15},
    "warm": {"azimuth": 0.0, "elevation": 20.0, "strength": 0.45, "warmth": 0.08},
    "cool": {"azimuth": 0.0, "elevation": 20.0, "strength": 0.45, "warmth": -0.08},
}

#: Names accepted by ``--params`` / :func:`parse_groups` -> parameter group.
GROUP_ALIASES: dict[str, str] = {
    "pose": "rotation",
    "rotation": "rotation",
    "expression": "expression",
    "illumination": "illumination",
    "light": "illumination",
}

_SYNTH_CHUNK = 16


# ----------------------------------------------------------------------------------------------------
# Parsing what a person types (each raises InputError with one line).


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``"1,2,5-8"`` -> ``[1, 2, 5, 6, 7, 8]`` (ranges inclusive; seeds in [0, 2**32))."""
    if not isinstance(text, str):
        return [int(s) for s in text]
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise InputError(f"bad seed list {text!r}", hint="write seeds like 1,2,5-8")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise InputError(f"bad seed range {part!r} (end before start)", hint="write seeds like 5-8")
        out.extend(range(a, b + 1))
    if not out or any(s >= 2**32 for s in out):
        raise InputError(f"bad seed list {text!r}", hint="seeds are integers in [0, 2**32)")
    return out


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{what}: {text!r} is not a finite number")
    return v


def parse_assignments(items: str | Sequence[str], what: str = "--fix") -> dict[str, str]:
    """``"yaw=20,smile=1.5"`` (or a list of ``"k=v"``, each possibly comma-separated) -> {key: value}.

    Keys are lower-cased with ``_`` and ``-`` kept; a key given twice is an error.
    """
    parts: list[str] = []
    for item in [items] if isinstance(items, str) else items:
        parts.extend(p for p in item.split(",") if p.strip())
    out: dict[str, str] = {}
    for part in parts:
        if "=" not in part:
            raise InputError(f"{what}: {part!r} is not KEY=VALUE", hint="write e.g. yaw=20,expression=smile")
        k, v = (s.strip() for s in part.split("=", 1))
        k = k.lower()
        if not k or not v:
            raise InputError(f"{what}: {part!r} is not KEY=VALUE", hint="write e.g. yaw=20,expression=smile")
        if k in out:
            raise InputError(f"{what}: {k!r} is given twice")
        out[k] = v
    return out


def parse_groups(text: str) -> tuple[str, ...]:
    """``"pose,expression"`` -> ``("rotation", "expression")`` in storage order (see :data:`GROUP_ALIASES`)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in GROUP_ALIASES]
    if not names or bad:
        raise InputError(
            f"bad --params {text!r}",
            hint="name one or more of pose, expression, illumination (comma-separated)",
        )
    chosen = {GROUP_ALIASES[n] for n in names}
    return tuple(g for g in params.GROUPS if g in chosen)


def _expression_index(key: str, names: Sequence[str] | None) -> int:
    """An expression component given as an index (``3``), ``expr3`` / ``expr:3``, or a name of ``names``."""
    m = re.fullmatch(r"(?:expr:?)?(\d+)", key)
    if m:
        i = int(m.group(1))
        if not 0 <= i < params.SIZES["expression"]:
            raise InputError(f"expression index {i} is outside 0..{params.SIZES['expression'] - 1}")
        return i
    if names is not None and key in names:
        return list(names).index(key)
    raise InputError(
        f"unknown expression component {key!r}",
        hint="use an index 0..63"
        + (" or a component name such as smile, jaw_open, eye_close" if names is not None else ""),
    )


@dataclass(frozen=True)
class Sweep:
    """One value swept over frames: ``name`` (yaw, pitch, roll, light-azimuth in degrees; an expression
    component in standard deviations) and its ``values`` (a person's units)."""

    name: str
    values: tuple[float, ...]
    text: str = ""

    @property
    def is_angle(self) -> bool:
        return self.name in ANGLE_NAMES or self.name == "light-azimuth"

    def label(self, v: float) -> str:
        return f"{self.name} {v:+.3g}{'°' if self.is_angle else ''}"


def parse_sweep(text: str) -> Sweep:
    """``"yaw=-30:30:7"`` -> :class:`Sweep` of 7 evenly spaced values from -30 to 30 inclusive.

    NAME is yaw, pitch, roll or light-azimuth (degrees), or an expression component (index ``expr3``,
    or a procedural-model name such as ``smile``; standard deviations). COUNT is 2..64.
    """
    m = re.fullmatch(r"\s*([A-Za-z0-9_:\-]+)\s*=\s*([^:]+):([^:]+):([^:]+)\s*", text)
    if not m:
        raise InputError(f"bad --sweep {text!r}", hint="write NAME=START:STOP:COUNT, e.g. yaw=-30:30:7")
    name = m.group(1).lower()
    start, stop = _number(m.group(2), "--sweep start"), _number(m.group(3), "--sweep stop")
    try:
        count = int(m.group(4))
    except ValueError:
        raise InputError(f"--sweep count {m.group(4)!r} is not an integer") from None
    if not 2 <= count <= 64:
        raise InputError(f"--sweep count must lie in 2..64, got {count}")
    values = tuple(float(v) for v in np.linspace(start, stop, count))
    return Sweep(name=name, values=values, text=text)


# ----------------------------------------------------------------------------------------------------
# Expressions and lights.


def light_sh(
    azimuth: float = 0.0,
    elevation: float = 20.0,
    strength: float = 0.45,
    ambient: float = 0.0,
    warmth: float = 0.0,
) -> torch.Tensor:
    """The built-in world's white key light as 27 SH values (p's illumination block), float32 [27].

    Args:
        azimuth: degrees, + = light from image right (the world's range is ±35).
        elevation: degrees, + = from above (the world's range is 5..35).
        strength: band-1 magnitude (world: 0.25..0.65; 0 = no key light).
        ambient: change of the constant band (world: ±0.15).
        warmth: colour tint w: red x (1 + w), blue x (1 − w) of the whole light (world: ±0.08).
    """
    from stylerig.render.shading import AMBIENT
    from stylerig.worlds.prior import _key_light

    deg = math.pi / 180.0
    key = _key_light(
        torch.tensor([azimuth * deg]), torch.tensor([elevation * deg]), torch.tensor([float(strength)])
    )[0]
    key[0] = float(ambient)
    base = torch.zeros(9)
    base[0] = AMBIENT
    tint = torch.tensor([1.0 + warmth, 1.0, 1.0 - warmth])
    return (tint[:, None] * (key[None] + base) - base).reshape(27).float()


def _light_direction(sh: torch.Tensor) -> dict[str, float]:
    """Dominant key-light direction of SH values [27] (channel mean of band 1; inverse of :func:`light_sh`)."""
    c = sh.reshape(3, 9).mean(0).double()
    # sh_basis band 1 is (-y, z, -x) up to one positive constant, so the direction is (-c3, -c1, c2).
    d = torch.stack([-c[3], -c[1], c[2]])
    strength = float(d.norm())
    if strength < 1e-6:
        return {"azimuth_deg": 0.0, "elevation_deg": 0.0, "strength": 0.0}
    d = d / strength
    return {
        "azimuth_deg": round(math.degrees(math.atan2(float(d[0]), float(d[2]))), 2),
        "elevation_deg": round(math.degrees(math.asin(max(-1.0, min(1.0, float(d[1]))))), 2),
        "strength": round(strength, 4),
    }


def _read_vector(
    path: str | os.PathLike[str], size: int, what: str, names: Sequence[str] | None
) -> torch.Tensor:
    """A float vector [size] from ``.npy`` or ``.json`` (a list, or for expressions {component: value}).

    Returns:
        float32 [size].

    Raises:
        AssetError: the file is missing or unreadable. InputError: it holds other than ``size`` finite
        numbers (or, for expressions, an unknown component name).
    """
    p = Path(path)
    hint = f"pass a .npy or .json of {size} numbers"
    if not p.is_file():
        raise AssetError(f"{what} file {p} not found", hint=hint)
    if p.suffix.lower() != ".json" and looks_like_npy(p):
        arr = read_npy(p, what=what, hint=hint, dtype=np.float64)
    else:
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(obj, dict):
                arr = np.zeros(size)
                for k, v in obj.items():
                    arr[_expression_index(str(k).lower(), names)] = float(v)
            else:
                arr = np.asarray(obj, dtype=np.float64)
        except StylerigError:
            raise
        except (OSError, ValueError, TypeError) as e:
            detail = " ".join(str(e).split())
            raise AssetError(f"cannot read {what} file {p} ({type(e).__name__}: {detail})", hint=hint) from e
    if arr.size != size:
        raise InputError(f"{what} file {p} has shape {list(arr.shape)}; expected {size} numbers", hint=hint)
    arr = arr.reshape(-1)
    bad = int(size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(
            f"{what} file {p} has {bad} NaN or infinite value{'s' if bad != 1 else ''}", hint=hint
        )
    return torch.from_numpy(arr).float()


def named_expression(name: str, names: Sequence[str] | None) -> torch.Tensor:
    """The coefficients [64] of a named expression (:data:`NAMED_EXPRESSIONS`)."""
    if names is None:
        raise InputError(
            f"named expressions ({name!r}) are settings of the built-in procedural face model; this rig's "
            "DFR uses another face model",
            hint="pass a .npy/.json file of 64 coefficients, or --expr i=v",
        )
    if name not in NAMED_EXPRESSIONS:
        raise InputError(
            f"unknown expression {name!r}", hint=f"use one of {', '.join(NAMED_EXPRESSIONS)} or a file"
        )
    out = torch.zeros(params.SIZES["expression"])
    for comp, v in NAMED_EXPRESSIONS[name].items():
        out[list(names).index(comp)] = v
    return out


# ----------------------------------------------------------------------------------------------------
# The editor: rigs, their DFR, the generator.


@dataclass
class Editor:
    """Rigs with the DFR and generator they belong to, all on one device (eval mode, no gradients).

    Attributes:
        rigs: the rigs, in the order they are applied. rig_paths: their files.
        dfr: F, W+ codes [B, num_ws, w_dim] -> p [B, 257]. dfr_path: its file.
        generator: the generator (None when loaded with ``need_generator=False``).
        generator_info: ``{"path", "sha256", "world"}`` (``world`` True for the built-in world).
        world: the built-in :class:`~stylerig.worlds.World` when the generator is its generator, else None.
        expression_names: the procedural model's component names when F was fitted with it, else None.
        notes: remarks for a person (which DFR / generator were picked and why).
    """

    rigs: tuple[RigNet, ...]
    rig_paths: tuple[str, ...]
    dfr: DFR
    dfr_path: str
    generator: Generator | None = None
    generator_info: dict[str, Any] = field(default_factory=dict)
    world: Any = None
    expression_names: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.dfr.p_init.device

    @property
    def num_ws(self) -> int:
        return self.dfr.num_ws

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group some rig controls, in storage order."""
        have = {g for r in self.rigs for g in r.groups}
        return tuple(g for g in params.GROUPS if g in have)

    def rig_info(self) -> list[dict[str, Any]]:
        return [
            {
                "path": path,
                "mode": r.mode,
                "arch": r.arch,
                "groups": list(r.groups),
                "trained_on": r.extra_config,
            }
            for r, path in zip(self.rigs, self.rig_paths, strict=True)
        ]

    @torch.no_grad()
    def estimate(self, ws: torch.Tensor) -> torch.Tensor:
        """F(ws): float [B, 257] (rotation in radians) for ws float [B, num_ws, w_dim] on :attr:`device`."""
        return self.dfr(ws.to(self.device, torch.float32))

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Images float [B, 3, R, R] in [-1, 1] (clamped) of ws [B, num_ws, w_dim], noise_mode const."""
        if self.generator is None:
            raise InputError("this editor was loaded without a generator")
        out = [
            self.generator.synthesis(c.to(self.device, torch.float32), noise_mode="const").clamp(-1, 1)
            for c in ws.split(_SYNTH_CHUNK)
        ]
        return torch.cat(out)

    def codes_from_seeds(self, seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
        """Unmixed W+ codes of seeds: float32 [len(seeds), num_ws, w_dim] (z as NVIDIA's generate.py)."""
        from stylerig.gan import sample_ws

        if self.generator is None:
            raise InputError("codes from seeds need the generator")
        _check_truncation(truncation)
        return sample_ws(self.generator, list(seeds), mix_max=1, truncation_psi=truncation).to(self.device)

    def apply(self, ws: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:func:`apply_rigs` with this editor's rigs and F."""
        return apply_rigs(self.rigs, self.dfr, ws, target)


@torch.no_grad()
def apply_rigs(rigs: Sequence[RigNet], dfr: DFR, ws: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Apply the rigs one after another (see the module docstring).

    Args:
        rigs: rigs controlling disjoint groups; each reads only its own block of ``target``.
        dfr: F, used for the ``p_current`` of a rig that reads the change (steering, delta: F of the code
            it edits).
        ws: float [B, num_ws, w_dim], the codes to edit. target: float [B, 257], the target parameters
            (rotation in radians), on the same device.

    Returns:
        ŵ float [B, num_ws, w_dim].
    """
    out = ws
    for rig in rigs:
        p_cur = dfr(out) if rig.needs_current else None
        out = rig(out, target.to(out.dtype), p_current=p_cur)
    return out


def _file_sha(path: str | os.PathLike[str]) -> str:
    from stylerig.data import file_sha256

    return file_sha256(path)


def _resolve_generator(
    rigs: Sequence[RigNet], generator: str | os.PathLike[str] | Generator | None, device: torch.device
) -> tuple[Generator, dict[str, Any], Any, str | None]:
    """-> (G, info, world or None, note). Explicit > the rig's sample set's generator > the built-in world."""
    from stylerig.data import read_manifest
    from stylerig.gan import load_generator
    from stylerig.worlds import load_world
    from stylerig.worlds.world import GENERATOR_FILE

    builtin_sha = _file_sha(GENERATOR_FILE) if GENERATOR_FILE.is_file() else None
    note = None
    if isinstance(generator, Generator):
        return generator.to(device).eval(), {"path": None, "sha256": None, "world": False}, None, None
    path: Path | None = Path(generator) if generator is not None else None
    if path is None:
        sample_set = next(
            (r.extra_config.get("sample_set") for r in rigs if r.extra_config.get("sample_set")), None
        )
        if sample_set:
            try:
                gen = read_manifest(sample_set).get("generator") or {}
            except AssetError:
                gen = {}
                note = (
                    f"the rig's sample set {sample_set} is not readable; using the built-in world's generator "
                    "(pass --generator to choose)"
                )
            if gen.get("world") == "builtin" or (builtin_sha and gen.get("sha256") == builtin_sha):
                path = None
            elif gen.get("path") and Path(gen["path"]).is_file():
                path = Path(gen["path"])
            elif gen:
                raise AssetError(
                    f"the rig was trained on codes of the generator {gen.get('path')}, which is not there",
                    hint="pass --generator PATH",
                )
    if path is None or (builtin_sha is not None and path.is_file() and _file_sha(path) == builtin_sha):
        world = load_world(device=device)
        return (
            world.generator,
            {"path": str(GENERATOR_FILE), "sha256": builtin_sha, "world": True},
            world,
            note,
        )
    G = load_generator(path, device=device)
    return G, {"path": str(path.resolve()), "sha256": _file_sha(path), "world": False}, None, note


def load_editor(
    rigs: Sequence[str | os.PathLike[str] | RigNet],
    *,
    dfr: str | os.PathLike[str] | DFR | None = None,
    generator: str | os.PathLike[str] | Generator | None = None,
    device: str | torch.device = "cpu",
    need_generator: bool = True,
    allow_overlap: bool = False,
) -> Editor:
    """Load rigs and find their DFR and generator.

    Args:
        rigs: rig files (``rig.safetensors`` or its folder) or :class:`~stylerig.rignet.RigNet` objects.
        dfr: F; default the DFR recorded in the first rig (``extra_config["dfr"]``).
        generator: a checkpoint path or Generator; default the generator of the rig's sample set
            (recorded in its manifest), else the built-in world's.
        device: where everything lives.
        need_generator: False skips the generator (``stylerig analyze``, conditional sampling).
        allow_overlap: accept rigs controlling the same group (``stylerig analyze`` compares them; such
            an editor must not :meth:`~Editor.apply` them together).

    Raises:
        InputError: no rig, rigs sharing a group, or rigs / DFR / generator of different W+ shapes.
        AssetError: a file is missing or damaged, or no DFR is recorded and none was given.
    """
    if not rigs and dfr is None:
        raise InputError(
            "give at least one --rig", hint="pass a rig.safetensors from `stylerig train-rignet`"
        )
    dev = torch.device(device)
    loaded, paths = [], []
    for r in rigs:
        if isinstance(r, RigNet):
            loaded.append(r.to(dev).eval())
            paths.append("in-memory rig")
            continue
        p = Path(r)
        if p.is_dir():
            p = p / "rig.safetensors"
        loaded.append(load_rignet(p, device=dev))
        paths.append(str(p.resolve()) if p.exists() else str(p))
    seen: dict[str, str] = {}
    for rig, path in zip(loaded, paths, strict=True):
        for g in rig.groups:
            if g in seen and not allow_overlap:
                raise InputError(
                    f"two rigs control {g}: {seen[g]} and {path}", hint="give each group to one rig only"
                )
            seen[g] = path
    notes: list[str] = []
    if isinstance(dfr, DFR):
        F, dfr_path = dfr.to(dev).eval(), "in-memory DFR"
    else:
        if dfr is None:
            recorded = [r.extra_config.get("dfr") for r in loaded if r.extra_config.get("dfr")]
            if not recorded:
                raise AssetError("the rig records no DFR", hint="pass --dfr DFR (the rig's dfr.safetensors)")
            dfr = recorded[0]
            if len(set(recorded)) > 1:
                notes.append(f"the rigs were trained with different DFRs; using the first one's ({dfr})")
        F, dfr_path = load_dfr(dfr, device=dev), str(dfr)
    F.requires_grad_(False)
    for rig, path in zip(loaded, paths, strict=True):
        if (rig.num_ws, rig.w_dim) != (F.num_ws, F.w_dim):
            raise InputError(
                f"rig {path} edits codes of {rig.num_ws} x {rig.w_dim}, the DFR reads {F.num_ws} x {F.w_dim}",
                hint="pass the DFR the rig was trained with (--dfr)",
            )
    fm = (F.info.get("face_model") or {}).get("name")
    names = None
    if fm == "procedural":
        from stylerig.face.procedural import EXPRESSION_NAMES

        names = tuple(EXPRESSION_NAMES)
    editor = Editor(
        rigs=tuple(loaded),
        rig_paths=tuple(paths),
        dfr=F,
        dfr_path=dfr_path,
        expression_names=names,
        notes=notes,
    )
    if need_generator:
        G, info, world, note = _resolve_generator(loaded, generator, dev)
        if (int(G.num_ws), int(G.w_dim)) != (F.num_ws, F.w_dim):
            raise InputError(
                f"the generator has {G.num_ws} x {G.w_dim} W+ codes, the DFR reads {F.num_ws} x {F.w_dim}",
                hint="pass the generator the rig was trained on (--generator)",
            )
        editor.generator, editor.generator_info, editor.world = G, info, world
        if note:
            notes.append(note)
    return editor


# ----------------------------------------------------------------------------------------------------
# Targets.


@dataclass(frozen=True)
class EditRequest:
    """What a person asked for (a person's units).

    Attributes:
        angles: absolute angles in degrees, e.g. ``{"yaw": 20.0}`` (others: the code's own).
        deltas: changes in degrees added to the code's own angles (an angle is absolute or delta, not both).
        expression: a name of :data:`NAMED_EXPRESSIONS` or a ``.npy``/``.json`` file (the whole 64-vector).
        expr: component -> value (sd) set on top (keys: index, ``expr3``, or a procedural-model name).
        light: a name of :data:`NAMED_LIGHTS` or a ``.npy``/``.json`` file of 27 SH values.
    """

    angles: Mapping[str, float] = field(default_factory=dict)
    deltas: Mapping[str, float] = field(default_factory=dict)
    expression: str | None = None
    expr: Mapping[str, float] = field(default_factory=dict)
    light: str | None = None

    def __post_init__(self) -> None:
        for k in (*self.angles, *self.deltas):
            if k not in ANGLE_NAMES:
                raise InputError(f"unknown angle {k!r}", hint="use yaw, pitch or roll")
        both = set(self.angles) & set(self.deltas)
        if both:
            raise InputError(
                f"{sorted(both)[0]} is given both as an angle and as a delta", hint="use one of them"
            )
        for d in (self.angles, self.deltas, self.expr):
            for k, v in d.items():
                if not math.isfinite(float(v)):
                    raise InputError(f"{k}={v} is not a finite number")
        if (
            self.light is not None
            and self.light.lower() not in NAMED_LIGHTS
            and not _is_file_spec(self.light)
        ):
            raise InputError(
                f"unknown light {self.light!r}",
                hint=f"use one of {', '.join(NAMED_LIGHTS)} or a .npy/.json file",
            )
        if (
            self.expression is not None
            and self.expression.lower() not in NAMED_EXPRESSIONS
            and not _is_file_spec(self.expression)
        ):
            raise InputError(
                f"unknown expression {self.expression!r}",
                hint=f"use one of {', '.join(NAMED_EXPRESSIONS)} or a .npy/.json file",
            )

    def groups(self) -> tuple[str, ...]:
        """The parameter groups this request changes, in storage order."""
        g = set()
        if self.angles or self.deltas:
            g.add("rotation")
        if self.expression is not None or self.expr:
            g.add("expression")
        if self.light is not None:
            g.add("illumination")
        return tuple(x for x in params.GROUPS if x in g)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out.update({f"{k}_deg": float(v) for k, v in self.angles.items()})
        out.update({f"delta_{k}_deg": float(v) for k, v in self.deltas.items()})
        if self.expression is not None:
            out["expression"] = self.expression
        if self.expr:
            out["expr"] = {k: float(v) for k, v in self.expr.items()}
        if self.light is not None:
            out["light"] = self.light
        return out

    @classmethod
    def from_fix(cls, fix: Mapping[str, str]) -> EditRequest:
        """From ``--fix`` assignments: yaw/pitch/roll (deg), expression=NAME|FILE, light=NAME|FILE, and
        expression components (``smile=1.5``, ``expr3=0.5``)."""
        angles, expr, expression, light = {}, {}, None, None
        for k, v in fix.items():
            if k in ANGLE_NAMES:
                angles[k] = _number(v, f"--fix {k}")
            elif k == "expression":
                expression = v
            elif k in ("light", "illumination"):
                light = v
            else:
                expr[k] = _number(v, f"--fix {k}")
        return cls(angles=angles, expression=expression, expr=expr, light=light)


def _is_file_spec(spec: str) -> bool:
    return Path(spec).suffix.lower() in (".npy", ".json") or Path(spec).is_file()


def _expression_vector(spec: str, names: Sequence[str] | None) -> torch.Tensor:
    if spec.lower() in NAMED_EXPRESSIONS:
        return named_expression(spec.lower(), names)
    if Path(spec).suffix.lower() in (".npy", ".json") or Path(spec).exists():
        return _read_vector(spec, params.SIZES["expression"], "expression", names)
    return named_expression(spec.lower(), names)  # raises: unknown name


def _light_vector(spec: str) -> torch.Tensor:
    if spec.lower() in NAMED_LIGHTS:
        return light_sh(**NAMED_LIGHTS[spec.lower()])
    if Path(spec).suffix.lower() in (".npy", ".json") or Path(spec).exists():
        return _read_vector(spec, params.SIZES["illumination"], "light", None)
    raise InputError(
        f"unknown light {spec!r}", hint=f"use one of {', '.join(NAMED_LIGHTS)} or a .npy/.json file"
    )


def build_target(
    p_current: torch.Tensor,
    request: EditRequest,
    *,
    expression_names: Sequence[str] | None = None,
    sweep: Sweep | None = None,
) -> torch.Tensor:
    """Target parameters: the current ones changed where ``request`` (and the sweep) says.

    Args:
        p_current: float [B, 257], F of the codes (rotation in radians).
        request: the edit (degrees; see :class:`EditRequest`).
        expression_names: component names of the face model (None: only indices are understood).
        sweep: a value swept over frames; then B must be 1 and the result has one row per value.

    Returns:
        float [B, 257] (or [len(sweep.values), 257]), same dtype and device as ``p_current``;
        rotation in radians.
    """
    p = p_current.clone()
    rot = params.get(p, "rotation").clone()
    for k, v in request.angles.items():
        rot[:, ANGLE_NAMES.index(k)] = math.radians(float(v))
    for k, v in request.deltas.items():
        rot[:, ANGLE_NAMES.index(k)] += math.radians(float(v))
    p = params.replace(p, "rotation", rot)
    if request.expression is not None or request.expr:
        e = params.get(p, "expression").clone()
        if request.expression is not None:
            e[:] = _expression_vector(request.expression, expression_names).to(e)
        for k, v in request.expr.items():
            e[:, _expression_index(str(k).lower(), expression_names)] = float(v)
        p = params.replace(p, "expression", e)
    if request.light is not None:
        p = params.replace(p, "illumination", _light_vector(request.light).to(p).expand(p.shape[0], -1))
    if sweep is None:
        return p
    _check_sweep_conflicts(request, sweep, expression_names)
    if p.shape[0] != 1:
        raise InputError("a sweep edits one code at a time")
    frames = p.repeat(len(sweep.values), 1)
    values = torch.tensor(sweep.values, dtype=p.dtype, device=p.device)
    if sweep.name in ANGLE_NAMES:
        rot = params.get(frames, "rotation").clone()
        rot[:, ANGLE_NAMES.index(sweep.name)] = values * (math.pi / 180.0)
        frames = params.replace(frames, "rotation", rot)
    elif sweep.name == "light-azimuth":
        sh = torch.stack([light_sh(azimuth=float(v), **_FRONT_KEY) for v in sweep.values]).to(p)
        frames = params.replace(frames, "illumination", sh)
    else:
        e = params.get(frames, "expression").clone()
        e[:, _expression_index(sweep.name, expression_names)] = values
        frames = params.replace(frames, "expression", e)
    return frames


_FRONT_KEY = {"elevation": 20.0, "strength": 0.55}


def _check_sweep_conflicts(request: EditRequest, sweep: Sweep, names: Sequence[str] | None) -> None:
    """InputError when the request also sets the value the sweep sets in every frame (it would be lost)."""
    clash = None
    if sweep.name in ANGLE_NAMES:
        if sweep.name in request.angles:
            clash = f"--{sweep.name}"
        elif sweep.name in request.deltas:
            clash = f"--delta-{sweep.name}"
    elif sweep.name == "light-azimuth":
        if request.light is not None:
            clash = "--light"
    else:
        i = _expression_index(sweep.name, names)
        for k in request.expr:
            if _expression_index(str(k).lower(), names) == i:
                clash = f"--expr {k}"
    if clash is not None:
        raise InputError(
            f"--sweep {sweep.name} conflicts with {clash}: the sweep sets {sweep.name} in every frame",
            hint=f"drop {clash} or the sweep",
        )


def sweep_group(sweep: Sweep) -> str:
    """The parameter group a sweep changes."""
    if sweep.name in ANGLE_NAMES:
        return "rotation"
    return "illumination" if sweep.name == "light-azimuth" else "expression"


def _check_covered(editor: Editor, groups: Sequence[str], what: str) -> None:
    missing = [g for g in groups if g not in editor.groups]
    if missing:
        have = ", ".join(f"{r.mode}" for r in editor.rigs) or "none"
        need = {"rotation": "pose", "expression": "expression", "illumination": "illumination"}
        raise InputError(
            f"{what} changes {', '.join(missing)}, but no given rig controls it (rigs: {have})",
            hint=f"add a --rig of mode {' or '.join(need[g] for g in missing)} (or all)",
        )


def range_warnings(
    editor: Editor, target: torch.Tensor, current: torch.Tensor, margin: float = 0.0
) -> list[str]:
    """One line per rig whose *changed* target values lie outside what it saw in training.

    Args:
        target, current: float [B, 257] (radians); only values that differ from ``current`` count.
        margin: widen the training range by ``margin x scale`` (see :meth:`RigNet.outside_range`).
    """
    out = []
    names = editor.expression_names
    for rig in editor.rigs:
        idx = rig.index.to(target.device)
        flags = rig.outside_range(target, margin).to(target.device)
        changed = (target[:, idx] - current[:, idx]).abs() > 1e-6
        bad = (flags & changed).any(0).cpu()
        if not bool(bad.any()):
            continue
        parts = []
        for j in torch.nonzero(bad).flatten().tolist()[:4]:
            k = int(rig.index[j])
            col = target[:, k]
            lo, hi = float(rig.lo[j]), float(rig.hi[j])
            worst = float(col.max() if float(col.max()) > hi else col.min())
            if params.LAYOUT["rotation"].start <= k < params.LAYOUT["rotation"].stop:
                nm = ANGLE_NAMES[k - params.LAYOUT["rotation"].start]
                parts.append(
                    f"{nm} {math.degrees(worst):.1f}° (saw {math.degrees(lo):.1f}..{math.degrees(hi):.1f}°)"
                )
            elif params.LAYOUT["expression"].start <= k < params.LAYOUT["expression"].stop:
                e = k - params.LAYOUT["expression"].start
                nm = names[e] if names else f"expr{e}"
                parts.append(f"{nm} {worst:.2f} (saw {lo:.2f}..{hi:.2f})")
            else:
                parts.append(
                    f"illumination[{k - params.LAYOUT['illumination'].start}] {worst:.2f} (saw {lo:.2f}..{hi:.2f})"
                )
        more = int(bad.sum()) - len(parts)
        out.append(
            f"target outside what the {rig.mode} rig saw in training: {'; '.join(parts)}"
            f"{f' and {more} more' if more > 0 else ''} -- expect a weaker or distorted edit"
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Describing parameters for people.


def describe_params(p: torch.Tensor, expression_names: Sequence[str] | None = None) -> dict[str, Any]:
    """One parameter vector float [257] (radians) as JSON-able numbers in a person's units.

    Returns:
        ``{"rotation_deg": {yaw, pitch, roll}, "expression": {name: sd} (or a list of 64 without names),
        "illumination": [27], "light": {azimuth_deg, elevation_deg, strength} (the key light's
        direction, see :func:`light_sh`), "translation_dm": [3]}``.
    """
    p = p.detach().reshape(-1).double().cpu()
    rot = params.get(p, "rotation")
    expr = [round(float(v), 4) for v in params.get(p, "expression")]
    sh = params.get(p, "illumination")
    return {
        "rotation_deg": {n: round(math.degrees(float(v)), 3) for n, v in zip(ANGLE_NAMES, rot, strict=True)},
        "expression": dict(zip(expression_names, expr, strict=True)) if expression_names else expr,
        "illumination": [round(float(v), 4) for v in sh],
        "light": _light_direction(sh.float()),
        "translation_dm": [round(float(v), 4) for v in params.get(p, "translation")],
    }


# ----------------------------------------------------------------------------------------------------
# Edit.


@dataclass
class EditResult:
    """What :func:`run_edit` computed (all tensors on CPU, float32).

    Attributes:
        ws: [1, num_ws, w_dim] the code edited. ws_edited: [N, num_ws, w_dim], one per frame (N = 1
            without a sweep). images_before: [1, 3, R, R]; images_after: [N, 3, R, R] (in [-1, 1]).
        p_before: [1, 257] F(ws). p_target: [N, 257]. p_after: [N, 257] F(ws_edited) (radians).
        labels: one caption per frame. warnings: range warnings (one line each). truth_before: [1, 257]
            the world's true parameters of the seed (built-in world, untruncated seed), else None.
        world_before / world_after: the world estimator's reading of the images, or None.
        seconds: wall time per stage.
    """

    ws: torch.Tensor
    ws_edited: torch.Tensor
    images_before: torch.Tensor
    images_after: torch.Tensor
    p_before: torch.Tensor
    p_target: torch.Tensor
    p_after: torch.Tensor
    labels: list[str]
    warnings: list[str]
    truth_before: torch.Tensor | None = None
    world_before: torch.Tensor | None = None
    world_after: torch.Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)


_LATENT_HINT = "pass a .npy written by `stylerig edit` (edited_ws.npy) or a W+ code saved with numpy.save"


def _as_wplus(a: np.ndarray, src: str, num_ws: int, w_dim: int) -> torch.Tensor:
    """float32 [1, num_ws, w_dim] from a finite array [num_ws, w_dim], [1, num_ws, w_dim], [w_dim] or
    [1, w_dim] (one w, repeated over the slots); InputError naming ``src`` for any other shape."""
    shape = list(a.shape)
    if a.shape in ((w_dim,), (1, w_dim)):
        a = np.broadcast_to(a.reshape(1, 1, w_dim), (1, num_ws, w_dim))
    elif a.shape == (num_ws, w_dim):
        a = a[None]
    if a.shape != (1, num_ws, w_dim):
        raise InputError(
            f"latent {src} has shape {shape}; expected [{num_ws}, {w_dim}] (W+), [1, {num_ws}, {w_dim}] "
            f"or [{w_dim}] (one w)",
            hint=_LATENT_HINT,
        )
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_latent(path: str | os.PathLike[str], num_ws: int, w_dim: int) -> torch.Tensor:
    """A W+ code from ``.npy``: [num_ws, w_dim], [1, num_ws, w_dim], or one w [w_dim] / [1, w_dim]
    (repeated over the slots). Returns float32 [1, num_ws, w_dim].

    Raises:
        AssetError: the file is missing or not a readable ``.npy`` (:func:`~stylerig.tensorfile.read_npy`).
        InputError: it holds no real numbers, NaN or infinite values, or another shape.
    """
    p = Path(path)
    return _as_wplus(read_npy(p, what="latent", hint=_LATENT_HINT), str(p), num_ws, w_dim)


def _latent_tensor(latent: torch.Tensor, num_ws: int, w_dim: int) -> torch.Tensor:
    """A W+ code given as a tensor (shapes as :func:`load_latent`) -> float32 [1, num_ws, w_dim] on CPU."""
    a = latent.detach().to("cpu", torch.float32).numpy()
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise InputError(
            f"the latent tensor has {bad} NaN or infinite value{'s' if bad != 1 else ''}",
            hint="pass a finite W+ code",
        )
    return _as_wplus(a, "tensor", num_ws, w_dim)


def _check_truncation(truncation: float) -> None:
    """InputError for a non-finite truncation psi (the wording of ``stylerig sample``)."""
    if not math.isfinite(float(truncation)):
        raise InputError(
            f"truncation must be finite, got {truncation}", hint="pass a number such as 0.7 (1 = none)"
        )


def run_edit(
    editor: Editor,
    *,
    seed: int | None = None,
    latent: str | os.PathLike[str] | torch.Tensor | None = None,
    request: EditRequest | None = None,
    sweep: Sweep | None = None,
    truncation: float = 1.0,
    world_estimate: bool = False,
) -> EditResult:
    """Edit one code: ``ŵ = rigs(w, build_target(F(w), request, sweep))``, and synthesize before/after.

    Args:
        editor: from :func:`load_editor` (with a generator).
        seed / latent: the code: a seed (unmixed; ``truncation`` psi) or a W+ ``.npy`` / tensor
            [1, num_ws, w_dim]. Exactly one.
        request: the edit (empty = the code's own parameters: ŵ ≈ w).
        sweep: one value swept over frames (:func:`parse_sweep`).
        world_estimate: also read before/after images with the built-in world's estimator (slow: ~1-2 s
            per image); only with the world's generator.

    Returns:
        :class:`EditResult`.
    """
    t0 = time.perf_counter()
    request = request or EditRequest()
    if (seed is None) == (latent is None):
        raise InputError("give exactly one of --seed and --latent")
    _check_truncation(truncation)
    # Resolve names, files and conflicts first: a bad name is reported as such, not as a missing rig.
    build_target(params.zeros(1), request, expression_names=editor.expression_names, sweep=sweep)
    groups = set(request.groups()) | ({sweep_group(sweep)} if sweep else set())
    _check_covered(editor, [g for g in params.GROUPS if g in groups], "the edit")
    if world_estimate and editor.world is None:
        raise InputError("--world-estimate needs the built-in world's generator")
    if seed is not None:
        ws = editor.codes_from_seeds([int(seed)], truncation)
    elif isinstance(latent, torch.Tensor):
        ws = _latent_tensor(latent, editor.num_ws, editor.dfr.w_dim).to(editor.device)
    else:
        assert latent is not None
        ws = load_latent(latent, editor.num_ws, editor.dfr.w_dim).to(editor.device)
    sec: dict[str, float] = {}
    t = time.perf_counter()
    p_before = editor.estimate(ws)
    target = build_target(p_before, request, expression_names=editor.expression_names, sweep=sweep)
    current = p_before.expand(target.shape[0], -1)
    warnings = range_warnings(editor, target, current)
    ws_edit = editor.apply(ws.expand(target.shape[0], -1, -1), target)
    p_after = editor.estimate(ws_edit)
    sec["rig_and_dfr"] = time.perf_counter() - t
    t = time.perf_counter()
    images = editor.synthesize(torch.cat([ws, ws_edit]))
    sec["synthesis"] = time.perf_counter() - t
    labels = [sweep.label(v) for v in sweep.values] if sweep is not None else ["edited"]
    truth = None
    if editor.world is not None and seed is not None and truncation == 1.0:
        truth = editor.world.params([int(seed)]).cpu()
    wb = wa = None
    if world_estimate:
        t = time.perf_counter()
        est = editor.world.estimate(images).cpu()
        wb, wa = est[:1], est[1:]
        sec["world_estimate"] = time.perf_counter() - t
    sec["total"] = time.perf_counter() - t0
    return EditResult(
        ws=ws.cpu(),
        ws_edited=ws_edit.cpu(),
        images_before=images[:1].cpu(),
        images_after=images[1:].cpu(),
        p_before=p_before.cpu(),
        p_target=target.cpu(),
        p_after=p_after.cpu(),
        labels=labels,
        warnings=warnings,
        truth_before=truth,
        world_before=wb,
        world_after=wa,
        seconds=sec,
    )


def _edit_paths(out: Path) -> tuple[Path, dict[str, str | None]]:
    """-> (the folder the files go to, role -> file name there).

    File mode (``out`` ends in .png: siblings named after its stem, no run.json) or folder mode.
    """
    if out.suffix.lower() == ".png":
        stem = out.stem
        return out.parent, {
            "image": out.name,
            "comparison": f"{stem}-comparison.png",
            "ws": f"{stem}.npy",
            "json": f"{stem}.json",
            "strip": f"{stem}-strip.png",
            "gif": f"{stem}.gif",
            "run": None,
        }
    return out, {
        "image": "edited.png",
        "comparison": "comparison.png",
        "ws": "edited_ws.npy",
        "json": "edit.json",
        "strip": "sweep.png",
        "gif": "sweep.gif",
        "run": "run.json",
    }


def write_edit(
    result: EditResult,
    editor: Editor,
    out: str | os.PathLike[str],
    *,
    request: EditRequest | None = None,
    sweep: Sweep | None = None,
    source: Mapping[str, Any] | None = None,
    arguments: Mapping[str, Any] | None = None,
    gif_seconds_per_frame: float = 0.25,
) -> dict[str, str]:
    """Write an edit's images, W+ code(s) and JSON (see ``stylerig edit --help``).

    ``out`` ending in ``.png``: that file is the edited image and the others sit beside it
    (``<stem>.npy``, ``<stem>.json``, ``<stem>-comparison.png``; with a sweep ``<stem>-strip.png`` and
    ``<stem>.gif``), the run record inside the JSON. Otherwise ``out`` is a folder with ``edited.png``,
    ``comparison.png``, ``edited_ws.npy``, ``edit.json``, ``run.json`` (with a sweep: ``sweep.png``,
    ``sweep.gif``). The W+ file is float32 [num_ws, w_dim] (one edit) or [N, num_ws, w_dim] (a sweep).

    The files are written as one set (:func:`stylerig.outputs.staged_outputs`): all of them land, or
    (a full disk, an error) none does and an earlier edit there stays whole. Files of an earlier edit
    that this one does not write (``comparison.png`` before a sweep, ``sweep.gif`` before a single
    edit) are removed once the new set has landed.

    Returns:
        role -> path of every file written.

    Raises:
        InputError: the folder holds another command's outputs (a DFR, a rig, a sample set).
        AssetError: the files cannot be written (permissions, full disk); nothing is changed.
    """
    import io

    import imageio.v3 as iio

    from stylerig.outputs import (
        atomic_write,
        claim_output_dir,
        run_info,
        save_png,
        staged_outputs,
        write_json,
    )
    from stylerig.viz import labelled_grid, titled_panels, to_uint8

    folder, names_of = _edit_paths(Path(out))
    claim_output_dir(folder, "edit")
    final = {k: folder / v for k, v in names_of.items() if v is not None}
    before = to_uint8(result.images_before)[0]
    after = to_uint8(result.images_after)
    written: dict[str, str] = {}
    with staged_outputs(folder) as stage:
        paths = {k: stage / v for k, v in names_of.items() if v is not None}

        def wrote(role: str) -> None:
            written[role] = str(final[role])

        if sweep is None:
            save_png(paths["image"], after[0])
            wrote("image")
            grid = labelled_grid([[before, after[0]]], [""], ["original", "edited"], label_width=4)
        else:
            strip = labelled_grid([[before, *after]], [""], ["original", *result.labels], label_width=4)
            save_png(paths["strip"], strip)
            wrote("strip")
            buf = io.BytesIO()
            # Each frame under its caption (also keeps identical images as separate frames), there and back.
            captioned = [titled_panels([a], [lab]) for a, lab in zip(after, result.labels, strict=True)]
            frames = np.stack(captioned + captioned[::-1][1:-1])
            iio.imwrite(buf, frames, extension=".gif", duration=int(gif_seconds_per_frame * 1000), loop=0)
            atomic_write(paths["gif"], buf.getvalue())
            wrote("gif")
            grid = strip
            save_png(paths["image"], after[len(after) // 2])
            wrote("image")
        if sweep is None:
            save_png(paths["comparison"], grid)
            wrote("comparison")
        buf = io.BytesIO()
        ws_out = result.ws_edited.numpy().astype(np.float32)
        np.save(buf, ws_out[0] if sweep is None else ws_out)
        atomic_write(paths["ws"], buf.getvalue())
        wrote("ws")

        names = editor.expression_names
        frames_json = []
        for i, label in enumerate(result.labels):
            f: dict[str, Any] = {
                "label": label,
                "target": describe_params(result.p_target[i], names),
                "after_dfr": describe_params(result.p_after[i], names),
            }
            if result.world_after is not None:
                f["after_world_estimate"] = describe_params(result.world_after[i], names)
            frames_json.append(f)
        before_json: dict[str, Any] = {"dfr": describe_params(result.p_before[0], names)}
        if result.truth_before is not None:
            before_json["world_truth"] = describe_params(result.truth_before[0], names)
        if result.world_before is not None:
            before_json["world_estimate"] = describe_params(result.world_before[0], names)
        doc: dict[str, Any] = {
            "source": dict(source or {}),
            "requested": (request or EditRequest()).as_dict() | ({"sweep": sweep.text} if sweep else {}),
            "rigs": editor.rig_info(),
            "applied": "rigs in the order listed, each to the previous one's output; the target is "
            "F(original) changed as requested",
            "dfr": editor.dfr_path,
            "generator": editor.generator_info,
            "units": "angles in degrees; expression in standard deviations; illumination = 27 SH values "
            "(3 channels x 9) added to the ambient 0.8; light = the key light's direction (+azimuth = "
            "from image right, +elevation = from above)",
            "before": before_json,
            "frames": frames_json,
            "warnings": list(result.warnings),
            "notes": list(editor.notes),
            "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
            "files": dict(written),
        }
        run = run_info("edit", dict(arguments or {}), seed=(source or {}).get("seed"), assets=_assets(editor))
        if "run" not in paths:
            doc["run"] = run
        write_json(paths["json"], doc)
        wrote("json")
        if "run" in paths:
            write_json(paths["run"], run)
            wrote("run")
    # The new set has landed: files an earlier edit wrote here that this one did not are stale.
    for role, path in final.items():
        if role not in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return written


def _assets(editor: Editor) -> dict[str, Any]:
    return {
        "rigs": list(editor.rig_paths),
        "dfr": editor.dfr_path,
        "generator": editor.generator_info,
        "face_model": editor.dfr.info.get("face_model"),
    }


# ----------------------------------------------------------------------------------------------------
# Mix (Figures 5 and 9) and StyleGAN's style mixing.


def style_groups(num_ws: int) -> dict[str, tuple[int, ...]]:
    """StyleGAN's coarse / middle / fine ws slots for a generator with ``num_ws`` slots (module docstring).

    Returns:
        name -> slot indices; groups a small generator lacks are left out.
    """
    out = {
        "coarse": tuple(range(0, min(4, num_ws))),
        "middle": tuple(range(4, min(8, num_ws))),
        "fine": tuple(range(8, num_ws)),
    }
    return {k: v for k, v in out.items() if v}


def style_mix(source: torch.Tensor, target: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """StyleGAN's style mixing: the target codes with ``slots`` copied from the sources.

    Args:
        source, target: float [B, num_ws, w_dim] (pairs row by row).
        slots: ws indices to copy.

    Returns:
        float [B, num_ws, w_dim].
    """
    out = target.clone()
    idx = torch.as_tensor(list(slots), dtype=torch.long, device=target.device)
    out[:, idx] = source[:, idx].to(out)
    return out


@torch.no_grad()
def mix_codes(
    editor: Editor, source_ws: torch.Tensor, target_ws: torch.Tensor, groups: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (source, target) pair: the target edited to the source's parameters of ``groups``.

    Args:
        source_ws: float [S, num_ws, w_dim]; target_ws: float [T, num_ws, w_dim] (editor's device).
        groups: parameter groups to transfer (each controlled by some rig of the editor).

    Returns:
        (ws float [S, T, num_ws, w_dim] with ``ws[i, j]`` = target j with source i's parameters,
        p_target float [S, T, 257]).
    """
    _check_covered(editor, groups, "--params")
    S, T = source_ws.shape[0], target_ws.shape[0]
    p_s, p_t = editor.estimate(source_ws), editor.estimate(target_ws)
    p_src = p_s[:, None].expand(S, T, -1).reshape(S * T, -1)
    target = p_t[None].expand(S, T, -1).reshape(S * T, -1)
    for g in groups:
        target = params.replace(target, g, params.get(p_src, g))
    w_t = target_ws[None].expand(S, T, -1, -1).reshape(S * T, *target_ws.shape[1:])
    out = editor.apply(w_t, target)
    return out.reshape(S, T, *target_ws.shape[1:]), target.reshape(S, T, -1)


@dataclass
class MixResult:
    """What :func:`run_mix` computed. Images are uint8 [.., R, R, 3].

    Attributes:
        sources, targets: the seeds. groups: parameter groups transferred.
        source_images [S], target_images [T]; panels: name -> cells [S][T] (``"stylerig"`` and, with
        the baseline, ``"coarse"`` / ``"middle"`` / ``"fine"``). slots: style-mixing group -> ws slots.
        p_source, p_target_before: F of sources / targets [S or T, 257]; p_after: F of the rig's cells
        [S, T, 257]. seconds: timings.
    """

    sources: list[int]
    targets: list[int]
    groups: tuple[str, ...]
    source_images: np.ndarray
    target_images: np.ndarray
    panels: dict[str, np.ndarray]
    slots: dict[str, tuple[int, ...]]
    p_source: torch.Tensor
    p_target_before: torch.Tensor
    p_after: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)


def run_mix(
    editor: Editor,
    sources: Sequence[int],
    targets: Sequence[int],
    groups: Sequence[str],
    *,
    baseline: bool = False,
    truncation: float = 1.0,
) -> MixResult:
    """The paper's Figures 5 / 9: each target with each source's parameters of ``groups``.

    With ``baseline`` the same pairs are also style-mixed the StyleGAN way (the source's coarse, middle
    or fine ws copied into the target; :func:`style_groups`).
    """
    from stylerig.viz import to_uint8

    t0 = time.perf_counter()
    _check_truncation(truncation)
    if not sources or not targets:
        raise InputError("give at least one source and one target seed")
    if len(sources) * len(targets) > 256:
        raise InputError(
            f"{len(sources)} x {len(targets)} pairs is too many for one grid", hint="use at most 256 pairs"
        )
    ws = editor.codes_from_seeds([*sources, *targets], truncation)
    ws_s, ws_t = ws[: len(sources)], ws[len(sources) :]
    cells, _ = mix_codes(editor, ws_s, ws_t, groups)
    S, T = len(sources), len(targets)
    flat = [cells.reshape(S * T, *cells.shape[2:])]
    slots = style_groups(editor.num_ws) if baseline else {}
    for sl in slots.values():
        pair_s = ws_s[:, None].expand(S, T, -1, -1).reshape(S * T, *ws.shape[1:])
        pair_t = ws_t[None].expand(S, T, -1, -1).reshape(S * T, *ws.shape[1:])
        flat.append(style_mix(pair_s, pair_t, sl))
    t = time.perf_counter()
    images = to_uint8(editor.synthesize(torch.cat([ws, *flat])))
    sec = {"synthesis": time.perf_counter() - t}
    n0 = S + T
    panels = {"stylerig": images[n0 : n0 + S * T].reshape(S, T, *images.shape[1:])}
    for k, name in enumerate(slots):
        a = n0 + (k + 1) * S * T
        panels[name] = images[a : a + S * T].reshape(S, T, *images.shape[1:])
    p_after = editor.estimate(cells.reshape(S * T, *cells.shape[2:])).reshape(S, T, -1)
    sec["total"] = time.perf_counter() - t0
    return MixResult(
        sources=list(sources),
        targets=list(targets),
        groups=tuple(groups),
        source_images=images[:S],
        target_images=images[S:n0],
        panels=panels,
        slots=slots,
        p_source=editor.estimate(ws_s).cpu(),
        p_target_before=editor.estimate(ws_t).cpu(),
        p_after=p_after.cpu(),
        seconds=sec,
    )


def _group_label(groups: Sequence[str]) -> str:
    short = {"rotation": "pose", "expression": "expression", "illumination": "illumination"}
    return " + ".join(short[g] for g in groups)


def mix_figure(result: MixResult) -> np.ndarray:
    """The labelled figure: one panel per method side by side (uint8 [H, W, 3])."""
    from stylerig.viz import pair_grid, titled_panels

    src_labels = [f"source {s}" for s in result.sources]
    tgt_labels = [f"target {t}" for t in result.targets]
    panels, titles = [], []
    for name, cells in result.panels.items():
        panels.append(pair_grid(result.source_images, result.target_images, cells, src_labels, tgt_labels))
        if name == "stylerig":
            titles.append(f"StyleRig: {_group_label(result.groups)}")
        else:
            sl = result.slots[name]
            titles.append(f"StyleGAN {name} (ws {sl[0]}-{sl[-1]})")
    return titled_panels(panels, titles)


def write_mix(
    result: MixResult,
    editor: Editor,
    out: str | os.PathLike[str],
    *,
    arguments: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write the figure (``out``: a ``.png`` file, or a folder getting ``mix.png``) and its JSON beside it.

    The JSON lists, for every cell, the pair and F's parameters (degrees) of the source, the target and
    the edited result, plus the style-mixing slot split and the run record.
    """
    from stylerig.outputs import run_info, save_png, write_json

    o = Path(out)
    png = o if o.suffix.lower() == ".png" else o / "mix.png"
    js = png.with_suffix(".json")
    save_png(png, mix_figure(result))
    names = editor.expression_names
    keep = [g for g in ("rotation", "expression", "illumination") if g in result.groups]

    def brief(p: torch.Tensor) -> dict[str, Any]:
        d = describe_params(p, names)
        out = {}
        if "rotation" in keep:
            out["rotation_deg"] = d["rotation_deg"]
        if "expression" in keep:
            out["expression"] = d["expression"]
        if "illumination" in keep:
            out["light"] = d["light"]
        return out

    cells = []
    for i, s in enumerate(result.sources):
        for j, t in enumerate(result.targets):
            cells.append(
                {
                    "row": i,
                    "column": j,
                    "source": s,
                    "target": t,
                    "source_dfr": brief(result.p_source[i]),
                    "target_dfr": brief(result.p_target_before[j]),
                    "edited_dfr": brief(result.p_after[i, j]),
                }
            )
    doc = {
        "layout": "sources down the left, targets across the top; cell (row i, column j) = target j with "
        "source i's parameters of the groups; panels left to right: " + ", ".join(result.panels),
        "groups": list(result.groups),
        "sources": result.sources,
        "targets": result.targets,
        "style_mixing_slots": {k: list(v) for k, v in result.slots.items()},
        "rigs": editor.rig_info(),
        "dfr": editor.dfr_path,
        "generator": editor.generator_info,
        "cells": cells,
        "notes": list(editor.notes),
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "run": run_info("mix", dict(arguments or {}), assets=_assets(editor)),
    }
    write_json(js, doc)
    return {"figure": str(png), "json": str(js)}


# ----------------------------------------------------------------------------------------------------
# Conditional generation (§8.3).


class ConditionalEdit:
    """Edit every drawn code to fixed parameters (``stylerig sample --rig RIG --fix ...``).

    Args:
        editor: rigs + DFR (no generator needed).
        request: the fixed values (:meth:`EditRequest.from_fix`); the rest of each code's parameters are
            its own (F of the drawn code).

    Call: ``edit(ws float [B, num_ws, w_dim]) -> ŵ`` (same device and dtype as ``ws``).
    Attribute ``info``: a JSON-able record (rigs with sha256, DFR, the fixed values) that
    :func:`stylerig.sampling.write_sample_set` stores in the manifest.
    """

    def __init__(self, editor: Editor, request: EditRequest) -> None:
        if not request.groups():
            raise InputError("--fix names nothing to fix", hint="write e.g. --fix yaw=20,expression=smile")
        if request.deltas:
            raise InputError("--fix takes absolute values only")
        _check_covered(editor, request.groups(), "--fix")
        self.editor, self.request = editor, request
        # Resolve names and files now, so a bad --fix fails before any sampling.
        build_target(params.zeros(1), request, expression_names=editor.expression_names)
        self.warned: list[str] = []
        self.info = {
            "fixed": request.as_dict(),
            "rigs": [
                {
                    "path": p,
                    "mode": r.mode,
                    "arch": r.arch,
                    "sha256": _file_sha(p) if Path(p).is_file() else None,
                }
                for r, p in zip(editor.rigs, editor.rig_paths, strict=True)
            ],
            "dfr": editor.dfr_path,
            "dfr_sha256": _file_sha(editor.dfr_path) if Path(editor.dfr_path).is_file() else None,
            "note": "every code is edited by the rig(s) to the fixed values before synthesis (paper §8.3); "
            "ws.npy holds the edited codes",
        }

    @torch.no_grad()
    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        e = self.editor
        w = ws.to(e.device, torch.float32)
        p = e.estimate(w)
        target = build_target(p, self.request, expression_names=e.expression_names)
        if not self.warned:
            self.warned = range_warnings(e, target, p) or [""]
        return e.apply(w, target).to(ws.device, ws.dtype)


def conditional_edit(
    rigs: Sequence[str | os.PathLike[str] | RigNet],
    fix: str | Sequence[str],
    *,
    dfr: str | os.PathLike[str] | DFR | None = None,
    device: str | torch.device = "cpu",
) -> ConditionalEdit:
    """``--rig`` + ``--fix`` of ``stylerig sample`` -> a :class:`ConditionalEdit` (raises InputError
    when either is missing or a value is bad)."""
    if not rigs:
        raise InputError("--fix needs --rig (the rig that edits each code)")
    fixed = parse_assignments(fix, "--fix")
    if not fixed:
        raise InputError("--rig needs --fix (the values every image gets)", hint="e.g. --fix yaw=20")
    editor = load_editor(rigs, dfr=dfr, device=device, need_generator=False)
    return ConditionalEdit(editor, EditRequest.from_fix(fixed))
