"""The on-disk sample set: what ``stylerig sample`` writes and every later command reads.

A sample set is a folder::

    manifest.json    what the set is (written last: a folder without it is not a finished set)
    ws.npy           float32 [N, num_ws, w_dim]  style-mixed, truncated W+ codes
    images.npy       uint8   [N, R, R, 3]        the generator's image of each code, RGB, rows top to bottom
    seeds.npy        int64   [N]                 the sample seed of each row (row i of a full set: seed + i)
    landmarks.npy    float32 [N, 68, 2]          (only when a detector or the generator's ground truth ran)
    params.npy       float32 [N, 257]            (only when the generator knows its ground truth)
    run.json         how it was made (command, arguments, versions)

Conventions:

* ``images`` are ``round((x + 1) * 127.5)`` of the generator output ``x`` clamped to [-1, 1], resized
  to R with antialiased area/bilinear filtering when R differs from the generator's resolution.
* ``landmarks`` are the 68 iBUG points in pixels of the stored images: x to the right, y down, origin
  at the top-left corner of the top-left pixel (the centre of that pixel is (0.5, 0.5)).
* ``params`` use the 257 layout of :mod:`stylerig.params`.

The manifest (``format`` = :data:`FORMAT`, ``version`` = :data:`FORMAT_VERSION`) records ``n``,
``num_ws``, ``w_dim``, ``resolution``, the generator (path, sha256, resolution, config), ``seed``,
``truncation``, ``truncation_cutoff``, ``mix_max``, ``noise_mode``, the landmark detector, the dropped
samples, and for every array its shape, dtype and sha256. :class:`SampleSet` opens a set with its
arrays memory-mapped and checks them against the manifest, so a missing, truncated or mismatched file
is one clear :class:`~stylerig.errors.AssetError` instead of a crash deep in a trainer.

The arrays are plain ``.npy`` files: ``numpy.load(folder / "ws.npy")`` reads them without stylerig.

Example:
    >>> from stylerig.data import SampleSet
    >>> s = SampleSet("runs/samples")  # doctest: +SKIP
    >>> train, val = s.split(0.1, seed=0)  # doctest: +SKIP
    >>> s.ws[train[:8]].shape  # doctest: +SKIP
    (8, 12, 512)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stylerig.errors import AssetError, InputError
from stylerig.params import NUM_PARAMS

__all__ = [
    "ARRAYS",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "NUM_LANDMARKS",
    "GroundTruth",
    "LandmarkDetector",
    "SampleSet",
    "array_specs",
    "file_sha256",
    "read_manifest",
    "split_indices",
]

#: ``format`` value of every sample-set manifest.
FORMAT = "stylerig.sample-set"
#: Version of the layout described in the module docstring.
FORMAT_VERSION = 1
#: File name of the manifest inside a set folder.
MANIFEST = "manifest.json"
#: Number of landmarks per face (iBUG 68-point order).
NUM_LANDMARKS = 68
#: Every array a set may hold, in the order they are written; ``ws``, ``images`` and ``seeds`` always exist.
ARRAYS = ("ws", "images", "seeds", "landmarks", "params")
REQUIRED_ARRAYS = ("ws", "images", "seeds")

_MANIFEST_KEYS = ("format", "version", "n", "num_ws", "w_dim", "resolution", "arrays")
_HINT_REWRITE = "write the set again with `stylerig sample ... --force`"
_CHECK_BLOCK = 4096  # rows per block of SampleSet.check_finite


# ----------------------------------------------------------------------------------------------------
# Hooks for what a sample set can carry besides ws and images.


@runtime_checkable
class GroundTruth(Protocol):
    """A generator that knows the face behind each image (the built-in world, a later issue).

    ``sample`` calls it once per chunk with the seeds and the W+ codes of that chunk (the codes are
    what the images are made of; with style mixing they are more than the seed).
    """

    name: str  # recorded in the manifest

    def __call__(self, seeds: Sequence[int], ws: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return ``(params, landmarks)``: float32 [B, 257] and float32 [B, 68, 2] in pixels of the
        generator's own resolution (either may be None)."""
        ...


