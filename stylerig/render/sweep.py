"""The renderer demo: render the face model along each parameter, as a labelled grid (``render-demo``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from stylerig import params
from stylerig.face.model import MorphableModel
from stylerig.render.camera import Camera
from stylerig.render.face_renderer import FaceRenderer
from stylerig.render.shading import sh_basis

__all__ = ["SweepRow", "default_sweep", "key_light", "render_sweep", "run_render_demo"]


@dataclass(frozen=True)
class SweepRow:
    """One row of the sweep: a label, the parameter vectors of its cells, and their captions."""

    label: str
    p: torch.Tensor  # [C, 257]
    captions: list[str]


def _light(direction: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    """White SH light (27 values) adding a directional term towards unit ``direction`` [3]."""
    # Band-1 SH basis values are proportional to (-y, z, -x); matching them to n . d gives the weights.
    y1 = sh_basis(direction[None])[0, 1:4] / sh_basis(direction[None])[0, 0]
    one = torch.zeros(9)
    one[1:4] = strength * y1 / (y1.norm() + 1e-12) * direction.norm()
    return one.repeat(3)


def key_light(batch: int = 1) -> torch.Tensor:
    """Illumination [batch, 27]: p's ambient default plus one white key light from the upper right front."""
    key = torch.tensor([0.35, 0.45, 1.0])
    return _light(key / key.norm()).expand(batch, -1).clone()


def default_sweep(face_model: MorphableModel, columns: int = 7) -> list[SweepRow]:
    """Rows: yaw, pitch, roll, the named expressions, main identity and reflectance directions, light.

    Every row but the last is lit by one key light from the upper right front; coefficients are in
    standard deviations ("sd"), angles in degrees.
    """
    rows: list[SweepRow] = []
    sig = torch.linspace(-3, 3, columns)

    # A key light from the upper right front, so shape reads (p's default light is ambient only).
    base = params.replace(params.zeros(columns), "illumination", key_light(columns))

    def row(label, group, index, values, captions, scale=1.0):
        p = base.clone()
        params.get(p, group)[:, index] = values * scale
        rows.append(SweepRow(label, p, captions))

    deg = torch.linspace(-45, 45, columns)
    row("yaw", "rotation", 0, deg, [f"{d:+.0f}°" for d in deg.tolist()], math.pi / 180)
    deg = torch.linspace(-30, 30, columns)
    row("pitch", "rotation", 1, deg, [f"{d:+.0f}°" for d in deg.tolist()], math.pi / 180)
    row("roll", "rotation", 2, deg, [f"{d:+.0f}°" for d in deg.tolist()], math.pi / 180)
    names = getattr(face_model, "component_names", {}) or {}
    sig_caps = [f"{s:+.0f} sd" for s in sig.tolist()]
    exp_names = names.get("expression", [])[:6] or [f"expression {i}" for i in range(3)]
    for i, nm in enumerate(exp_names):
        row(nm.replace("_", " "), "expression", i, sig, sig_caps)
    id_names = names.get("identity", [])[:3] or [f"identity {i}" for i in range(3)]
    for i, nm in enumerate(id_names):
        row(nm.replace("_", " "), "identity", i, sig, sig_caps)
    alb_names = names.get("reflectance", [])[:2] or [f"reflectance {i}" for i in range(2)]
    for i, nm in enumerate(alb_names):
        row(nm.replace("_", " "), "reflectance", i, sig, sig_caps)
    az = torch.linspace(-90, 90, columns)
    p = params.zeros(columns)
    for j, a in enumerate(az.tolist()):
        d = torch.tensor([math.sin(math.radians(a)), 0.25, math.cos(math.radians(a))])
        params.get(p, "illumination")[j] = _light(d / d.norm())
    rows.append(SweepRow("light", p, [f"{a:+.0f}°" for a in az.tolist()]))
    return rows


@torch.no_grad()
def render_sweep(renderer: FaceRenderer, rows: list[SweepRow]):
    """Render every row; returns a uint8 labelled grid [H, W, 3]."""
    from stylerig.viz import labelled_grid, to_uint8

    dev = next(renderer.buffers()).device
    cells = [list(to_uint8(renderer(r.p.to(dev)).image)) for r in rows]
    return labelled_grid(cells, [r.label for r in rows], [r.captions for r in rows])


def run_render_demo(
    out_dir: str | Path,
    face_model: MorphableModel,
    *,
    resolution: int = 160,
    columns: int = 7,
    backend: str = "auto",
    device: str | torch.device = "cpu",
) -> dict[str, object]:
    """Render the parameter sweep of ``face_model`` to ``out_dir``.

    Writes ``sweep.png`` (the labelled grid), ``mean.png`` (the mean face at 2x resolution) and
    ``run.json``. Returns a summary (paths, image count, seconds).
    """
    from stylerig.outputs import claim_output_dir, save_png, staged_outputs, write_run_json
    from stylerig.viz import to_uint8

    t0 = time.perf_counter()
    out = claim_output_dir(out_dir, "render-demo")
    fm = face_model.to(device)
    renderer = FaceRenderer(fm, resolution, Camera(), backend=backend)  # type: ignore[arg-type]
    rows = default_sweep(fm, columns)
    grid = render_sweep(renderer, rows)
    with torch.no_grad():
        p0 = params.replace(params.zeros(1), "illumination", key_light(1)).to(fm.mean_shape.device)
        big = FaceRenderer(fm, 2 * resolution, Camera(), backend=backend)(p0)  # type: ignore[arg-type]
    with staged_outputs(out) as stage:  # the three files land together or not at all
        save_png(stage / "sweep.png", grid)
        save_png(stage / "mean.png", to_uint8(big.image)[0])
        write_run_json(
            stage,
            "render-demo",
            {"resolution": resolution, "columns": columns, "backend": backend, "device": str(device)},
            assets={
                "face_model": {"name": fm.name, "source": fm.source or "built-in", "licence": fm.licence}
            },
        )
    return {
        "sweep": str(out / "sweep.png"),
        "mean": str(out / "mean.png"),
        "images": sum(r.p.shape[0] for r in rows) + 1,
        "seconds": round(time.perf_counter() - t0, 2),
    }
