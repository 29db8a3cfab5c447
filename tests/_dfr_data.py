"""Tiny fabricated sample sets for the DFR and trainer tests (the real on-disk format, made with numpy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from stylerig import params
from stylerig.data import FORMAT, FORMAT_VERSION, MANIFEST, array_specs
from stylerig.render import FaceRenderer

RES = 16
NUM_WS, W_DIM = 2, 8


def true_params(n: int, seed: int = 0) -> torch.Tensor:
    """p [n, 257]: small rotations, a little identity/expression, the tiny sphere 2 dm behind the origin."""
    g = torch.Generator().manual_seed(seed)
    rot = 0.25 * torch.randn(n, 3, generator=g)
    ident = torch.zeros(n, 80)
    ident[:, :3] = torch.randn(n, 3, generator=g)
    refl = torch.zeros(n, 80)
    refl[:, :2] = torch.randn(n, 2, generator=g)
    trans = torch.tensor([0.0, 0.0, -2.0]).expand(n, 3)
    return params.concat(identity=ident, reflectance=refl, rotation=rot, translation=trans)


def write_tiny_set(
    root: Path, face_model: torch.nn.Module, n: int = 24, *, landmarks: bool = True, seed: int = 0
) -> Path:
    """A sample set of ``n`` renders of ``face_model``: ws [n, 2, 8] = a fixed linear map of p's varied
    values plus noise, images 16x16, exact landmarks and params; manifest in the documented format."""
    p = true_params(n, seed)
    g = torch.Generator().manual_seed(seed + 1)
    varied = torch.cat(
        [params.get(p, "rotation"), params.get(p, "identity")[:, :3], params.get(p, "reflectance")[:, :2]], 1
    )
    mix = torch.randn(varied.shape[1], NUM_WS * W_DIM, generator=g)
    ws = (varied @ mix + 0.01 * torch.randn(n, NUM_WS * W_DIM, generator=g)).view(n, NUM_WS, W_DIM)
    renderer = FaceRenderer(face_model, RES, backend="torch")
    with torch.no_grad():
        out = renderer(p)
    images = ((out.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = {
        "ws": ws.numpy().astype(np.float32),
        "images": images,
        "seeds": np.arange(n, dtype=np.int64),
        "params": p.numpy().astype(np.float32),
    }
    if landmarks:
        arrays["landmarks"] = out.landmarks.numpy().astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    specs = array_specs(n, NUM_WS, W_DIM, RES, landmarks=landmarks, params=True)
    for name, arr in arrays.items():
        assert arr.shape == specs[name][0], name
        np.save(root / f"{name}.npy", arr)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "n": n,
        "num_ws": NUM_WS,
        "w_dim": W_DIM,
        "resolution": RES,
        "generator": {"path": None, "note": "fabricated for tests"},
        "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root
