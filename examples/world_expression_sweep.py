"""Render docs/images/world-expressions.png: does the world's generator draw each expression factor?

For one held-out seed, each expression factor in turn is set to -2, -1, 0, 1, 2 (sd of the prior) with the
other factors kept. Each pair of rows is the world's render of those factors (what the generator was
taught) and the generator's image of the same z. Optionally a second generator (``--compare``, e.g. an
earlier build) adds a third row per factor.

    python examples/world_expression_sweep.py [--out docs/images/world-expressions.png] [--seed 2000001]
"""

from __future__ import annotations

import argparse

import torch

from stylerig.gan import load_generator
from stylerig.outputs import save_png
from stylerig.viz import to_uint8
from stylerig.worlds import load_world
from stylerig.worlds.prior import FACTOR_GROUPS, FACTOR_NAMES, factors_to_world

VALUES = (-2.0, -1.0, 0.0, 1.0, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/images/world-expressions.png")
    ap.add_argument("--seed", type=int, default=2_000_001)
    ap.add_argument("--factors", default="smile,eye_close,smile_asym,mouth_stretch")
    ap.add_argument("--compare", default=None, help="another world generator.safetensors (third row)")
    args = ap.parse_args()

    world = load_world()
    others = [load_generator(args.compare).eval()] if args.compare else []
    rows = []
    for name in args.factors.split(","):
        if name not in FACTOR_GROUPS["expression"]:
            ap.error(f"{name} is not an expression factor: {', '.join(FACTOR_GROUPS['expression'])}")
        z = world.z([args.seed]).repeat(len(VALUES), 1)
        z[:, FACTOR_NAMES.index(name)] = torch.tensor(VALUES, dtype=z.dtype)
        with torch.no_grad():
            p, scene = factors_to_world(z)
            rows.append(world.render(p, scene)[0])
            rows.append(world.generator(z, truncation_psi=1, noise_mode="const"))
            rows += [g(z, noise_mode="const") for g in others]
    grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)  # [3, rows*128, 5*128]
    save_png(args.out, to_uint8(grid[None])[0])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
