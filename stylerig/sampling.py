"""Write a sample set (see :mod:`stylerig.data`): resumable, atomic, and split across torchrun ranks.

:func:`write_sample_set` draws sample ``i`` (0-based) from seed ``seed + i``: its z is
``numpy.random.RandomState(seed + i).randn(z_dim)`` (NVIDIA's ``generate.py``), and its style mixing
(up to ``mix_max`` codes) is drawn from the same seed by :func:`stylerig.gan.latents.draw_mixing`. So a
sample depends only on its seed and the settings, never on the batch, the rank or an interruption.

How it writes ``out_dir``:

1. ``.chunks/plan.json`` records the settings and the chunk size (= ``batch`` of the first run; a resumed
   run keeps it). Chunk ``c`` holds samples ``c*chunk .. (c+1)*chunk - 1`` and is written to a temporary
   name and renamed to ``.chunks/chunk-{c:06d}.npz``, so a chunk file is either complete or absent.
2. An interrupted run (Ctrl-C, a killed job) is continued by running the same command again: finished
   chunks are kept, the rest are drawn, and the result is byte-for-byte the set an uninterrupted run
   writes (same device and chunk size).
3. When every chunk exists, the final ``.npy`` files are assembled through ``numpy.lib.format.open_memmap``
   into temporary names and renamed; ``manifest.json`` comes last, then ``run.json``, and ``.chunks`` is
   removed. A folder with a manifest is a finished set.
4. Running again with identical settings on a finished set does nothing and says so. A folder holding a
   *different* set (finished or not) is refused unless ``force=True``, which removes the set's own files
   (never anything else in the folder) and starts afresh.

Under ``torchrun --nproc_per_node K`` (``RANK``/``WORLD_SIZE`` set) rank ``r`` draws chunks
``r, r + K, r + 2K, ...`` into the same folder and rank 0 prepares the folder and assembles the set. A
``torch.distributed`` process group already set up is used (through a gloo side group when its backend is
not gloo); otherwise a gloo group is initialised from the environment and torn down afterwards.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from stylerig.data import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    NUM_LANDMARKS,
    GroundTruth,
    LandmarkDetector,
    SampleSet,
    array_specs,
    file_sha256,
    read_manifest,
)
from stylerig.errors import AssetError, BackendUnavailableError, InputError, StylerigError
from stylerig.gan.latents import DEFAULT_MIX_MAX, sample_ws
from stylerig.gan.networks import NOISE_MODES, Generator
from stylerig.outputs import atomic_write, claim_output_dir, write_json, write_run_json
from stylerig.params import NUM_PARAMS
from stylerig.viz import to_uint8

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_GENERATOR",
    "LANDMARK_CHOICES",
    "MAX_DEFAULT_RESOLUTION",
    "PRECISIONS",
    "SampleEdit",
    "SampleResult",
    "resize_images",
    "resolve_generator",
    "write_sample_set",
]

#: Samples per chunk (and per generator batch) unless ``batch`` is given.
DEFAULT_BATCH = 32
#: The default image size is the generator's own, capped at this.
MAX_DEFAULT_RESOLUTION = 256
#: Compute precisions of the synthesis network (``precision``); the stored images are uint8 either way.
#: float16 runs on CUDA only; bfloat16 runs anywhere (docs/gpu.md and benchmarks/bench_sample.py measure
#: both against float32).
PRECISIONS: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
#: Names accepted by ``landmarks`` (a :class:`~stylerig.data.LandmarkDetector` object is accepted too).
LANDMARK_CHOICES = ("auto", "world", "face-alignment", "dlib", "none")
#: The generator used when none is given. ``None`` until the built-in world ships (a later issue makes
#: this the world's generator; :func:`resolve_generator` is the one place that reads it).
DEFAULT_GENERATOR: str | os.PathLike[str] | None = None

#: Progress callback: ``progress(done, total)`` in samples (of this rank's share under torchrun; only
#: rank 0 calls it). It is called once before drawing (``done`` = samples kept from an interrupted run)
#: and after every chunk written. An exception raised in it stops the run; finished chunks stay.
ProgressFn = Callable[[int, int], None]


class SampleEdit(Protocol):
    """Conditional generation hook: ``edit(ws float [B, num_ws, w_dim]) -> ŵ`` (same shape, device,
    dtype), with ``info``, a JSON-able record of what it does (see
    :class:`stylerig.editing.ConditionalEdit`)."""

    info: Mapping[str, Any]

    def __call__(self, ws: torch.Tensor) -> torch.Tensor: ...


_CHUNKS = ".chunks"
_PLAN = "plan.json"
_DIST_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class SampleResult:
    """What :func:`write_sample_set` did.

    Attributes:
        out_dir: the set folder. n: rows in the set. n_requested: samples drawn (``n`` + dropped).
        dropped: dropped rows by reason. resolution: image size R. generated: samples drawn by this
        call (this rank's share under torchrun). reused: samples kept from an interrupted run.
        already_complete: the folder already held this exact set; nothing was written.
        seconds: wall time. notes: remarks worth showing a person. manifest: the set's manifest.
    """

    out_dir: Path
    n: int
    n_requested: int
    dropped: dict[str, int]
    resolution: int
    generated: int
    reused: int
    already_complete: bool
    seconds: float
    notes: tuple[str, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    rank: int = 0
    world_size: int = 1


# ----------------------------------------------------------------------------------------------------
# Small pieces.


def resolve_generator(
    generator: str | os.PathLike[str] | Generator | None, device: torch.device
) -> tuple[Generator, dict[str, Any]]:
    """Load (or accept) the generator and describe it for the manifest.

    Returns:
        (G on ``device`` in eval mode, ``{"path", "sha256", "sha256_of", "resolution", "config"}``);
        ``sha256`` is of the checkpoint file, or of the config and tensors for an in-memory generator.

    Raises:
        AssetError: the generator cannot be read (None = the built-in world, :func:`stylerig.worlds.load_world`).
    """
    from stylerig.gan import load_generator

    if generator is None:
        generator = DEFAULT_GENERATOR
    if generator is None:  # the built-in world: its generator knows its ground truth
        from stylerig.worlds import load_world
        from stylerig.worlds.world import BUILTIN, GENERATOR_FILE

        G = load_world(device=device).generator
        info = {
            "path": str(GENERATOR_FILE),
            "world": BUILTIN,
            "sha256": file_sha256(GENERATOR_FILE),
            "sha256_of": "file",
            "resolution": int(G.img_resolution),
            "config": getattr(G, "config", None),
        }
        return G, info
    if isinstance(generator, Generator):
        G = generator.to(device).eval()
        path, sha, of = None, _state_sha256(G), "config+state_dict"
    else:
        G = load_generator(generator, device=device)
        path, sha, of = str(Path(generator).resolve()), file_sha256(generator), "file"
    info = {
        "path": path,
        "sha256": sha,
        "sha256_of": of,
        "resolution": int(G.img_resolution),
        "config": getattr(G, "config", None),
    }
    return G, info


def _state_sha256(G: torch.nn.Module) -> str:
    h = hashlib.sha256(json.dumps(getattr(G, "config", None), sort_keys=True).encode())
    for name, t in G.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now (``posix_fallocate``), where the platform supports it."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            if size:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            raise AssetError(
                f"cannot reserve {size / 2**20:.1f} MiB for {path.name} in {path.parent}: {e.strerror or e}",
                hint="free some disk space (or choose another --out) and run the same command again",
            ) from e


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float images [B, C, H, H] to [B, C, size, size] (the caller clamps to [-1, 1] first).

    Integer-factor downsampling uses area averaging (exact box filter); other downsampling uses bilinear
    filtering with antialiasing; upsampling uses bilinear. The same size returns the input.
    """
    src = int(images.shape[-1])
    if src == size and images.shape[-2] == size:
        return images
    if src > size and src % size == 0:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=src > size
    )


