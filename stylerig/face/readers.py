"""Readers that turn Basel face-model files into a :class:`~stylerig.face.model.MorphableModel`.

Supported sources (exact on-disk formats in ``shared/reference/formats.md``, section B3):

* Deep3DFaceRecon's ``BFM_model_front.mat`` (35,709 vertices) -> :func:`read_deep3d_front`;
* Basel 2009 ``01_MorphableModel.mat`` + Guo et al.'s ``Exp_Pca.bin`` + ``std_exp.txt`` + the index files
  of Deep3DFaceRecon's ``BFM/`` folder -> :func:`read_bfm2009` (the ``transferBFM09`` build, done here);
* Basel 2017 statismo ``.h5`` -> :func:`read_bfm2017`;
* :func:`load_face_model` dispatches on a path (or ``"builtin"``) and caches conversions as safetensors.

Every reader returns the conventions of :mod:`stylerig.face.model`: decimetres, x to the subject's left,
y up, z towards the camera, mean shape re-centred on its mean vertex (Deep3DFaceRecon's ``recenter=True``),
sigma-scaled bases, albedo in [0, 1], 0-based int64 triangles wound counter-clockwise seen from outside
(:func:`orient_outward`), 68 iBUG landmarks and a bool skin mask. Any missing, truncated, corrupt or
wrong-kind file raises one :class:`~stylerig.errors.AssetError` that says what was expected and where
to obtain it; no raw scipy / h5py / numpy exception escapes for a bad file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from stylerig.errors import AssetError, InputError, StylerigError
from stylerig.face.model import MorphableModel

__all__ = [
    "BFM2009_LICENCE",
    "BFM2017_LICENCE",
    "DEEP3D_FRONT_LICENCE",
    "STANDARD_NAMES",
    "load_face_model",
    "orient_outward",
    "read_bfm2009",
    "read_bfm2017",
    "read_deep3d_front",
]

PathLike = str | os.PathLike[str]
#: 68 landmark vertex indices: a .txt / .npy file, or an int array / tensor [68].
LandmarkSpec = PathLike | np.ndarray | torch.Tensor | Sequence[int]

# ----------------------------------------------------------------------------------------------------
# Units, component counts, licences and hints.

UM_PER_DM = 1e5  # Basel 2009 / Exp_Pca.bin store micrometres
MM_PER_DM = 100.0  # Basel 2017 stores millimetres
TEX_SCALE = 255.0  # Basel 2009 colours are 0-255
K_ID, K_EXP, K_ALB = 80, 64, 80  # components kept (the 257 layout)
NUM_LANDMARKS = 68

_BFM_URL = "https://faces.dmi.unibas.ch/bfm/"
_D3D_URL = "https://github.com/sicxu/Deep3DFaceRecon_pytorch"

BFM2009_LICENCE = (
    "Basel Face Model 2009 (University of Basel, " + _BFM_URL + "): non-commercial research licence, "
    "free registration, no redistribution; expression basis Exp_Pca.bin from Guo et al. 3DFace "
    "(github.com/Juyong/3DFace), research use; vertex/landmark index files from Deep3DFaceRecon_pytorch "
    "(MIT code, data derived from BFM and 3DDFA)"
)
DEEP3D_FRONT_LICENCE = (
    "BFM_model_front.mat built by Deep3DFaceRecon_pytorch (MIT code) from the Basel Face Model 2009 and "
    "Guo et al.'s expression basis; the data keeps the BFM licence: non-commercial research only, "
    "free registration at " + _BFM_URL + ", no redistribution"
)
BFM2017_LICENCE = (
    "Basel Face Model 2017 (University of Basel, " + _BFM_URL + "): non-commercial research licence, "
    "free registration, no redistribution"
)

_HINT_BFM09 = (
    "download 01_MorphableModel.mat (Basel Face Model 2009, PublicMM1) from " + _BFM_URL + " "
    "(free registration; non-commercial research licence; it cannot be redistributed)"
)
_HINT_BFM17 = (
    "download model2017-1_bfm_nomouth.h5 (Basel Face Model 2017) from " + _BFM_URL + " "
    "(free registration; non-commercial research licence; it cannot be redistributed)"
)
_HINT_EXP = (
    "Exp_Pca.bin comes from Guo et al.'s 3DFace repository (https://github.com/Juyong/3DFace, "
    "CoarseData/Exp_Pca.bin; research use); put it next to 01_MorphableModel.mat or pass exp_pca_bin="
)
_HINT_D3D_FILES = (
    "std_exp.txt, BFM_exp_idx.mat, BFM_front_idx.mat and facemodel_info.mat ship in the BFM/ folder of "
    "Deep3DFaceRecon_pytorch (" + _D3D_URL + "; MIT code, data derived from BFM/3DDFA); "
    "put them next to 01_MorphableModel.mat or pass them as keyword arguments"
)
_HINT_FRONT = (
    "BFM_model_front.mat is built by Deep3DFaceRecon_pytorch's util/load_mats.py (transferBFM09; MIT code, "
    "the data keeps the BFM licence: " + _BFM_URL + ", non-commercial research, no redistribution); "
    "or pass 01_MorphableModel.mat and stylerig builds the same model"
)
_HINT_ANY = (
    "pass 'builtin', a stylerig .safetensors face model, Deep3DFaceRecon's BFM_model_front.mat, "
    "Basel 2009's 01_MorphableModel.mat (with Exp_Pca.bin and the Deep3DFaceRecon BFM/ index files "
    "beside it) or a Basel 2017 .h5 (Basel models: " + _BFM_URL + ", free registration, non-commercial)"
)

#: Keyword of :func:`read_bfm2009` -> the file name :func:`load_face_model` looks for beside the .mat.
STANDARD_NAMES: dict[str, str] = {
    "exp_pca_bin": "Exp_Pca.bin",
    "std_exp_txt": "std_exp.txt",
    "exp_idx_mat": "BFM_exp_idx.mat",
    "front_idx_mat": "BFM_front_idx.mat",
    "info_mat": "facemodel_info.mat",
}

_D3D_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase")
_INFO_KEYS = ("tri", "keypoints", "skinmask")
_STATISMO = ("shape/model/mean", "shape/model/pcaBasis", "shape/model/pcaVariance", "shape/representer/cells")
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# Winding.


def orient_outward(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Wind triangles counter-clockwise seen from outside (the convention of :mod:`stylerig.face.model`).

    The test is global: the area-weighted face normals ``cross(v1 - v0, v2 - v0)`` must point away
    from the vertex centroid on average, i.e. ``sum_f n_f . (c_f - centroid) > 0`` (for a closed surface
    this is 3x its volume, for a face shell it is positive when the normals face outwards). If the sum is
    negative, columns 1 and 2 are swapped for every triangle. Consistently wound input is assumed.

    Args:
        vertices: float [V, 3], any unit (only the sign of the test matters).
        triangles: int [F, 3], 0-based vertex indices.

    Returns:
        int64 [F, 3] on the device of ``triangles``: the input, or the input with columns 1 and 2 swapped.
    """
    v = vertices.detach().to(torch.float64)
    t = triangles.to(torch.int64)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    normals = torch.linalg.cross(b - a, c - a)  # [F, 3], |n| = 2 * area
    score = (normals * ((a + b + c) / 3.0 - v.mean(0))).sum()
    if float(score) < 0.0:
        return t[:, [0, 2, 1]].contiguous()
    return t.contiguous()


