"""What this machine can do: the checks behind ``stylerig doctor`` (no printing here).

Each :class:`Check` says what was found and, when something is missing, the exact step that fixes it.
Nothing is downloaded and no optional package is imported at stylerig import time; this module imports
them only when :func:`run_checks` runs.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stylerig.errors import InputError

__all__ = ["Check", "run_checks"]

_NVDIFFRAST_FIX = (
    "needs CUDA, nvcc and ninja: fetch github.com/NVlabs/nvdiffrast (NVIDIA Source Code License, non-commercial) "
    "and run `pip install ./nvdiffrast --no-build-isolation`; the torch renderer is used meanwhile"
)


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        area: group heading ("compute", "renderer", "landmarks", "face models", "generators").
        name: what was checked.
        status: "ok", "missing" or "info".
        detail: what was found.
        fix: the step that fixes a missing item ("" when nothing to do).
    """

    area: str
    name: str
    status: str
    detail: str
    fix: str = ""


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torch_checks() -> list[Check]:
    import torch

    out = [
        Check("compute", "python", "info", platform.python_version()),
        Check("compute", "torch", "ok", f"{torch.__version__}, {torch.get_num_threads()} CPU threads"),
    ]
    wait = os.environ.get("OMP_WAIT_POLICY", "").strip()
    if wait.upper() == "PASSIVE":  # measured on 2 cores: a lone train-rignet step 1.45x slower (docs/demo.md)
        detail = (
            "OMP_WAIT_POLICY=PASSIVE: idle CPU threads sleep, which helps only when other processes share "
            "the cores; a lone run (e.g. train-rignet on 2 cores) is about 1.45x slower with it"
        )
        out.append(
            Check("compute", "OpenMP wait policy", "info", detail, "unset OMP_WAIT_POLICY for a lone run")
        )
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        out.append(Check("compute", "CUDA", "ok", f"{torch.version.cuda}: {names}"))
    else:
        out.append(
            Check(
                "compute",
                "CUDA",
                "missing",
                "no CUDA device: everything runs on the CPU (slower for real generators)",
                "on a GPU machine, install a CUDA build of torch (see pytorch.org) before stylerig",
            )
        )
    return out


def _renderer_checks() -> list[Check]:
    from stylerig.render.ops import nvdiffrast_available

    out = [Check("renderer", "torch rasterizer", "ok", "built in (CPU and CUDA)")]
    if nvdiffrast_available():
        out.append(Check("renderer", "nvdiffrast", "ok", "importable; used with --renderer auto on CUDA"))
    else:
        detail = (
            "installed but failed to import" if _has("nvdiffrast") else "not installed (optional, CUDA only)"
        )
        out.append(Check("renderer", "nvdiffrast", "missing", detail, _NVDIFFRAST_FIX))
    return out


def _landmark_checks() -> list[Check]:
    from stylerig.landmarks import best_detector, world_status

    world = world_status()
    out = [
        Check(
            "landmarks",
            "built-in world",
            "ok" if world.ok else "missing",
            world.detail,
            world.fix,
        )
    ]
    chosen, statuses = best_detector()
    for s in statuses:
        detail = s.detail + (
            "; used by `sample --landmarks auto` for other generators" if s.name == chosen else ""
        )
        out.append(Check("landmarks", s.name, "ok" if s.ok else "missing", detail, s.fix))
    return out


def _face_model_checks(search: list[Path]) -> list[Check]:
    from stylerig.face.readers import _default_cache_dir

    out = [
        Check("face models", "built-in procedural", "ok", "licence-free, generated on demand (the default)")
    ]
    found: list[str] = []
    for folder in search:
        for pattern in ("BFM_model_front.mat", "01_MorphableModel.mat", "model2017*.h5"):
            found += [str(p) for p in sorted(folder.glob(pattern))]
    cache = _default_cache_dir() / "face-models"
    cached = sorted(cache.glob("*.safetensors")) if cache.is_dir() else []
    if found:
        out.append(Check("face models", "Basel / Deep3DFaceRecon", "ok", "; ".join(found)))
    else:
        out.append(
            Check(
                "face models",
                "Basel / Deep3DFaceRecon",
                "missing",
                f"none found in {', '.join(str(s) for s in search)}",
                "register at faces.dmi.unibas.ch/bfm (non-commercial licence), then pass --face-model PATH",
            )
        )
    out.append(Check("face models", "converted cache", "info", f"{len(cached)} model(s) in {cache}"))
    return out


def _generator_checks(search: list[Path]) -> list[Check]:
    out: list[Check] = []
    found: list[str] = []
    for folder in search:
        for pattern in ("*.pkl", "*.pt", "*.safetensors"):
            found += [str(p) for p in sorted(folder.glob(pattern)) if "face" not in p.name.lower()]
    world = None
    if _has("stylerig.worlds"):
        import stylerig.worlds as world
    if world is not None and hasattr(world, "load_world"):
        out.append(Check("generators", "built-in world", "ok", "ships with stylerig (the default)"))
    else:
        out.append(
            Check(
                "generators", "built-in world", "missing", "not part of this version yet", "upgrade stylerig"
            )
        )
    if found:
        out.append(Check("generators", "checkpoints", "ok", "; ".join(found[:5])))
    else:
        out.append(
            Check(
                "generators",
                "checkpoints",
                "info",
                f"no .pkl/.pt/.safetensors in {', '.join(str(s) for s in search)}",
                "pass --generator PATH (an NVIDIA stylegan2-ada .pkl or a rosinality .pt)",
            )
        )
    return out


def run_checks(search: list[Path] | None = None, *, extra: Sequence[Path] = ()) -> list[Check]:
    """Run every check.

    Args:
        search: folders to look in for face models and generator checkpoints (default: the current
            folder, ``./BFM`` and ``$STYLERIG_DATA`` when set); those that do not exist are skipped.
        extra: folders a person asked for (``--search``), looked in as well; each must exist.

    Returns:
        The checks, grouped by area in a stable order.

    Raises:
        InputError: a folder of ``extra`` does not exist or is not a folder.
    """
    if search is None:
        search = [Path.cwd(), Path.cwd() / "BFM"]
        if os.environ.get("STYLERIG_DATA"):
            search.append(Path(os.environ["STYLERIG_DATA"]))
    for folder in extra:
        if not Path(folder).is_dir():
            what = "is a file, not a folder" if Path(folder).exists() else "does not exist"
            raise InputError(
                f"--search {folder} {what}", hint="pass a folder that holds face models or generators"
            )
    search = [s for s in [*search, *map(Path, extra)] if s.is_dir()]
    return (
        _torch_checks()
        + _renderer_checks()
        + _landmark_checks()
        + _face_model_checks(search)
        + _generator_checks(search)
    )