def _resolve_landmarks(
    landmarks: str | LandmarkDetector, truth: GroundTruth | None, device: torch.device
) -> tuple[str, LandmarkDetector | None, str | None]:
    """-> (name recorded in the manifest, detector to run or None, note).

    'auto': the generator's ground truth when it has one, else the best available detector
    (:func:`stylerig.landmarks.best_detector`), else none with a note saying how to get one.
    """
    from stylerig import landmarks as lm

    if not isinstance(landmarks, str):
        if isinstance(landmarks, lm.WorldLandmarks):
            raise InputError(
                "WorldLandmarks are asked with seeds, not images, so they cannot run as a detector",
                hint="sample the built-in world with landmarks='world' (or 'auto'): its ground truth gives them",
            )
        if not callable(landmarks) or not isinstance(getattr(landmarks, "name", None), str):
            raise InputError("landmarks must be a name or a detector with a `name` and a __call__")
        return landmarks.name, landmarks, None
    name = landmarks.strip().lower()
    if name == "none":
        return "none", None, None
    if name in ("auto", "world") and truth is not None:
        return f"ground-truth:{truth.name}", None, None
    if name == "world":
        raise BackendUnavailableError(
            "--landmarks world needs a generator that knows its ground truth (the built-in world's)",
            hint="leave out --generator to sample the built-in world, or use --landmarks auto|dlib|face-alignment",
        )
    if name == "auto":
        chosen, statuses = lm.best_detector()
        if chosen is None:
            why = "; ".join(f"{s.name}: {s.detail} (fix: {s.fix})" for s in statuses)
            return (
                "none",
                None,
                f"--landmarks auto: no landmark detector is available, so no landmarks were written ({why})",
            )
        return chosen, lm.load_detector(chosen, device=str(device)), None
    if name in lm.DETECTORS:
        return name, lm.load_detector(name, device=str(device)), None
    raise InputError(
        f"unknown landmark detector {landmarks!r}", hint=f"use one of {', '.join(LANDMARK_CHOICES)}"
    )


