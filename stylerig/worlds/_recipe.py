"""The shared command line of the world's resumable training recipes (generator and estimator)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch

from stylerig.errors import StylerigError


def recipe_main(
    description: str, config_cls: type, train: Callable[..., Any], argv: list[str] | None = None
) -> None:
    """``python -m <recipe> --out DIR (--minutes M | --steps N) [--seed S] [--no-resume] [--<field> V ...]``.

    Every field of the dataclass ``config_cls`` becomes an option (underscores as dashes, the field's
    default and type); then ``train(out, steps, minutes=, resume=, seed=, config=)`` runs with the
    config's ``threads`` torch threads. A :class:`~stylerig.errors.StylerigError` is printed as one
    message (and its hint) with exit status 2.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", required=True, help="output folder (resumed when it holds a checkpoint)")
    ap.add_argument("--minutes", type=float, default=None, help="total training wall-time budget")
    ap.add_argument("--steps", type=int, default=None, help="total step budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-resume", action="store_true")
    for f in fields(config_cls):
        name = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):  # --x / --no-x (type=bool would read "False" as True)
            ap.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(name, type=type(f.default), default=f.default)
    a = ap.parse_args(argv)
    cfg = config_cls(**{f.name: getattr(a, f.name) for f in fields(config_cls)})
    torch.set_num_threads(cfg.threads)
    if a.minutes is None and a.steps is None:
        ap.error("give --minutes or --steps")
    try:
        train(a.out, a.steps, minutes=a.minutes, resume=not a.no_resume, seed=a.seed, config=cfg)
    except StylerigError as e:  # a person's mistake: one message and exit status 2, as the CLI does
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        raise SystemExit(2) from None