@runtime_checkable
class LandmarkDetector(Protocol):
    """A 68-point landmark detector (adapters: :mod:`stylerig.landmarks`)."""

    name: str  # recorded in the manifest

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, R, R, 3] -> (float32 [B, 68, 2] in pixels of ``images``, bool [B] found).

        Rows with ``found = False`` are dropped from the set and counted in the manifest.
        """
        ...


# ----------------------------------------------------------------------------------------------------
# Manifest helpers.


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_specs(
    n: int, num_ws: int, w_dim: int, resolution: int, *, landmarks: bool, params: bool
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of every array of a set with these sizes: ``{name: (shape, dtype)}``."""
    specs: dict[str, tuple[tuple[int, ...], str]] = {
        "ws": ((n, num_ws, w_dim), "float32"),
        "images": ((n, resolution, resolution, 3), "uint8"),
        "seeds": ((n,), "int64"),
    }
    if landmarks:
        specs["landmarks"] = ((n, NUM_LANDMARKS, 2), "float32")
    if params:
        specs["params"] = ((n, NUM_PARAMS), "float32")
    return specs


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``root/manifest.json`` (format, version, required fields).

    Raises:
        AssetError: the folder or manifest is missing, not JSON, not a sample set, or of another version.
    """
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise AssetError(f"sample set not found: {root}", hint="write one with `stylerig sample --out DIR`")
    if not path.is_file():
        partial = (root / ".chunks").is_dir()
        raise AssetError(
            f"{root} is not a finished sample set (no {MANIFEST})",
            hint="run the same `stylerig sample` command again to finish it"
            if partial
            else "write one with `stylerig sample --out DIR`",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AssetError(f"{path} is not readable JSON ({e})", hint=_HINT_REWRITE) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AssetError(f"{path} is not a stylerig sample-set manifest", hint=_HINT_REWRITE)
    if manifest.get("version") != FORMAT_VERSION:
        raise AssetError(
            f"{path} has sample-set version {manifest.get('version')!r}; this stylerig reads {FORMAT_VERSION}",
            hint="upgrade stylerig, or " + _HINT_REWRITE[0].lower() + _HINT_REWRITE[1:],
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise AssetError(f"{path} lacks the field(s) {', '.join(missing)}", hint=_HINT_REWRITE)
    return manifest


# ----------------------------------------------------------------------------------------------------
# The reader.


class SampleSet:
    """A sample set opened read-only, its arrays memory-mapped and checked against the manifest.

    Args:
        root: the set folder.
        verify: also hash every array and compare with the manifest's sha256 (reads every byte;
            catches bit rot that leaves shapes intact).

    Attributes:
        root: the folder. manifest: the parsed manifest dict.
        ws: float32 [N, num_ws, w_dim]; images: uint8 [N, R, R, 3]; seeds: int64 [N];
        landmarks: float32 [N, 68, 2] or None; params: float32 [N, 257] or None (all read-only memmaps).

    Raises:
        AssetError: the set is missing, unfinished, corrupt, truncated or inconsistent with its manifest.
    """

    def __init__(self, root: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        m = self.manifest
        try:
            n, num_ws, w_dim, res = (int(m[k]) for k in ("n", "num_ws", "w_dim", "resolution"))
            listed = dict(m["arrays"])
        except (TypeError, ValueError) as e:
            raise AssetError(f"{self.root / MANIFEST} has malformed sizes ({e})", hint=_HINT_REWRITE) from e
        unknown = sorted(set(listed) - set(ARRAYS))
        lacking = [a for a in REQUIRED_ARRAYS if a not in listed]
        if unknown or lacking:
            raise AssetError(
                f"{self.root / MANIFEST} lists arrays {sorted(listed)}; "
                f"{'unknown: ' + ', '.join(unknown) if unknown else 'missing: ' + ', '.join(lacking)}",
                hint=_HINT_REWRITE,
            )
        specs = array_specs(n, num_ws, w_dim, res, landmarks="landmarks" in listed, params="params" in listed)
        self._arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in specs.items():
            self._arrays[name] = self._open(name, shape, dtype, listed[name], verify)

    def _open(
        self, name: str, shape: tuple[int, ...], dtype: str, entry: Mapping[str, Any], verify: bool
    ) -> np.ndarray:
        path = self.root / f"{name}.npy"
        if not path.is_file():
            raise AssetError(f"sample set {self.root} is missing {path.name}", hint=_HINT_REWRITE)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise AssetError(
                f"{path} is truncated or corrupt ({type(e).__name__}: {e})", hint=_HINT_REWRITE
            ) from e
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise AssetError(
                f"{path} holds {getattr(arr, 'dtype', '?')} {tuple(getattr(arr, 'shape', ()))}; the manifest "
                f"says {dtype} {shape}",
                hint=_HINT_REWRITE,
            )
        if verify and isinstance(entry, Mapping) and entry.get("sha256"):
            digest = file_sha256(path)
            if digest != entry["sha256"]:
                raise AssetError(f"{path} does not match its sha256 in the manifest", hint=_HINT_REWRITE)
        return arr

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def __repr__(self) -> str:
        extra = [a for a in ("landmarks", "params") if a in self._arrays]
        return (
            f"SampleSet({str(self.root)!r}, n={len(self)}, resolution={self.resolution}, "
            f"num_ws={self.num_ws}, w_dim={self.w_dim}{', ' + '+'.join(extra) if extra else ''})"
        )

    @property
    def ws(self) -> np.ndarray:
        return self._arrays["ws"]

    @property
    def images(self) -> np.ndarray:
        return self._arrays["images"]

    @property
    def seeds(self) -> np.ndarray:
        return self._arrays["seeds"]

    @property
    def landmarks(self) -> np.ndarray | None:
        return self._arrays.get("landmarks")

    @property
    def params(self) -> np.ndarray | None:
        return self._arrays.get("params")

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def num_ws(self) -> int:
        return int(self.manifest["num_ws"])

    @property
    def w_dim(self) -> int:
        return int(self.manifest["w_dim"])

    def check_finite(
        self, names: Sequence[str] = ("ws",), rows: np.ndarray | Sequence[int] | None = None
    ) -> None:
        """Refuse NaN or infinite values in the arrays ``names`` (of the rows ``rows``; default all).

        ``params.npy`` may hold whole rows of NaN (no ground truth for that row: a style-mixed code); a
        row only partly NaN, or any infinity, is refused there too. Arrays the set lacks are skipped.
        Reads in blocks of rows, so a large memory-mapped set is never loaded whole.

        Raises:
            InputError: naming the file, the count of bad values and the first bad row.
        """
        index = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        for name in names:
            arr = self._arrays.get(name)
            if arr is None or not np.issubdtype(arr.dtype, np.floating):
                continue
            todo = np.arange(len(arr), dtype=np.int64) if index is None else index
            bad, first = 0, -1
            for a in range(0, len(todo), _CHECK_BLOCK):
                block_rows = todo[a : a + _CHECK_BLOCK]
                # All rows: a slice of the memory map (a gather by index would copy each block first).
                block = arr[a : a + _CHECK_BLOCK] if index is None else arr[block_rows]
                x = np.asarray(block).reshape(len(block_rows), -1)
                fin = np.isfinite(x)
                if name == "params":  # a row of NaN is a row without ground truth
                    fin |= np.isnan(x).all(axis=1, keepdims=True)
                row_bad = ~fin.all(axis=1)
                if row_bad.any():
                    bad += int((~fin).sum())
                    if first < 0:
                        first = int(block_rows[np.argmax(row_bad)])
            if bad:
                raise InputError(
                    f"{self.root / (name + '.npy')} holds {bad} NaN or infinite value(s) (first in row {first})",
                    hint="the set is damaged or was written by a broken generator: " + _HINT_REWRITE,
                )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A deterministic train/validation split of the rows.

        ``round(N * val_fraction)`` rows (at least one when ``val_fraction > 0`` and N >= 2) chosen by
        ``numpy.random.default_rng(seed).permutation(N)``; the same (N, fraction, seed) always gives the
        same split.

        Returns:
            (train, val): sorted int64 row indices, disjoint, together all rows.
        """
        return split_indices(len(self), val_fraction, seed)


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The split of :meth:`SampleSet.split` for ``n`` rows."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    n_val = round(n * float(val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(int(seed)).permutation(n)
    val = np.sort(perm[:n_val]).astype(np.int64)
    train = np.sort(perm[n_val:]).astype(np.int64)
    return train, val