def _check_args(
    n: int, seed: int, truncation: float, mix_max: int, resolution: int | None, batch: int, noise_mode: str
) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if not is_int(seed) or seed < 0 or seed + n > 2**32:
        raise InputError(
            f"seeds {seed}..{seed}+{n}-1 must lie in [0, 2**32)", hint="use a smaller --seed or --n"
        )
    if not math.isfinite(float(truncation)):
        raise InputError(f"truncation must be finite, got {truncation}")
    if not is_int(mix_max) or mix_max < 1:
        raise InputError(f"mix_max must be an integer >= 1, got {mix_max!r}")
    if resolution is not None and (not is_int(resolution) or not 4 <= resolution <= 4096):
        raise InputError(f"resolution must be an integer in 4..4096, got {resolution!r}")
    if not is_int(batch) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    if noise_mode not in NOISE_MODES or noise_mode == "random":
        raise InputError(f"noise_mode must be 'const' or 'none' (reproducible), got {noise_mode!r}")


def _check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise InputError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
            hint="use --precision float32",
        )
    if precision == "float16" and device.type != "cuda":
        raise InputError(
            f"--precision float16 needs a CUDA device (here: {device}); a CPU runs the generator "
            "about 17x slower in float16 than in float32 (measured on the world generator)",
            hint="use --precision bfloat16 or float32 on a CPU",
        )


# ----------------------------------------------------------------------------------------------------
# torchrun.


class _Ranks:
    """Rank bookkeeping and the few collectives the writer needs (no-ops for a single process)."""

    def __init__(self) -> None:
        self.rank, self.world, self.group, self.owned = 0, 1, None, False
        world_env = int(os.environ.get("WORLD_SIZE", "1") or 1)
        dist = torch.distributed
        if not dist.is_available():
            if world_env > 1:
                raise BackendUnavailableError("WORLD_SIZE > 1 but torch.distributed is not available")
            return
        if dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if self.world > 1 and dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo", timeout=_DIST_TIMEOUT)
        elif world_env > 1:
            try:
                dist.init_process_group(
                    "gloo",
                    init_method="env://",
                    rank=int(os.environ["RANK"]),
                    world_size=world_env,
                    timeout=_DIST_TIMEOUT,
                )
            except (KeyError, ValueError, RuntimeError) as e:
                raise BackendUnavailableError(
                    f"cannot join the torchrun process group ({type(e).__name__}: {e})",
                    hint="launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT",
                ) from e
            self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of rank 0 on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on some rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        torch.distributed.all_reduce(t, group=self.group)
        return bool(t.item())

    def close(self) -> None:
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _error_payload(e: BaseException) -> tuple[str, str, str | None]:
    if isinstance(e, StylerigError):
        return (type(e).__name__, e.message, e.hint)
    return ("StylerigError", f"{type(e).__name__}: {e}", None)


def _raise_payload(payload: tuple[str, str, str | None]) -> None:
    kinds = {c.__name__: c for c in (AssetError, InputError, BackendUnavailableError, StylerigError)}
    kind, message, hint = payload
    raise kinds.get(kind, StylerigError)(message, hint)


# ----------------------------------------------------------------------------------------------------
# The folder: what is there, and clearing a set's own files.


def _set_files(out: Path) -> list[Path]:
    names = [MANIFEST, "run.json"] + [f"{a}.npy" for a in ("ws", "images", "seeds", "landmarks", "params")]
    return [out / n for n in names]


def _clear(out: Path) -> None:
    """Remove a set's own files (manifest first, so the folder stops being a finished set at once)."""
    for p in _set_files(out):
        p.unlink(missing_ok=True)
    for p in out.glob(".*.npy.tmp*"):
        p.unlink(missing_ok=True)
    shutil.rmtree(out / _CHUNKS, ignore_errors=True)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diff) or "unknown differences"