# ----------------------------------------------------------------------------------------------------
# Small file helpers: every failure becomes one AssetError.


def _require_file(path: PathLike | None, what: str, hint: str) -> Path:
    if path is None:
        raise AssetError(f"{what} is required but was not given", hint=hint)
    p = Path(path).expanduser()
    if not p.is_file():
        raise AssetError(f"{what} not found: {p}", hint=hint)
    return p


@contextlib.contextmanager
def _reading(path: Path, what: str, hint: str) -> Iterator[None]:
    """Turn any parser exception inside the block into an AssetError naming ``path``."""
    try:
        yield
    except (StylerigError, MemoryError):
        raise
    except Exception as e:  # scipy, h5py, numpy and zlib raise many unrelated types for bad files
        raise AssetError(f"{path} is not a readable {what} ({e.__class__.__name__}: {e})", hint=hint) from e


def _bad(path: Path, msg: str, hint: str) -> AssetError:
    return AssetError(f"{path}: {msg}", hint=hint)


def _check_mat_complete(path: Path, what: str, hint: str) -> None:
    """Walk the top-level data elements of a MATLAB v5 file and fail if the last one is cut short.

    scipy only notices truncation inside the variables it is asked for; this catches the rest (a v5 file is
    a 128-byte header, then elements of an 8-byte tag (uint32 type, uint32 byte count) plus data, padded
    to 8 bytes unless compressed). Files that do not look like v5 are left to scipy.
    """
    import struct

    with _reading(path, f"{what} (MATLAB v5 .mat)", hint), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            return
        order = "<" if head[126:128] == b"IM" else ">"
        pos = 128
        while pos < size:
            f.seek(pos)
            tag = f.read(8)
            if len(tag) < 8:
                if tag.strip(b"\0"):
                    raise _bad(path, f"{what} is truncated (a partial element header at byte {pos})", hint)
                return
            mdtype, nbytes = struct.unpack(order + "II", tag)
            if mdtype >> 16:  # small data element: data packed into the tag
                pos += 8
                continue
            end = pos + 8 + (nbytes if mdtype == 15 else -(-nbytes // 8) * 8)  # 15 = miCOMPRESSED
            if end > size and pos + 8 + nbytes > size:
                raise _bad(
                    path, f"{what} is truncated ({size} bytes; the element at byte {pos} needs {end})", hint
                )
            pos = end


def _mat_names(path: Path, what: str, hint: str) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape of a MATLAB v5 file, without loading the data."""
    import scipy.io

    _check_mat_complete(path, what, hint)
    with _reading(path, f"{what} (MATLAB v5 .mat)", hint):
        return {name: tuple(shape) for name, shape, _cls in scipy.io.whosmat(str(path))}


def _loadmat(path: Path, keys: Sequence[str], what: str, hint: str) -> dict[str, np.ndarray]:
    """Load only ``keys`` from a MATLAB v5 file; a missing key is an AssetError."""
    import scipy.io

    _check_mat_complete(path, what, hint)
    with _reading(path, f"{what} (MATLAB v5 .mat)", hint):
        data = scipy.io.loadmat(str(path), variable_names=list(keys))
    missing = [k for k in keys if k not in data]
    if missing:
        raise _bad(path, f"{what} lacks the variable(s) {', '.join(missing)}", hint)
    out = {}
    for k in keys:
        a = data[k]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise _bad(path, f"variable {k!r} is not a numeric array", hint)
        out[k] = a
    return out


def _floats(a: np.ndarray, shape: tuple[int, ...], name: str, path: Path, hint: str) -> np.ndarray:
    """Check size/finiteness and return float32 of ``shape`` (``-1`` allowed once)."""
    want = int(np.prod([s for s in shape if s != -1]))
    fits = a.size > 0 and a.size % want == 0 if -1 in shape else a.size == want
    if not fits:
        raise _bad(path, f"{name} has shape {list(a.shape)}, expected {list(shape)}", hint)
    out = np.asarray(a, dtype=np.float32).reshape(shape)
    if not np.isfinite(out).all():
        raise _bad(path, f"{name} contains NaN or infinite values (corrupt file?)", hint)
    return out


def _indices(a: np.ndarray, name: str, upper: int, path: Path, hint: str, *, one_based: bool) -> np.ndarray:
    """Integer-valued indices -> int64, 0-based, checked to lie in [0, upper)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise _bad(path, f"{name} must hold whole-number indices", hint)
    elif a.dtype.kind not in "iub":
        raise _bad(path, f"{name} must hold integer indices, got dtype {a.dtype}", hint)
    out = a.astype(np.int64) - (1 if one_based else 0)
    if out.size and (out.min() < 0 or out.max() >= upper):
        base = "1-based" if one_based else "0-based"
        lo, hi = (1, upper) if one_based else (0, upper - 1)
        raise _bad(
            path,
            f"{name} indices out of range: {base} values span [{out.min() + one_based}, "
            f"{out.max() + one_based}], expected [{lo}, {hi}] (mismatched files?)",
            hint,
        )
    return out


def _triangles(a: np.ndarray, name: str, nv: int, path: Path, hint: str, *, one_based: bool) -> np.ndarray:
    if a.ndim != 2 or 3 not in a.shape or a.size == 0:
        raise _bad(path, f"{name} has shape {list(a.shape)}, expected [F, 3] or [3, F]", hint)
    tri = a if a.shape[1] == 3 else a.T
    return _indices(tri, name, nv, path, hint, one_based=one_based)


def _rows(vertex_ids: np.ndarray) -> np.ndarray:
    """Vertex ids [n] -> row ids [3n] of an xyz-interleaved [3V, ...] array."""
    return (3 * vertex_ids[:, None] + np.arange(3)).reshape(-1)


def _read_landmarks(spec: LandmarkSpec, nv: int) -> np.ndarray:
    """68 vertex indices (0-based) from a .txt / .npy file or an int array -> int64 [68]."""
    hint = "pass 68 0-based vertex indices in iBUG order: a .txt (whitespace/comma separated) or .npy file"
    if isinstance(spec, (str, os.PathLike)):
        path = _require_file(spec, "landmark index file", hint)
        with _reading(path, "landmark index file (.txt or .npy)", hint):
            if path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
            else:
                arr = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
        src = path
    else:
        arr = spec.detach().cpu().numpy() if isinstance(spec, torch.Tensor) else np.asarray(spec)
        src = None
    arr = np.asarray(arr).reshape(-1)
    try:
        if arr.size != NUM_LANDMARKS:
            raise _bad(Path("landmarks"), f"{arr.size} indices given, expected {NUM_LANDMARKS}", hint)
        return _indices(arr, "landmarks", nv, src or Path("landmarks"), hint, one_based=False)
    except AssetError as e:
        if src is None:  # a bad array is an argument error, not a file error
            raise InputError(e.message, hint=e.hint) from None
        raise


# ----------------------------------------------------------------------------------------------------
# Assembly.


def _assemble(
    mean_shape: np.ndarray,
    id_basis: np.ndarray,
    exp_basis: np.ndarray,
    mean_albedo: np.ndarray,
    alb_basis: np.ndarray,
    triangles: np.ndarray,
    landmarks: np.ndarray,
    skin_mask: np.ndarray,
    *,
    recenter: bool,
    name: str,
    licence: str,
    source: Path,
    hint: str,
) -> MorphableModel:
    """numpy pieces -> MorphableModel (float32 / int64 / bool), re-centred, wound outwards."""
    mean_shape = np.asarray(mean_shape, dtype=np.float32)
    if recenter:
        mean_shape = mean_shape - mean_shape.mean(0, keepdims=True)
    for nm, b in (("identity basis", id_basis), ("expression basis", exp_basis), ("albedo basis", alb_basis)):
        if not np.isfinite(b).all():
            raise _bad(source, f"the {nm} contains NaN or infinite values (corrupt file?)", hint)
    verts = torch.from_numpy(np.ascontiguousarray(mean_shape))
    tri = orient_outward(verts, torch.from_numpy(np.ascontiguousarray(triangles, dtype=np.int64)))
    f32 = functools.partial(np.ascontiguousarray, dtype=np.float32)
    try:
        return MorphableModel(
            verts,
            torch.from_numpy(f32(id_basis)),
            torch.from_numpy(f32(exp_basis)),
            torch.from_numpy(f32(mean_albedo)),
            torch.from_numpy(f32(alb_basis)),
            tri,
            torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(skin_mask, dtype=bool)),
            name=name,
            licence=licence,
            source=str(source),
        )
    except InputError as e:  # inconsistent sizes inside the file(s)
        raise AssetError(f"{source}: inconsistent face model data: {e.message}", hint=hint) from e


# ----------------------------------------------------------------------------------------------------
# Deep3DFaceRecon BFM_model_front.mat.


def read_deep3d_front(path: PathLike, *, info_mat: PathLike | None = None) -> MorphableModel:
    """Read Deep3DFaceRecon's ``BFM_model_front.mat`` (MATLAB v5, written by ``transferBFM09``).

    File variables (N = 35,709 vertices, F = 70,789 triangles in the real file):
    ``meanshape`` [1, 3N] dm, ``idBase`` [3N, 80] dm/sigma, ``exBase`` [3N, 64] dm/sigma, ``meantex`` [1, 3N]
    0-255, ``texBase`` [3N, 80] 0-255/sigma, and (copied from ``facemodel_info.mat``) ``tri`` [F, 3],
    ``keypoints`` [1, 68], ``skinmask`` [1, N] with 1-based float indices. When ``tri`` / ``keypoints`` /
    ``skinmask`` are absent, they are read from ``info_mat`` (default: ``facemodel_info.mat`` beside ``path``).

    Conversion: the mean shape is re-centred on its mean vertex (Deep3DFaceRecon's ``recenter=True``);
    ``meantex`` and ``texBase`` are divided by 255; indices become 0-based int64; the winding is made
    counter-clockwise seen from outside (:func:`orient_outward`); ``skinmask != 0`` is the skin.

    Args:
        path: the ``BFM_model_front.mat`` file.
        info_mat: optional ``facemodel_info.mat`` for files that lack the triangle/landmark variables.

    Returns:
        MorphableModel with V = N vertices, bases padded to 80 / 64 / 80, ``name="bfm2009-front"``,
        ``licence=DEEP3D_FRONT_LICENCE``.

    Raises:
        AssetError: missing, truncated, corrupt or wrong-kind file (hint says where to get it).
    """
    what = "Deep3DFaceRecon BFM_model_front.mat"
    src = _require_file(path, what, _HINT_FRONT)
    names = _mat_names(src, what, _HINT_FRONT)
    missing = [k for k in _D3D_KEYS if k not in names]
    if missing:
        raise _bad(src, f"not a {what}: lacks the variable(s) {', '.join(missing)}", _HINT_FRONT)
    here = [k for k in _INFO_KEYS if k in names]
    d = _loadmat(src, [*_D3D_KEYS, *here], what, _HINT_FRONT)
    rest = [k for k in _INFO_KEYS if k not in here]
    if rest:
        info = _require_file(
            info_mat if info_mat is not None else src.parent / STANDARD_NAMES["info_mat"],
            f"facemodel_info.mat (needed because {src.name} lacks {', '.join(rest)})",
            _HINT_D3D_FILES,
        )
        d.update(_loadmat(info, rest, "Deep3DFaceRecon facemodel_info.mat", _HINT_D3D_FILES))

    mean = _floats(d["meanshape"], (-1, 3), "meanshape", src, _HINT_FRONT)
    nv = mean.shape[0]
    bases = {}
    for key in ("idBase", "exBase", "texBase"):
        b = d[key]
        if b.ndim != 2 or b.shape[0] != 3 * nv:
            raise _bad(src, f"{key} has shape {list(b.shape)}, expected [{3 * nv}, K]", _HINT_FRONT)
        bases[key] = _floats(b, b.shape, key, src, _HINT_FRONT)
    tex = _floats(d["meantex"], (nv, 3), "meantex", src, _HINT_FRONT) / TEX_SCALE
    tri = _triangles(d["tri"], "tri", nv, src, _HINT_FRONT, one_based=True)
    kp = d["keypoints"].reshape(-1)
    if kp.size != NUM_LANDMARKS:
        raise _bad(src, f"keypoints holds {kp.size} indices, expected {NUM_LANDMARKS}", _HINT_FRONT)
    lm = _indices(kp, "keypoints", nv, src, _HINT_FRONT, one_based=True)
    skin = _floats(d["skinmask"], (nv,), "skinmask", src, _HINT_FRONT) != 0
    return _assemble(
        mean,
        bases["idBase"],
        bases["exBase"],
        tex,
        bases["texBase"] / TEX_SCALE,
        tri,
        lm,
        skin,
        recenter=True,
        name="bfm2009-front",
        licence=DEEP3D_FRONT_LICENCE,
        source=src,
        hint=_HINT_FRONT,
    )


# ----------------------------------------------------------------------------------------------------
# Basel 2009 + Guo et al. expression basis (the transferBFM09 build).


def _read_exp_pca(path: Path, n_trim: int, k_max: int) -> tuple[np.ndarray, int]:
    """Exp_Pca.bin -> (expPC float32 [3 n_trim, min(k_max, exp_dim)] in um, exp_dim)."""
    what = "Exp_Pca.bin expression basis"
    with _reading(path, what, _HINT_EXP):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
        if len(head) < 4:
            raise _bad(path, f"{what} is truncated ({size} bytes; the header alone is 4)", _HINT_EXP)
        exp_dim = int(np.frombuffer(head, dtype="<i4")[0])
        if not 1 <= exp_dim <= 10_000:
            raise _bad(
                path, f"header says {exp_dim} components; expected 79 (not an Exp_Pca.bin?)", _HINT_EXP
            )
        expected = 4 + 4 * 3 * n_trim * (1 + exp_dim)
        if size != expected:
            raise _bad(
                path,
                f"{what} has {size} bytes, but int32 dim={exp_dim} + float32 mean and basis on the "
                f"{n_trim}-vertex trim of BFM_exp_idx.mat need {expected} (truncated or mismatched file)",
                _HINT_EXP,
            )
        k = min(k_max, exp_dim)
        pc = np.fromfile(path, dtype="<f4", count=k * 3 * n_trim, offset=4 + 4 * 3 * n_trim)
    pc = pc.reshape(k, 3 * n_trim).T  # component-major on disk -> [3 n_trim, k]
    if not np.isfinite(pc).all():
        raise _bad(path, f"{what} contains NaN or infinite values (corrupt file?)", _HINT_EXP)
    return pc, exp_dim


def _read_std_exp(path: Path, exp_dim: int) -> np.ndarray:
    """std_exp.txt -> float32 [exp_dim] standard deviations (um)."""
    with _reading(path, "std_exp.txt (one line of expression standard deviations)", _HINT_D3D_FILES):
        std = np.array(path.read_text().split(), dtype=np.float64)
    if std.size != exp_dim or not np.isfinite(std).all() or (std < 0).any():
        raise _bad(
            path,
            f"std_exp.txt holds {std.size} values, expected {exp_dim} finite non-negative standard "
            "deviations (one per Exp_Pca.bin component)",
            _HINT_D3D_FILES,
        )
    return std.astype(np.float32)


def _restrict_triangles(tl: np.ndarray, keep: np.ndarray, nv_full: int) -> np.ndarray:
    """Triangles [F, 3] on the full mesh -> those whose 3 vertices are all kept, re-indexed to ``keep`` order."""
    new_id = np.full(nv_full, -1, dtype=np.int64)
    new_id[keep] = np.arange(keep.size)
    t = new_id[tl]
    return t[(t >= 0).all(1)]


def read_bfm2009(
    morphable_model_mat: PathLike,
    exp_pca_bin: PathLike,
    std_exp_txt: PathLike,
    *,
    exp_idx_mat: PathLike,
    front_idx_mat: PathLike | None = None,
    info_mat: PathLike | None = None,
    crop: bool | None = None,
    landmarks: LandmarkSpec | None = None,
) -> MorphableModel:
    """Build the Deep3DFaceRecon face model from the original Basel 2009 files (``transferBFM09``).

    Inputs (M = 53,490 BFM vertices, T = 53,215 trimmed vertices, N = 35,709 front vertices in the real
    files): ``01_MorphableModel.mat`` (``shapeMU`` [3M, 1] um, ``shapePC`` [3M, 199], ``shapeEV`` [199]
    standard deviations, ``texMU`` / ``texPC`` / ``texEV`` in 0-255, ``tl`` [F, 3] 1-based, clockwise);
    ``Exp_Pca.bin`` (int32 dim = 79, float32 mean [3T], float32 basis [79, 3T], um); ``std_exp.txt``
    (79 standard deviations, um); ``BFM_exp_idx.mat`` (``trimIndex`` [T, 1], 1-based into M);
    ``BFM_front_idx.mat`` (``idx`` [N, 1], 1-based into T); ``facemodel_info.mat`` (``tri`` [F', 3],
    ``keypoints`` [1, 68], ``skinmask`` [1, N], 1-based on the front crop).

    Build: identity = ``shapePC[:, :80] * shapeEV[:80] / 1e5``; albedo = ``texPC[:, :80] * texEV[:80] / 255``;
    expression = ``expPC[:, :64] * std_exp[:64] / 1e5`` on the trim; mean shape ``shapeMU / 1e5`` re-centred
    on its mean vertex, mean albedo ``texMU / 255``. Vertices: with the front crop (``crop=True``, the
    default when ``front_idx_mat`` is given) ``trimIndex[idx]`` for shape/albedo and ``idx`` for expression,
    exactly like Deep3DFaceRecon; without it (``crop=False`` or no ``front_idx_mat``) all T trimmed vertices.

    Triangles: cropped and ``info_mat`` given -> ``facemodel_info`` ``tri`` (identical to Deep3DFaceRecon);
    otherwise BFM's ``tl`` restricted to triangles whose three vertices are kept, re-indexed.
    Landmarks: ``landmarks`` (68 0-based indices into the output vertices) if given; else ``keypoints``
    of ``info_mat`` (front-crop indices; without the crop mapped back to the trim through ``idx``, so
    ``front_idx_mat`` is still needed); else an AssetError. Skin mask: ``skinmask`` (False outside the
    front crop when uncropped), or all True without ``info_mat``. Winding: made counter-clockwise seen
    from outside (:func:`orient_outward`; BFM's ``tl`` is clockwise).

    Memory: bases are sliced to the kept rows and columns right after loading (float32), and only the
    first 64 expression components are read from ``Exp_Pca.bin``.

    Args:
        morphable_model_mat: ``01_MorphableModel.mat``.
        exp_pca_bin: ``Exp_Pca.bin``.
        std_exp_txt: ``std_exp.txt``.
        exp_idx_mat: ``BFM_exp_idx.mat``.
        front_idx_mat: ``BFM_front_idx.mat`` (optional).
        info_mat: ``facemodel_info.mat`` (optional; needed for the 68 landmarks unless ``landmarks`` is given).
        crop: apply the front crop (default: when ``front_idx_mat`` is given).
        landmarks: optional 68 landmark vertex indices (file or array, see :func:`load_face_model`).

    Returns:
        MorphableModel (V = N cropped, T uncropped), ``name`` ``"bfm2009-front"`` or ``"bfm2009"``,
        ``licence=BFM2009_LICENCE``.

    Raises:
        AssetError: a needed file is missing, truncated, corrupt, of the wrong kind, or inconsistent
            with the others.
    """
    bfm = _require_file(morphable_model_mat, "Basel 2009 model 01_MorphableModel.mat", _HINT_BFM09)
    exp_bin = _require_file(exp_pca_bin, "expression basis Exp_Pca.bin", _HINT_EXP)
    std_txt = _require_file(std_exp_txt, "expression standard deviations std_exp.txt", _HINT_D3D_FILES)
    trim_mat = _require_file(exp_idx_mat, "vertex trim index BFM_exp_idx.mat", _HINT_D3D_FILES)
    front = (
        None if front_idx_mat is None else _require_file(front_idx_mat, "BFM_front_idx.mat", _HINT_D3D_FILES)
    )
    info = None if info_mat is None else _require_file(info_mat, "facemodel_info.mat", _HINT_D3D_FILES)
    crop = front is not None if crop is None else bool(crop)
    if crop and front is None:
        raise AssetError("the front crop needs BFM_front_idx.mat (front_idx_mat=)", hint=_HINT_D3D_FILES)

    # File kind and sizes, before loading anything large.
    what = "Basel 2009 01_MorphableModel.mat"
    names = _mat_names(bfm, what, _HINT_BFM09)
    need = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")
    missing = [k for k in need if k not in names]
    if missing:
        raise _bad(bfm, f"not a {what}: lacks the variable(s) {', '.join(missing)}", _HINT_BFM09)
    n_full = int(np.prod(names["shapeMU"])) // 3
    if n_full == 0 or 3 * n_full != int(np.prod(names["shapeMU"])):
        raise _bad(bfm, f"shapeMU has shape {list(names['shapeMU'])}, expected [3M, 1]", _HINT_BFM09)

    # Vertex selection.
    t = _loadmat(trim_mat, ["trimIndex"], "BFM_exp_idx.mat", _HINT_D3D_FILES)["trimIndex"]
    trim = _indices(t.reshape(-1), "trimIndex", n_full, trim_mat, _HINT_D3D_FILES, one_based=True)
    n_trim = trim.size
    idx = None
    if front is not None:
        i = _loadmat(front, ["idx"], "BFM_front_idx.mat", _HINT_D3D_FILES)["idx"]
        idx = _indices(i.reshape(-1), "idx", n_trim, front, _HINT_D3D_FILES, one_based=True)
    sel_exp = idx if crop else np.arange(n_trim)
    sel_shape = trim[sel_exp]
    rows, nv = _rows(sel_shape), sel_shape.size

    # Shape and albedo: slice rows and columns right after loading, then drop the full arrays.
    def pca(mu_key: str, pc_key: str, ev_key: str, k_max: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        d = _loadmat(bfm, [mu_key, pc_key, ev_key], what, _HINT_BFM09)
        pc = d.pop(pc_key)
        if pc.ndim != 2 or pc.shape[0] != 3 * n_full:
            raise _bad(bfm, f"{pc_key} has shape {list(pc.shape)}, expected [{3 * n_full}, K]", _HINT_BFM09)
        k = min(k_max, pc.shape[1])
        ev = _floats(d[ev_key], (-1,), ev_key, bfm, _HINT_BFM09)
        if ev.size != pc.shape[1]:
            raise _bad(bfm, f"{ev_key} has {ev.size} values but {pc_key} {pc.shape[1]} columns", _HINT_BFM09)
        basis = np.asarray(pc[rows, :k], dtype=np.float32) * (ev[:k] / np.float32(scale))
        del pc
        mu = _floats(d[mu_key], (n_full * 3,), mu_key, bfm, _HINT_BFM09)[rows]
        return mu.reshape(nv, 3) / np.float32(scale), basis

    mean_shape, id_basis = pca("shapeMU", "shapePC", "shapeEV", K_ID, UM_PER_DM)
    mean_albedo, alb_basis = pca("texMU", "texPC", "texEV", K_ALB, TEX_SCALE)

    # Expression (on the trim).
    exp_pc, exp_dim = _read_exp_pca(exp_bin, n_trim, K_EXP)
    std = _read_std_exp(std_txt, exp_dim)
    exp_basis = exp_pc[_rows(sel_exp)] * (std[: exp_pc.shape[1]] / np.float32(UM_PER_DM))
    del exp_pc

    # Triangles, landmarks, skin.
    info_data = None
    if info is not None:
        keys = ["keypoints", "skinmask"] + (["tri"] if crop else [])
        info_data = _loadmat(info, keys, "Deep3DFaceRecon facemodel_info.mat", _HINT_D3D_FILES)
    if crop and info_data is not None:
        tri = _triangles(info_data["tri"], "tri", nv, info, _HINT_D3D_FILES, one_based=True)
    else:
        tl = _loadmat(bfm, ["tl"], what, _HINT_BFM09)["tl"]
        tri = _restrict_triangles(
            _triangles(tl, "tl", n_full, bfm, _HINT_BFM09, one_based=True), sel_shape, n_full
        )
        if tri.shape[0] == 0:
            raise _bad(
                bfm, "no triangle of tl has all three vertices in the selected vertices", _HINT_D3D_FILES
            )

    n_front = None if idx is None else idx.size
    skin = np.ones(nv, dtype=bool)
    if info_data is not None:
        if n_front is None:
            raise AssetError(
                "facemodel_info.mat indexes the front crop, so it needs BFM_front_idx.mat (front_idx_mat=)",
                hint=_HINT_D3D_FILES,
            )
        front_skin = _floats(info_data["skinmask"], (n_front,), "skinmask", info, _HINT_D3D_FILES) != 0
        if crop:
            skin = front_skin
        else:
            skin = np.zeros(nv, dtype=bool)
            skin[idx] = front_skin
    if landmarks is not None:
        lm = _read_landmarks(landmarks, nv)
    elif info_data is not None:
        kp = info_data["keypoints"].reshape(-1)
        if kp.size != NUM_LANDMARKS:
            raise _bad(info, f"keypoints holds {kp.size} indices, expected {NUM_LANDMARKS}", _HINT_D3D_FILES)
        lm = _indices(kp, "keypoints", n_front, info, _HINT_D3D_FILES, one_based=True)
        if not crop:
            lm = idx[lm]  # front-crop vertex -> trim vertex (= output vertex when uncropped)
    else:
        raise AssetError(
            "the 68 landmarks of the Basel 2009 model come from facemodel_info.mat (info_mat=), "
            "or pass landmarks= (68 0-based vertex indices into the built model)",
            hint=_HINT_D3D_FILES,
        )

    return _assemble(
        mean_shape,
        id_basis,
        exp_basis,
        mean_albedo,
        alb_basis,
        tri,
        lm,
        skin,
        recenter=True,
        name="bfm2009-front" if crop else "bfm2009",
        licence=BFM2009_LICENCE,
        source=bfm,
        hint=_HINT_BFM09,
    )


# ----------------------------------------------------------------------------------------------------
# Basel 2017 (statismo HDF5).


def _is_statismo(path: Path) -> bool:
    import h5py

    with _reading(path, "Basel 2017 statismo model (HDF5 .h5)", _HINT_BFM17), h5py.File(path, "r") as f:
        return all(k in f for k in _STATISMO)


def read_bfm2017(h5_path: PathLike, *, landmarks: LandmarkSpec | None = None) -> MorphableModel:
    """Read a Basel 2017 statismo model (``model2017-1_bfm_nomouth.h5``, ``model2017-1_face12_nomouth.h5``).

    File datasets (N vertices, K components): ``{shape,color,expression}/model/mean`` [3N] (mm, colour in
    [0, 1]), ``.../model/pcaBasis`` [3N, K] (unit-norm columns), ``.../model/pcaVariance`` [K] (variances),
    ``shape/representer/cells`` [3, F] (0-based). The ``expression`` group is optional (zero basis without it).

    Conversion: bases = ``pcaBasis[:, :k] * sqrt(pcaVariance[:k])`` with k = 80 / 64 / 80 (fewer are
    padded with zeros); shape and expression in mm / 100 = dm; mean shape = shape mean + expression mean
    (as eos composes them), re-centred on its mean vertex; colour unchanged; cells transposed to [F, 3]
    and wound counter-clockwise seen from outside (:func:`orient_outward`). Skin mask: all True.

    Args:
        h5_path: the ``.h5`` file.
        landmarks: required: 68 0-based vertex indices in iBUG order (a .txt or .npy file, or an int
            array [68]). The BFM 2017 files carry no 68-point annotation, so there is no automatic choice.

    Returns:
        MorphableModel with V = N, ``name="bfm2017"``, ``licence=BFM2017_LICENCE``.

    Raises:
        AssetError: missing / truncated / corrupt / non-statismo file, or no ``landmarks``.
        InputError: ``landmarks`` given as an array of the wrong size or range.
    """
    import h5py

    what = "Basel 2017 statismo model (HDF5 .h5)"
    src = _require_file(h5_path, "Basel 2017 model (.h5)", _HINT_BFM17)
    if not _is_statismo(src):
        raise _bad(src, f"not a {what}: it lacks {', '.join(_STATISMO)}", _HINT_BFM17)
    if landmarks is None:
        raise AssetError(
            f"{src}: Basel 2017 models carry no 68-point landmarks; pass landmarks= (a .txt or .npy file, "
            "or an int array, of 68 0-based vertex indices in iBUG order)",
            hint="e.g. load_face_model('model2017-1_bfm_nomouth.h5', landmarks='bfm2017_ibug68.txt')",
        )

    def group(f: h5py.File, name: str, k_max: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(f[f"{name}/model/mean"][()], dtype=np.float64).reshape(-1)
        ds = f[f"{name}/model/pcaBasis"]
        var = np.asarray(f[f"{name}/model/pcaVariance"][()], dtype=np.float64).reshape(-1)
        if ds.ndim != 2 or ds.shape[0] != mean.size or var.size != ds.shape[1]:
            raise _bad(
                src,
                f"{name}: mean [{mean.size}], pcaBasis {list(ds.shape)}, pcaVariance [{var.size}] "
                "do not fit together (expected [3N], [3N, K], [K])",
                _HINT_BFM17,
            )
        k = min(k_max, ds.shape[1])
        if not np.isfinite(var[:k]).all() or (var[:k] < 0).any():
            raise _bad(src, f"{name}/model/pcaVariance has negative or non-finite values", _HINT_BFM17)
        basis = np.asarray(ds[:, :k], dtype=np.float32) * (np.sqrt(var[:k]) / scale).astype(np.float32)
        return (mean / scale).astype(np.float32), basis

    with _reading(src, what, _HINT_BFM17), h5py.File(src, "r") as f:
        shape_mean, id_basis = group(f, "shape", K_ID, MM_PER_DM)
        if all(f"color/model/{k}" in f for k in ("mean", "pcaBasis", "pcaVariance")):
            color_mean, alb_basis = group(f, "color", K_ALB, 1.0)
        else:
            raise _bad(
                src, f"not a {what} with colour: lacks color/model/{{mean,pcaBasis,pcaVariance}}", _HINT_BFM17
            )
        if "expression/model/pcaBasis" in f:
            exp_mean, exp_basis = group(f, "expression", K_EXP, MM_PER_DM)
        else:
            exp_mean, exp_basis = np.zeros_like(shape_mean), np.zeros((shape_mean.size, 0), np.float32)
        cells = np.asarray(f["shape/representer/cells"][()])

    nv = shape_mean.size // 3
    if nv == 0 or shape_mean.size != 3 * nv:
        raise _bad(src, f"shape/model/mean has {shape_mean.size} values, expected 3N", _HINT_BFM17)
    for name, a in (("color", color_mean), ("expression", exp_mean)):
        if a.size != 3 * nv:
            raise _bad(src, f"{name}/model/mean has {a.size} values, expected {3 * nv}", _HINT_BFM17)
    if cells.ndim != 2 or cells.shape[0] != 3:
        raise _bad(
            src, f"shape/representer/cells has shape {list(cells.shape)}, expected [3, F]", _HINT_BFM17
        )
    tri = _indices(cells.T, "shape/representer/cells", nv, src, _HINT_BFM17, one_based=False)
    mean = _floats(shape_mean + exp_mean, (nv, 3), "shape/model/mean", src, _HINT_BFM17)
    albedo = _floats(color_mean, (nv, 3), "color/model/mean", src, _HINT_BFM17)
    lm = _read_landmarks(landmarks, nv)
    return _assemble(
        mean,
        id_basis,
        exp_basis,
        albedo,
        alb_basis,
        tri,
        lm,
        np.ones(nv, dtype=bool),
        recenter=True,
        name="bfm2017",
        licence=BFM2017_LICENCE,
        source=src,
        hint=_HINT_BFM17,
    )


# ----------------------------------------------------------------------------------------------------
# One entry point, with a cache.


def _default_cache_dir() -> Path:
    env = os.environ.get("STYLERIG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stylerig"


def _stat_key(p: Path) -> list[object]:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _cache_key(kind: str, files: Sequence[Path], options: dict[str, object]) -> str:
    """Hash of the reader kind, the source files' (absolute path, size, mtime) and the options.

    An option that is a path (a landmark file) counts by its (path, size, mtime); an array by its values.
    """
    parts: dict[str, object] = {"v": _CACHE_VERSION, "kind": kind, "files": [_stat_key(p) for p in files]}
    for k, v in sorted(options.items()):
        if v is None or isinstance(v, (bool, int, float)):
            parts[k] = v
        elif isinstance(v, (str, os.PathLike)):
            p = Path(v).expanduser()
            parts[k] = _stat_key(p) if p.is_file() else str(p)
        else:  # an index array: hash its values
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            parts[k] = hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _cached(build: Callable[[], MorphableModel], cache_file: Path | None, source: Path) -> MorphableModel:
    """Load ``cache_file`` if it is a valid model; else build, write it atomically and return the build."""
    if cache_file is not None and cache_file.is_file():
        try:
            model = MorphableModel.load(cache_file)
            model.source = str(source)
            return model
        except StylerigError as e:
            warnings.warn(
                f"ignoring unreadable face-model cache {cache_file} ({e.message}); rebuilding", stacklevel=3
            )
    model = build()
    if cache_file is not None:
        try:
            model.save(cache_file)  # atomic
        except OSError as e:  # AssetError is an OSError too
            warnings.warn(f"could not write the face-model cache {cache_file}: {e}", stacklevel=3)
    return model


def _check_kwargs(kind: str, kw: dict[str, object], allowed: Sequence[str]) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        ok = ", ".join(allowed) or "none"
        raise InputError(
            f"unexpected keyword(s) for a {kind} face model: {', '.join(extra)} (accepted: {ok})"
        )


def _resolve_folder(folder: Path) -> Path:
    for name in ("BFM_model_front.mat", "01_MorphableModel.mat", "model2017-1_bfm_nomouth.h5"):
        if (folder / name).is_file():
            return folder / name
    raise AssetError(
        f"{folder} holds no face model (looked for BFM_model_front.mat, 01_MorphableModel.mat, "
        "model2017-1_bfm_nomouth.h5)",
        hint=_HINT_ANY,
    )


def load_face_model(
    spec: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    use_cache: bool = True,
    **kw: object,
) -> MorphableModel:
    """Load a face model from a name or a file, converting and caching Basel files as needed.

    ``spec``:

    * ``None``, ``"builtin"`` or ``"procedural"``: the built-in procedural model (no files needed);
    * ``*.safetensors``: a model written by :meth:`MorphableModel.save`;
    * ``*.mat`` with ``meanshape``/``idBase``: Deep3DFaceRecon's ``BFM_model_front.mat``
      (:func:`read_deep3d_front`; keyword ``info_mat``);
    * ``*.mat`` with ``shapeMU``/``shapePC``: Basel 2009 (:func:`read_bfm2009`). The extra files are taken
      from the keywords ``exp_pca_bin``, ``std_exp_txt``, ``exp_idx_mat``, ``front_idx_mat``, ``info_mat``
      or found beside the .mat under their standard names (:data:`STANDARD_NAMES`); keywords ``crop`` and
      ``landmarks`` pass through. With the Deep3DFaceRecon ``BFM/`` folder this gives its 35,709-vertex model;
    * ``*.h5`` / ``*.hdf5``: Basel 2017 (:func:`read_bfm2017`; keyword ``landmarks`` is required);
    * a folder: the first of ``BFM_model_front.mat``, ``01_MorphableModel.mat``,
      ``model2017-1_bfm_nomouth.h5`` inside it.

    Converted models are cached as safetensors in ``cache_dir/face-models/`` (default cache dir:
    ``$STYLERIG_CACHE_DIR`` or ``~/.cache/stylerig``), keyed by the source files' absolute paths, sizes and
    mtimes plus the options; the file is written atomically, and an unreadable cache entry is rebuilt (with
    a warning). An unwritable cache directory only warns.

    Args:
        spec: see above.
        cache_dir: cache root directory.
        use_cache: read and write the cache (default True).
        **kw: reader keywords, as listed above.

    Returns:
        MorphableModel (buffers on the CPU; ``model.licence`` names the data licence, ``model.source``
        the file it was loaded from).

    Raises:
        AssetError: missing / truncated / corrupt / wrong-kind files, with a hint on where to get them.
        InputError: a keyword that the detected kind does not accept, or a bad landmark array.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("builtin", "procedural")):
        _check_kwargs("built-in", kw, ())
        from stylerig.face.procedural import build_procedural_model

        return build_procedural_model()

    path = Path(spec).expanduser()
    if path.is_dir():
        path = _resolve_folder(path)
    if not path.is_file():
        raise AssetError(f"face model not found: {path}", hint=_HINT_ANY)
    path = path.resolve()
    suffix = path.suffix.lower()

    if suffix == ".safetensors":
        _check_kwargs("safetensors", kw, ())
        return MorphableModel.load(path)

    def sibling(key: str) -> Path | None:
        given = kw.get(key)
        if given is not None:
            return Path(given).expanduser()  # type: ignore[arg-type]
        p = path.parent / STANDARD_NAMES[key]
        return p if p.is_file() else None

    if suffix == ".mat":
        names = _mat_names(path, "face model", _HINT_ANY)
        if "meanshape" in names and "idBase" in names:
            kind = "deep3d-front"
            _check_kwargs(kind, kw, ("info_mat",))
            info = sibling("info_mat")
            files = [path] + ([info] if info is not None and info.is_file() else [])
            options: dict[str, object] = {}
            build = functools.partial(read_deep3d_front, path, info_mat=info)
        elif "shapeMU" in names and "shapePC" in names:
            kind = "bfm2009"
            _check_kwargs(kind, kw, (*STANDARD_NAMES, "crop", "landmarks"))
            extra = {
                k: sibling(k)
                or (path.parent / n if k in ("exp_pca_bin", "std_exp_txt", "exp_idx_mat") else None)
                for k, n in STANDARD_NAMES.items()
            }
            files = [path] + [p for p in extra.values() if p is not None and p.is_file()]
            options = {"crop": kw.get("crop"), "landmarks": kw.get("landmarks")}
            build = functools.partial(
                read_bfm2009,
                path,
                extra.pop("exp_pca_bin"),
                extra.pop("std_exp_txt"),
                **extra,  # type: ignore[arg-type]
                **options,  # type: ignore[arg-type]
            )
        else:
            raise _bad(
                path,
                "this .mat is neither Deep3DFaceRecon's BFM_model_front.mat (meanshape, idBase, ...) nor "
                f"Basel 2009's 01_MorphableModel.mat (shapeMU, shapePC, ...); it holds {sorted(names)}",
                _HINT_ANY,
            )
    elif suffix in (".h5", ".hdf5"):
        kind = "bfm2017"
        _check_kwargs(kind, kw, ("landmarks",))
        if not _is_statismo(path):
            raise _bad(
                path,
                f"this .h5 is not a Basel 2017 statismo model (it lacks {', '.join(_STATISMO)})",
                _HINT_ANY,
            )
        files, options = [path], {"landmarks": kw.get("landmarks")}
        if options["landmarks"] is None:
            return read_bfm2017(path)  # raises the explanatory AssetError
        build = functools.partial(read_bfm2017, path, landmarks=options["landmarks"])
    else:
        raise AssetError(
            f"unknown face model file type {suffix or '(none)'!r}: {path}; expected .safetensors, .mat or .h5",
            hint=_HINT_ANY,
        )

    cache_file = None
    if use_cache:
        root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
        cache_file = root / "face-models" / f"{kind}-{_cache_key(kind, files, options)}.safetensors"
    return _cached(build, cache_file, path)
