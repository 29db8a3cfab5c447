"""Small runtime contracts used at module boundaries (in the spirit of ``misc.assert_shape``).

Dimension specs are ints (exact), strings (named: all tensors checked in one call must agree on the
same name, e.g. ``"B"``), or ``None`` (any size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from stylerig.errors import InputError

Dim = int | str | None


def check_tensor(
    x: object,
    name: str,
    shape: Sequence[Dim] | None = None,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    finite: bool = False,
    sizes: dict[str, int] | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the given shape/dtype (and finite) or raise :class:`InputError`.

    Args:
        x: the object to check.
        name: how the error message calls it (``"p"``, ``"pos"``).
        shape: expected shape; see the module docstring.
        dtypes: allowed dtypes (any when ``None``).
        finite: also require every value to be finite (no NaN / inf).
        sizes: a dict shared between calls that binds named dims (``"B"``) to sizes.

    Returns:
        ``x`` itself, so the call can be used inline.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        want = "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"
        if x.ndim != len(shape):
            raise InputError(f"{name} must have shape {want}, got {list(x.shape)}")
        bound = {} if sizes is None else sizes
        for dim, (got, spec) in enumerate(zip(x.shape, shape, strict=True)):
            if spec is None:
                continue
            if isinstance(spec, str):
                if spec in bound and bound[spec] != got:
                    raise InputError(
                        f"{name} dimension {dim} ({spec}) is {got}, but {spec}={bound[spec]} elsewhere"
                    )
                bound[spec] = got
            elif got != spec:
                raise InputError(f"{name} must have shape {want}, got {list(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise InputError(f"{name} must have dtype {allowed}, got {str(x.dtype).replace('torch.', '')}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(
            f"{name} contains {bad} NaN or infinite value(s)",
            hint="check the upstream computation or the file the values came from",
        )
    return x


def parse_named_weights(text: str, what: str, hint: str) -> list[tuple[str, float]]:
    """``"a=1, b=2.5"`` -> ``[("a", 1.0), ("b", 2.5)]`` (names stripped, empty entries skipped).

    Raises:
        InputError: ``bad {what} 'entry'`` (with ``hint``) for an entry without ``=``, a value that is not
            a finite number, or a negative one. The names are the caller's to check.
    """
    out: list[tuple[str, float]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise InputError(f"bad {what} {item!r}", hint=hint)
        out.append((name.strip(), weight))
    return out