def _prepare(out: Path, key: dict[str, Any], chunk_size: int, force: bool) -> tuple[str, dict[str, Any]]:
    """Rank 0: decide what to do with ``out``. Returns ("done", manifest) or ("draw", plan)."""
    hint_force = "choose another --out, or pass --force to replace it"
    plan_path = out / _CHUNKS / _PLAN
    if (out / MANIFEST).exists():
        try:
            manifest = read_manifest(out)
        except AssetError as e:
            if not force:
                raise AssetError(
                    f"{out} holds an unreadable sample set ({e.message})", hint=hint_force
                ) from e
            manifest = None
        if manifest is not None and manifest.get("key") == key:
            # The same set: confirm it opens (its manifest and array headers; values are not re-read,
            # which for a large set would cost a full read on every idempotent rerun).
            try:
                SampleSet(out)
                return "done", manifest
            except AssetError as e:
                if not force:
                    raise AssetError(
                        f"{out} holds this sample set but it is damaged ({e.message})",
                        hint="pass --force to write it again",
                    ) from e
        elif manifest is not None and not force:
            raise AssetError(
                f"{out} already holds a different sample set ({_differences(manifest.get('key', {}), key)})",
                hint=hint_force,
            )
        _clear(out)
    elif plan_path.exists():
        try:
            plan = json.loads(plan_path.read_text(encoding="utf-8"))
            old_key = plan["key"]
            int(plan["chunk_size"])
        except (OSError, ValueError, KeyError, TypeError):
            plan, old_key = None, None
        if plan is not None and old_key == key:
            return "draw", plan
        if not force:
            what = _differences(old_key, key) if isinstance(old_key, dict) else "unreadable plan"
            raise AssetError(f"{out} holds an unfinished different sample set ({what})", hint=hint_force)
        _clear(out)
    elif any(p.exists() for p in _set_files(out)[2:]):
        if not force:
            raise AssetError(f"{out} holds sample-set arrays without a manifest", hint=hint_force)
        _clear(out)
    n = int(key["n"])
    plan = {"key": key, "chunk_size": chunk_size, "num_chunks": -(-n // chunk_size)}
    write_json(plan_path, plan)
    return "draw", plan


# ----------------------------------------------------------------------------------------------------
# Chunks.


def _chunk_path(out: Path, c: int) -> Path:
    return out / _CHUNKS / f"chunk-{c:06d}.npz"


def _draw_chunk(
    G: Generator,
    seeds: list[int],
    *,
    key: Mapping[str, Any],
    detector: LandmarkDetector | None,
    truth: GroundTruth | None,
    truth_landmarks: bool,
    edit: SampleEdit | None = None,
) -> dict[str, np.ndarray]:
    res = int(key["resolution"])
    ws = sample_ws(
        G,
        seeds,
        mix_max=int(key["mix_max"]),
        truncation_psi=float(key["truncation"]),
        truncation_cutoff=key["truncation_cutoff"],
    )
    if edit is not None:
        ws = edit(ws)
    with torch.no_grad():
        dtype = PRECISIONS[str(key.get("precision", "float32"))]
        img = G.synthesis(ws, noise_mode=key["noise_mode"], dtype=dtype)
        images = to_uint8(resize_images(img.float().clamp(-1, 1), res))
    b = len(seeds)
    arrays = {
        "ws": ws.float().cpu().numpy(),
        "images": images,
        "seeds": np.asarray(seeds, dtype=np.int64),
        "keep": np.ones(b, dtype=bool),
    }
    if truth is not None:
        params, lms = truth(seeds, ws)
        if params is not None:
            arrays["params"] = _checked(params, (b, NUM_PARAMS), "ground-truth params")
        if truth_landmarks:
            if lms is None:
                raise InputError(f"the ground truth {truth.name!r} gave no landmarks")
            scale = res / float(G.img_resolution)
            arrays["landmarks"] = _checked(lms, (b, NUM_LANDMARKS, 2), "ground-truth landmarks") * scale
    if detector is not None:
        lms, found = detector(images)
        arrays["landmarks"] = _checked(lms, (b, NUM_LANDMARKS, 2), f"{detector.name} landmarks")
        arrays["keep"] = np.asarray(found, dtype=bool).reshape(b)
    return arrays


def _checked(x: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape != shape:
        raise InputError(f"{what} have shape {arr.shape}, expected {shape}")
    return arr


def _save_chunk(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


#: What reading a damaged chunk can raise (a truncated ``.npz`` is a ``zipfile.BadZipFile``).
_CHUNK_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def _load_chunk(path: Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` (default: all) of a chunk; an unreadable chunk is removed (drawn again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if names is None else names)}
    except _CHUNK_ERRORS as e:
        path.unlink(missing_ok=True)
        raise AssetError(
            f"chunk {path} was unreadable ({type(e).__name__}) and has been removed",
            hint="run the same command again to draw it anew",
        ) from e


def _chunk_specs(
    key: Mapping[str, Any], meta: Mapping[str, Any], rows: int, *, landmarks: bool
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of every array a chunk of ``rows`` samples holds (``params`` is optional)."""
    specs = array_specs(
        rows,
        int(meta["num_ws"]),
        int(meta["w_dim"]),
        int(key["resolution"]),
        landmarks=landmarks,
        params=key["ground_truth"] is not None,
    )
    specs["keep"] = ((rows,), "bool")
    return specs


def _chunk_problem(
    path: Path, specs: Mapping[str, tuple[tuple[int, ...], str]], seeds: Sequence[int]
) -> str | None:
    """What is wrong with the chunk at ``path`` (None: it is whole and consistent).

    Reads only the arrays' headers and the small ``seeds`` and ``keep`` arrays: a truncated file, a
    missing or extra array, an array of the wrong shape or dtype, or other seeds are all reported.
    """
    try:
        shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                shapes[info.filename.removesuffix(".npy")] = (tuple(shape), dtype)
        optional = {"params"}
        missing = sorted(set(specs) - set(shapes) - optional)
        extra = sorted(set(shapes) - set(specs))
        if missing or extra:
            return f"{'lacks ' + ', '.join(missing) if missing else 'has unexpected ' + ', '.join(extra)}"
        for name, (shape, dtype) in shapes.items():
            want_shape, want_dtype = specs[name]
            if shape != want_shape or dtype != np.dtype(want_dtype):
                return f"holds {name} as {dtype} {shape}, expected {want_dtype} {want_shape}"
        with np.load(path, allow_pickle=False) as z:
            if not np.array_equal(z["seeds"], np.asarray(seeds, dtype=np.int64)):
                return "holds other seeds than its place in the set"
    except _CHUNK_ERRORS as e:
        return f"is unreadable ({type(e).__name__}: {e})"
    return None


# ----------------------------------------------------------------------------------------------------
# Assembly (rank 0).


def _assemble(out: Path, plan: Mapping[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    key = plan["key"]
    num_chunks, chunk_size = int(plan["num_chunks"]), int(plan["chunk_size"])
    missing = [c for c in range(num_chunks) if not _chunk_path(out, c).exists()]
    if missing:
        raise AssetError(
            f"{len(missing)} chunk(s) of {out} are missing (first: {missing[0]})",
            hint="run the same command again to draw them",
        )
    keep_counts, names = [], None
    for c in range(num_chunks):  # a cheap first pass: which rows are kept, which arrays exist
        path = _chunk_path(out, c)
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = list(z.files)
        except _CHUNK_ERRORS:
            stored = []
        chunk = _load_chunk(path, ["keep", "seeds"] if {"keep", "seeds"} <= set(stored) else None)
        keep_counts.append(int(chunk["keep"].sum()))
        chunk_names = sorted(set(stored) - {"keep"})
        if names is None:
            names = chunk_names
        elif names != chunk_names:
            raise AssetError(f"chunks of {out} disagree in content", hint="pass --force to start afresh")
        if len(chunk["seeds"]) != min(chunk_size, int(key["n"]) - c * chunk_size):
            raise AssetError(f"chunk {c} of {out} has the wrong size", hint="pass --force to start afresh")
    assert names is not None
    n = sum(keep_counts)
    if n == 0:
        raise AssetError(
            f"every sample of {out} was dropped: the landmark detector {key['landmarks']!r} found no face",
            hint="check that the generator draws faces, or pass --landmarks none",
        )
    specs = array_specs(
        n,
        int(meta["num_ws"]),
        int(meta["w_dim"]),
        int(key["resolution"]),
        landmarks="landmarks" in names,
        params="params" in names,
    )
    tmp = {name: out / f".{name}.npy.tmp{os.getpid()}" for name in specs}
    try:
        arrays = {
            name: np.lib.format.open_memmap(tmp[name], mode="w+", dtype=dtype, shape=shape)
            for name, (shape, dtype) in specs.items()
        }
        for name in arrays:
            # open_memmap makes sparse files; writing mapped pages on a full disk would kill the process
            # with SIGBUS. Reserving the blocks first turns that into an OSError (ENOSPC) here instead.
            _reserve(tmp[name])
        row = 0
        for c in range(num_chunks):
            path = _chunk_path(out, c)
            chunk = _load_chunk(path)
            keep = chunk["keep"]
            rows = int(keep.sum())
            n_c = len(chunk["seeds"])
            bad = [
                name
                for name, arr in arrays.items()
                if chunk[name].shape != (n_c, *arr.shape[1:]) or keep.shape != (n_c,)
            ]
            if bad:
                path.unlink(missing_ok=True)
                raise AssetError(
                    f"chunk {path} holds {bad[0]} of shape {chunk[bad[0]].shape} for {n_c} samples "
                    "and has been removed",
                    hint="run the same command again to draw it anew (or pass --force to start afresh)",
                )
            for name, arr in arrays.items():
                arr[row : row + rows] = chunk[name][keep]
            row += rows
        for arr in arrays.values():
            arr.flush()
        del arrays
        for name in specs:
            os.replace(tmp[name], out / f"{name}.npy")
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    listed = {
        name: {"shape": list(shape), "dtype": dtype, "sha256": file_sha256(out / f"{name}.npy")}
        for name, (shape, dtype) in specs.items()
    }
    n_requested = int(key["n"])
    truth_info = {}
    if key["ground_truth"] is not None and "params" in specs:
        known = int(np.isfinite(np.load(out / "params.npy", mmap_mode="r")).all(axis=1).sum())
        truth_info = {
            "ground_truth_rows": known,
            "ground_truth_note": "params.npy (and ground-truth landmarks) exist only for unmixed, "
            "untruncated codes; other rows are NaN",
        }
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "n": n,
        "n_requested": n_requested,
        "dropped": {"no_landmarks": n_requested - n},
        **meta,
        "resolution": int(key["resolution"]),
        "seed": int(key["seed"]),
        "seed_rule": "requested sample i has seed `seed + i`; seeds.npy gives the seed of every row",
        "truncation": float(key["truncation"]),
        "truncation_cutoff": key["truncation_cutoff"],
        "mix_max": int(key["mix_max"]),
        "noise_mode": key["noise_mode"],
        "landmark_detector": key["landmarks"],
        "ground_truth": key["ground_truth"],
        **truth_info,
        "chunk_size": chunk_size,
        "arrays": listed,
        "key": key,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------
# The entry point.


def write_sample_set(
    out_dir: str | os.PathLike[str],
    generator: str | os.PathLike[str] | Generator | None,
    n: int,
    *,
    seed: int = 0,
    truncation: float = 1.0,
    truncation_cutoff: int | None = None,
    mix_max: int | None = None,
    resolution: int | None = None,
    landmarks: str | LandmarkDetector = "none",
    batch: int = DEFAULT_BATCH,
    device: str | torch.device = "auto",
    force: bool = False,
    progress: ProgressFn | None = None,
    truth: GroundTruth | None = None,
    noise_mode: str = "const",
    command: str = "sample",
    edit: SampleEdit | None = None,
    precision: str = "float32",
) -> SampleResult:
    """Write (or finish, or confirm) the sample set of ``n`` samples in ``out_dir``.

    Args:
        out_dir: the set folder (created if needed; other files in it are left alone).
        generator: checkpoint path (any kind :func:`~stylerig.gan.load_generator` reads) or a
            :class:`~stylerig.gan.Generator`; ``None`` = the built-in world (:func:`stylerig.worlds.load_world`).
        n: samples to draw; sample ``i`` uses seed ``seed + i`` (all seeds must lie in [0, 2**32)).
        seed: first seed.
        truncation, truncation_cutoff: truncation psi and the number of leading ws it applies to
            (None = all).
        mix_max: the most codes style-mixed into one W+ code (the paper's K = 5; 1 = no mixing).
            None: 1 for a generator with ground truth (the world: truth exists only for unmixed codes),
            else :data:`~stylerig.gan.DEFAULT_MIX_MAX` (5).
        resolution: stored image size R; default the generator's own, at most 256.
        landmarks: 'auto' (the generator's ground truth when it has one, else the best available
            detector -- face-alignment with its weights, then dlib -- else none, noted); 'world' (the
            ground truth; error without one); 'face-alignment' / 'dlib' (:mod:`stylerig.landmarks`);
            'none'; or a :class:`~stylerig.data.LandmarkDetector`. Rows where a detector finds no face
            are dropped and counted in the manifest's ``dropped["no_landmarks"]``.
        batch: samples per chunk and per generator batch (a resumed run keeps its first chunk size).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N' (under torchrun, plain 'cuda' means cuda:LOCAL_RANK).
        force: replace a different set in ``out_dir`` (finished or not).
        progress: ``progress(done, total)`` callback (see :data:`ProgressFn`).
        truth: ground truth of the generator (:class:`~stylerig.data.GroundTruth`); default: the
            generator's ``ground_truth`` attribute when it has one. Writes ``params.npy``.
        noise_mode: 'const' (NVIDIA's default for generation) or 'none'.
        command: name recorded in ``run.json``.
        edit: conditional generation (paper §8.3; :class:`stylerig.editing.ConditionalEdit`): every drawn
            W+ code is replaced by ``edit(ws)`` before synthesis, and ``ws.npy`` holds the edited codes.
            Its ``info`` is recorded in the manifest (``conditional``) and in the set's identity. The
            generator's ground truth no longer describes edited codes, so none is written (no
            ``params.npy``, no ground-truth landmarks); the default ``mix_max`` is still decided by it.
        precision: compute precision of the synthesis network, one of :data:`PRECISIONS`: 'float32'
            (default), 'float16' (CUDA only) or 'bfloat16'. The mapping network, ``ws.npy`` and the
            ground truth stay float32; only the images differ (by a few uint8 levels at most: the
            generator's reduced-precision blocks, :meth:`stylerig.gan.networks.SynthesisNetwork.forward`).
            A reduced precision is part of the set's identity (its ``key``); float32 sets keep the key
            they always had.

    Returns:
        a :class:`SampleResult` (on every rank).

    Raises:
        AssetError: unreadable generator, a different set in ``out_dir`` without ``force``, or a damaged
            set. InputError: bad arguments, or ``out_dir`` holds another command's outputs (a DFR, a
            rig: :func:`~stylerig.outputs.claim_output_dir`, checked first). BackendUnavailableError: a
            detector or device not available.
    """
    from stylerig.devices import resolve_device

    t0 = time.perf_counter()
    _check_args(n, seed, truncation, 1 if mix_max is None else mix_max, resolution, batch, noise_mode)
    # Another command's folder (a DFR's, a rig's) is refused before anything is written; a sample set,
    # whether `sample` or the demo wrote it, is for _prepare to judge (same set: done; another: --force).
    out = claim_output_dir(out_dir, command, accept=("sample", "demo"))
    ranks = _Ranks()
    try:
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None and ranks.world > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)))
        _check_precision(precision, dev)
        G, gen_info = resolve_generator(generator, dev)
        if truth is None:
            truth = getattr(G, "ground_truth", None)
        if mix_max is None:
            mix_max = 1 if truth is not None else DEFAULT_MIX_MAX
        if edit is not None:
            truth = None  # edited codes show faces the generator's ground truth does not describe
        lm_name, detector, note = _resolve_landmarks(landmarks, truth, dev)
        res = (
            int(resolution) if resolution is not None else min(int(G.img_resolution), MAX_DEFAULT_RESOLUTION)
        )
        if truncation_cutoff is not None and not 0 <= int(truncation_cutoff) <= G.num_ws:
            raise InputError(
                f"--truncation-cutoff {truncation_cutoff} is outside 0..{G.num_ws} (the generator's num_ws)"
            )
        key = {
            "n": int(n),
            "seed": int(seed),
            "truncation": float(truncation),
            "truncation_cutoff": None if truncation_cutoff is None else int(truncation_cutoff),
            "mix_max": int(mix_max),
            "noise_mode": noise_mode,
            "resolution": res,
            "landmarks": lm_name,
            "ground_truth": None if truth is None else truth.name,
            "generator_sha256": gen_info["sha256"],
        }
        meta = {"num_ws": int(G.num_ws), "w_dim": int(G.w_dim), "generator": gen_info}
        if precision != "float32":  # only then: a float32 set keeps the key it always had
            key["precision"] = precision
        if edit is not None:  # only then: the key of an ordinary set stays as it was
            key["edit"] = json.loads(json.dumps(edit.info, default=str))
            meta["conditional"] = key["edit"]
        notes = [note] if note else []
        if res > G.img_resolution:
            notes.append(f"images are upsampled from {G.img_resolution} to {res}")
    except BaseException:
        ranks.close()
        raise
    try:
        return _run(
            out, G, key, meta, notes, ranks, t0, batch, force, progress, detector, truth, command, edit
        )
    finally:
        ranks.close()


def _run(
    out: Path,
    G: Generator,
    key: dict[str, Any],
    meta: dict[str, Any],
    notes: list[str],
    ranks: _Ranks,
    t0: float,
    batch: int,
    force: bool,
    progress: ProgressFn | None,
    detector: LandmarkDetector | None,
    truth: GroundTruth | None,
    command: str,
    edit: SampleEdit | None = None,
) -> SampleResult:
    # 1. Rank 0 prepares the folder; every rank learns the outcome.
    status: Any
    if ranks.rank == 0:
        try:
            status = _prepare(out, key, batch, force)
        except BaseException as e:
            ranks.broadcast(("error", _error_payload(e)))
            raise
        status = ranks.broadcast(status)
    else:
        status = ranks.broadcast(None)
        if status[0] == "error":
            _raise_payload(status[1])
    what, info = status

    def result(manifest: dict[str, Any], generated: int, reused: int, done: bool) -> SampleResult:
        return SampleResult(
            out_dir=out,
            n=int(manifest["n"]),
            n_requested=int(manifest.get("n_requested", manifest["n"])),
            dropped=dict(manifest.get("dropped", {})),
            resolution=int(manifest["resolution"]),
            generated=generated,
            reused=reused,
            already_complete=done,
            seconds=time.perf_counter() - t0,
            notes=tuple(notes),
            manifest=manifest,
            rank=ranks.rank,
            world_size=ranks.world,
        )

    if what == "done":
        notes.append(f"{out} already holds this sample set; nothing to do")
        return result(info, 0, 0, True)

    # 2. Every rank draws its chunks r, r + K, ...
    plan = info
    chunk_size, num_chunks, n = int(plan["chunk_size"]), int(plan["num_chunks"]), int(key["n"])
    if chunk_size != batch:
        notes.append(f"resumed with the chunk size of the first run ({chunk_size}), not --batch {batch}")
    mine = list(range(ranks.rank, num_chunks, ranks.world))

    def size(c: int) -> int:
        return min(chunk_size, n - c * chunk_size)

    def seeds_of(c: int) -> list[int]:
        first = int(key["seed"]) + c * chunk_size
        return list(range(first, first + size(c)))

    # A damaged or inconsistent chunk (a truncated file, arrays of other sizes) is removed and drawn anew.
    has_landmarks = detector is not None or str(key["landmarks"]).startswith("ground-truth:")
    for c in mine:
        path = _chunk_path(out, c)
        if path.exists():
            problem = _chunk_problem(
                path, _chunk_specs(key, meta, size(c), landmarks=has_landmarks), seeds_of(c)
            )
            if problem is not None:
                path.unlink(missing_ok=True)
                notes.append(f"chunk {path.name} of an interrupted run {problem}; it was drawn anew")
    todo = [c for c in mine if not _chunk_path(out, c).exists()]
    total = sum(size(c) for c in mine)
    reused = total - sum(size(c) for c in todo)
    truth_landmarks = detector is None and str(key["landmarks"]).startswith("ground-truth:")
    report = progress if ranks.rank == 0 else None
    failure: BaseException | None = None
    generated = 0
    try:
        if report:
            report(reused, total)
        for c in todo:
            seeds = seeds_of(c)
            arrays = _draw_chunk(
                G, seeds, key=key, detector=detector, truth=truth, truth_landmarks=truth_landmarks, edit=edit
            )
            _save_chunk(_chunk_path(out, c), arrays)
            generated += len(seeds)
            if report:
                report(reused + generated, total)
    except BaseException as e:
        failure = e
    if ranks.any(failure is not None):
        if failure is not None:
            raise failure
        raise StylerigError(
            "another rank failed while drawing samples", hint="see its error; then run the command again"
        )

    # 3. Rank 0 assembles, writes the manifest and run.json; every rank learns the outcome.
    if ranks.rank == 0:
        try:
            manifest = _assemble(out, plan, meta)
            arguments = {k: v for k, v in key.items() if k != "generator_sha256"}
            arguments.update(generator=meta["generator"]["path"], batch=chunk_size, world_size=ranks.world)
            write_run_json(
                out,
                command,
                arguments,
                seed=int(key["seed"]),
                assets={"generator": {k: meta["generator"][k] for k in ("path", "sha256")}},
            )
            shutil.rmtree(out / _CHUNKS, ignore_errors=True)
        except BaseException as e:
            ranks.broadcast(("error", _error_payload(e)))
            raise
        manifest = ranks.broadcast(("ok", manifest))[1]
    else:
        answer = ranks.broadcast(None)
        if answer[0] == "error":
            _raise_payload(answer[1])
        manifest = answer[1]
    return result(manifest, generated, reused, False)
