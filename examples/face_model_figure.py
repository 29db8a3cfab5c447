"""Render the figure of the built-in face model in docs/images/procedural-face.png.

The mean face at three yaws, then -2 sd / 0 / +2 sd along the main identity and expression directions
(one-sided expressions such as jaw_open, which are only defined for positive values, show 0 / +1 / +2).

    python examples/face_model_figure.py [--out docs/images/procedural-face.png] [--resolution 128]
"""

from __future__ import annotations

import argparse
import math

import torch

from stylerig import params
from stylerig.face import load_face_model
from stylerig.face.procedural import ONE_SIDED_EXPRESSIONS
from stylerig.outputs import save_png
from stylerig.render import FaceRenderer
from stylerig.render.sweep import SweepRow, key_light, render_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/images/procedural-face.png")
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()

    fm = load_face_model()
    base = params.replace(params.zeros(3), "illumination", key_light(3))
    rows = []
    p = base.clone()
    params.get(p, "rotation")[:, 0] = torch.tensor([-30.0, 0.0, 30.0]) * math.pi / 180
    rows.append(SweepRow("mean face", p, ["yaw -30°", "yaw 0°", "yaw +30°"]))
    for group, names in (
        ("identity", fm.component_names["identity"][:4]),
        ("expression", ["jaw_open", "smile", "eye_close", "brow_raise", "pucker", "frown"]),
    ):
        for name in names:
            i = fm.component_names[group].index(name)
            values = [0.0, 1.0, 2.0] if name in ONE_SIDED_EXPRESSIONS else [-2.0, 0.0, 2.0]
            p = base.clone()
            params.get(p, group)[:, i] = torch.tensor(values)
            rows.append(SweepRow(name.replace("_", " "), p, [f"{v:+.0f} sd" for v in values]))
    grid = render_sweep(FaceRenderer(fm, args.resolution, backend="torch"), rows)
    print(save_png(args.out, grid))


if __name__ == "__main__":
    main()
