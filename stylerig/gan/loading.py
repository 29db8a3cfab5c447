"""Read generator checkpoints without running code from them; write the project's own format.

One entry point, :func:`load_generator`, recognises the file by its content (not its extension):

* **NVIDIA network pickles** (stylegan2-ada-pytorch, and the StyleGAN2 networks of the stylegan3
  repository; ``G_ema`` is used). Such a pickle carries the Python source of its network classes, which
  NVIDIA's loader executes. Ours never does: a restricted unpickler admits only an allow-list of globals
  (tensor rebuilding, ``OrderedDict``, numeric numpy scalars and arrays, ``EasyDict`` and the persistence
  hook, which is replaced by a stub that keeps the source text as inert data), each mapped to a checked
  stand-in rather than the original callable, then the tensors are copied into our
  :class:`~stylerig.gan.networks.Generator`, built from the pickled ``init_kwargs`` (either layout).
  Any other global is refused before anything is called. StyleGAN3-architecture and TensorFlow pickles
  are refused with a clear message.
* **rosinality/stylegan2-pytorch checkpoints** (``.pt``: ``g_ema`` + ``latent_avg``, or a training
  checkpoint that also holds ``g``, ``d``, optimiser states and an ``argparse.Namespace``), read with
  ``torch.load(weights_only=True)`` and renamed through :data:`ROSINALITY_RULES`, a table that must
  account for every key (only the derivable blur/upsample kernels are skipped, after a check). The
  architecture (size, mapping depth, channels) is derived from the tensor shapes; a missing
  ``latent_avg`` is computed as the mean of ``mapping(z)`` over 4096 seeded z.
* **The project's own format**: one ``.safetensors`` file whose metadata holds the JSON config
  (``{"format": "stylerig.generator", "version": "1", "config": ...}``); no pickle at all.
  :func:`save_generator` writes it atomically, :func:`convert` turns either external format into it.

Every failure to read (missing, empty, truncated, corrupt or wrong-kind file, refused content) raises one
:class:`~stylerig.errors.AssetError` naming the file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig.errors import AssetError, BackendUnavailableError, InputError, StylerigError
from stylerig.gan.networks import Generator, make_resample_filter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ROSINALITY_RULES",
    "convert",
    "detect_format",
    "generator_from_nvidia_pickle",
    "generator_from_rosinality",
    "load_generator",
    "read_nvidia_pickle",
    "save_generator",
]

#: ``format`` value in the metadata of the project's own generator files.
FORMAT = "stylerig.generator"
#: Version of the own format.
FORMAT_VERSION = "1"

_TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickle of torch's legacy magic number
_HINT_FORMATS = (
    "pass an NVIDIA stylegan2-ada-pytorch .pkl, a rosinality stylegan2-pytorch .pt, "
    "or a .safetensors file written by `stylerig convert`"
)
#: Number of z averaged when a checkpoint has no w_avg / latent_avg.
W_AVG_SAMPLES = 4096


# ----------------------------------------------------------------------------------------------------
# Format detection.


def detect_format(path: str | os.PathLike[str]) -> str:
    """Recognise a checkpoint by its first bytes.

    Returns:
        'stylerig' (safetensors), 'nvidia-pickle' (a plain pickle), or 'torch' (a ``torch.save`` file,
        zip or legacy format).

    Raises:
        AssetError: missing, empty, or unrecognised file.
    """
    path = _existing_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if not head:
        raise AssetError(f"{path} is empty", hint="the download or copy was interrupted; fetch it again")
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    json_header = len(head) >= 9 and head[8:9] == b"{"
    if json_header and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "stylerig"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "nvidia-pickle"
    if json_header:
        raise AssetError(f"{path} looks like a truncated safetensors file", hint="write or copy it again")
    raise AssetError(f"{path} is not a generator checkpoint of a known kind", hint=_HINT_FORMATS)


def _existing_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise AssetError(f"generator file not found: {path}", hint="check the path")
    if not path.is_file():
        raise AssetError(f"{path} is not a file", hint=_HINT_FORMATS)
    return path


# ----------------------------------------------------------------------------------------------------
# Public entry points.


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Generator:
    """Load a generator checkpoint of any supported kind (see the module docstring).

    Args:
        path: the checkpoint file.
        device: where to put the generator.

    Returns:
        a :class:`~stylerig.gan.networks.Generator` in eval mode, with ``requires_grad`` off, on ``device``.

    Raises:
        AssetError: the file is missing, empty, truncated, corrupt, of the wrong kind, or refused.
        InputError: ``device`` is not a valid torch device.
        BackendUnavailableError: ``device`` is valid but not available here (e.g. CUDA on a CPU machine).
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"invalid device {device!r}", hint="use 'cpu', 'cuda' or 'cuda:N'") from e
    path = _existing_file(path)
    kind = detect_format(path)
    try:
        if kind == "stylerig":
            G = _load_own(path)
        elif kind == "nvidia-pickle":
            G = generator_from_nvidia_pickle(read_nvidia_pickle(path), source=str(path))
        else:
            G = generator_from_rosinality(_torch_load(path), source=str(path))
    except StylerigError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        raise AssetError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e})", hint="fetch or write the file again"
        ) from e
    except Exception as e:  # any low-level failure of a reader is a bad file, not a bug of the caller
        raise AssetError(
            f"cannot read {path} as a {kind} generator checkpoint ({type(e).__name__}: {e})",
            hint="the file may be truncated or corrupt; fetch or write it again",
        ) from e
    G = G.eval().requires_grad_(False)
    try:
        return G.to(device)
    except (RuntimeError, AssertionError) as e:  # e.g. "Torch not compiled with CUDA enabled"
        raise BackendUnavailableError(
            f"cannot move the generator to {device} ({e})",
            hint="use device 'cpu', or check `stylerig doctor`",
        ) from e


def save_generator(G: Generator, path: str | os.PathLike[str]) -> Path:
    """Write ``G`` in the project's own format (safetensors + JSON config), atomically.

    The tensors are ``G.state_dict()`` (NVIDIA names, float32, on CPU); the metadata holds
    ``format``, ``version`` and ``config`` (``G.config`` as JSON). Written to a temporary file beside
    ``path`` and renamed over it, so readers never see a partial file.

    Returns:
        the path written.
    """
    from stylerig.tensorfile import save_tensors

    if not isinstance(G, Generator):
        raise InputError(f"save_generator needs a stylerig Generator, got {type(G).__name__}")
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in G.state_dict().items()}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": json.dumps(G.config, sort_keys=True)}
    return save_tensors(path, tensors, meta)


def convert(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = False
) -> Generator:
    """Read any supported checkpoint ``src`` and write it to ``dst`` in the project's own format.

    Args:
        src: NVIDIA ``.pkl``, rosinality ``.pt`` or own ``.safetensors``.
        dst: output file (conventionally ``*.safetensors``).
        overwrite: replace an existing ``dst``.

    Returns:
        the generator that was written (on CPU).

    Raises:
        AssetError: ``src`` cannot be read, or ``dst`` exists and ``overwrite`` is False.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise AssetError(f"{dst} already exists", hint="choose another output path or pass --force")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise AssetError(f"{dst} is the input file", hint="choose another output path")
    G = load_generator(src)
    save_generator(G, dst)
    return G


# ----------------------------------------------------------------------------------------------------
# Own format.


def _load_own(path: Path) -> Generator:
    from stylerig.tensorfile import load_tensors

    tensors, meta = load_tensors(
        path,
        what="safetensors file",
        hint="the file may be truncated; write it again with `stylerig convert`",
    )
    if meta.get("format") != FORMAT:
        what = meta.get("format") or (json.loads(meta["config"]).get("format") if "config" in meta else None)
        raise AssetError(
            f"{path} is a safetensors file but not a stylerig generator (format: {what or 'unknown'})",
            hint=_HINT_FORMATS,
        )
    if meta.get("version") != FORMAT_VERSION:
        raise AssetError(
            f"{path} has generator format version {meta.get('version')!r}; this stylerig reads {FORMAT_VERSION!r}",
            hint="upgrade stylerig, or convert the original checkpoint again",
        )
    try:
        config = json.loads(meta["config"])
        G = Generator(**config)
    except (KeyError, ValueError, TypeError) as e:
        raise AssetError(f"{path} has an unusable generator config ({e})", hint="convert it again") from e
    _load_state(G, tensors, path)
    return G


def _load_state(G: Generator, state: Mapping[str, torch.Tensor], source: object) -> None:
    ours = G.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:3])}")
        raise AssetError(f"{source}: the tensors do not match the generator: {'; '.join(parts)}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(ours[k].shape):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise AssetError(f"{source}: tensor {k} has shape {got}, expected {tuple(ours[k].shape)}")
        if not v.is_floating_point():
            raise AssetError(f"{source}: tensor {k} has dtype {v.dtype}, expected floating point")
        if not bool(torch.isfinite(v).all()):
            raise AssetError(
                f"{source}: tensor {k} contains NaN or infinite values", hint="the file is corrupt"
            )
    G.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _fill_w_avg(G: Generator, seed: int = 0) -> None:
    # w_avg = mean of mapping(z) over W_AVG_SAMPLES seeded z (rosinality's Generator.mean_latent).
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(W_AVG_SAMPLES, G.z_dim, generator=gen)
    with torch.no_grad():
        total = torch.zeros(G.w_dim, dtype=torch.float64)
        for chunk in z.split(1024):
            total += G.mapping(chunk)[:, 0].double().sum(0)
        G.mapping.w_avg.copy_((total / W_AVG_SAMPLES).float())


# ----------------------------------------------------------------------------------------------------
# NVIDIA pickles: restricted unpickler.


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (raised before anything is called)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class _TensorFlowPickle(pickle.UnpicklingError):
    """The pickle holds TensorFlow ``dnnlib.tflib`` networks."""


class _RefusedStorage(pickle.UnpicklingError):
    """A nested tensor-storage blob holds something torch's weights-only unpickler refuses."""


class PersistentStub:
    """What a ``torch_utils.persistence`` record becomes: inert data, never executed.

    Attributes:
        class_name: the network class (``Generator``, ``SynthesisLayer``, ...).
        version: the persistence format version (6 for all published files).
        module_src: the embedded Python source (kept as text for diagnostics only).
        state: the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...).
    """

    __slots__ = ("class_name", "module_src", "state", "version")

    def __init__(self, class_name: str, version: object, module_src: str, state: dict[str, Any]) -> None:
        self.class_name, self.version, self.module_src, self.state = class_name, version, module_src, state

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"


class _EasyDict(dict):  # stands in for dnnlib.util.EasyDict (a dict with attribute access)
    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if state and not isinstance(state, dict):
            raise pickle.UnpicklingError("malformed EasyDict state")


def _reconstruct_persistent_obj(meta: object) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("malformed persistent-object record")
    state, name, src = meta.get("state"), meta.get("class_name"), meta.get("module_src", "")
    if not isinstance(state, dict) or not isinstance(name, str) or not isinstance(src, str):
        raise pickle.UnpicklingError("malformed persistent-object record")
    return PersistentStub(name, meta.get("version"), src, state)


def _load_storage(data: object) -> Any:
    # Each storage is a nested legacy-format torch.save blob; read it with torch's weights-only unpickler.
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("malformed tensor storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as e:
            raise _RefusedStorage(str(e).splitlines()[0] if str(e) else "refused") from None
    if not _is_storage(out):
        raise pickle.UnpicklingError("a tensor-storage record holds no storage")
    return out


def _is_storage(x: object) -> bool:
    return isinstance(x, (torch.storage.TypedStorage, torch.UntypedStorage))


def _ints(x: object) -> bool:
    return isinstance(x, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    if not (_is_storage(storage) and isinstance(storage_offset, int) and _ints(size) and _ints(stride)):
        raise pickle.UnpicklingError("malformed tensor record")
    if backward_hooks:
        raise pickle.UnpicklingError("tensor record with backward hooks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor_v2(
            storage, storage_offset, tuple(size), tuple(stride), False, OrderedDict()
        )


def _rebuild_parameter(
    data: object, requires_grad: object = False, backward_hooks: object = None, *_: object
):
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise pickle.UnpicklingError("malformed parameter record")
    return data


_NUMPY_KINDS = frozenset("biufc")


def _np_dtype(obj: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("numpy dtype from a non-string")
    dt = np.dtype(obj)
    if dt.kind not in _NUMPY_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {obj!r} is not numeric")
    return dt


def _np_scalar(dtype: object, data: object = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or not isinstance(data, bytes):
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0].copy()


def _np_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    # numpy's array-pickling entry point: an empty array whose contents BUILD (ndarray.__setstate__) fills,
    # with a dtype that itself went through _np_dtype (numeric only).
    if subtype is not np.ndarray or not _ints(shape) or not isinstance(dtype, (bytes, str)):
        raise pickle.UnpicklingError("malformed numpy array record")
    return np.ndarray.__new__(np.ndarray, tuple(shape), dtype)


def _codecs_encode(text: object, encoding: object = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("malformed bytes record")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
}


_PY2_MODULES = {"__builtin__": "builtins"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from :data:`_ALLOWED` (safe stand-ins, never the originals)."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles spell builtins the Python 2 way
        if module == "dnnlib.tflib" or module.startswith("dnnlib.tflib."):
            raise _TensorFlowPickle(f"{module}.{name}")
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None

    def persistent_load(self, pid: object) -> Any:
        raise pickle.UnpicklingError("persistent ids are not used by network pickles")


def read_nvidia_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle an NVIDIA network pickle with the restricted unpickler.

    Network modules come back as :class:`PersistentStub` objects; their embedded source is never run.

    Raises:
        AssetError: the pickle refers to a global outside the allow-list (nothing was called), holds
            TensorFlow networks, or is truncated/corrupt.
    """
    path = _existing_file(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except _RefusedGlobal as e:
        raise AssetError(
            f"{path} tries to load the non-allow-listed object {e.module}.{e.name}; refused, nothing was run",
            hint="a network pickle only needs tensors and plain data; do not use files of unknown origin",
        ) from None
    except _RefusedStorage as e:
        raise AssetError(
            f"{path} holds a tensor storage with non-tensor content ({e}); refused, nothing was run",
            hint="a network pickle only needs tensors and plain data; do not use files of unknown origin",
        ) from None
    except _TensorFlowPickle as e:
        raise AssetError(
            f"{path} is a TensorFlow StyleGAN pickle ({e}); those are not supported",
            hint="convert it with NVIDIA's stylegan2-ada-pytorch legacy.py first, then `stylerig convert`",
        ) from None
    except RecursionError as e:
        raise AssetError(f"{path} is not a usable network pickle (nesting too deep)") from e
    except (EOFError, pickle.UnpicklingError) as e:
        raise AssetError(
            f"{path} is truncated, corrupt, or holds data a network pickle does not ({type(e).__name__}: {e})",
            hint="fetch the file again",
        ) from e
    except Exception as e:  # e.g. a malformed record handed to an allow-listed constructor
        raise AssetError(
            f"cannot read {path} as a network pickle ({type(e).__name__}: {e})",
            hint="the file may be truncated or corrupt; fetch it again",
        ) from e


_SG2_CLASSES = frozenset(
    {
        "Generator",
        "MappingNetwork",
        "SynthesisNetwork",
        "SynthesisBlock",
        "SynthesisLayer",
        "ToRGBLayer",
        "FullyConnectedLayer",
        "Conv2dLayer",
    }
)
_G_POSITIONAL = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)


def _items(d: object) -> list[tuple[Any, Any]]:
    # dict.items() of a pickled mapping, immune to attributes a pickle may have set on the instance.
    if d is None:
        return []
    if not isinstance(d, dict):
        raise AssetError(f"network pickle: expected a mapping, got {type(d).__name__}")
    return list(dict.items(d))


def _plain(x: Any) -> Any:
    # EasyDict / OrderedDict / tuples -> plain JSON-like values.
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in _items(x)}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _module_state(stub: PersistentStub, prefix: str, out: dict[str, torch.Tensor], classes: set[str]) -> None:
    st = stub.state
    classes.add(stub.class_name)
    for name, t in _items(dict.get(st, "_parameters")):
        if t is not None:
            out[prefix + str(name)] = t
    skip = dict.get(st, "_non_persistent_buffers_set") or set()
    for name, t in _items(dict.get(st, "_buffers")):
        if t is not None and name not in skip:
            out[prefix + str(name)] = t
    for name, child in _items(dict.get(st, "_modules")):
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise AssetError(f"network pickle: submodule {prefix}{name} is not a persistent network module")
        _module_state(child, f"{prefix}{name}.", out, classes)


def generator_from_nvidia_pickle(data: Any, source: str = "network pickle") -> Generator:
    """Build our :class:`Generator` from an unpickled NVIDIA snapshot (the output of :func:`read_nvidia_pickle`).

    Accepts the snapshot dict (``G_ema`` is used) or a bare ``G_ema`` stub. The config comes from the
    pickled ``init_kwargs`` in the stylegan2-ada-pytorch layout (nested ``synthesis_kwargs``) or the
    stylegan3 repository's layout (flattened).

    Raises:
        AssetError: not a StyleGAN2 generator snapshot (StyleGAN3, TensorFlow, other content).
    """
    if isinstance(data, dict):
        if "G_ema" not in data:
            keys = ", ".join(sorted(map(str, data))[:8])
            raise AssetError(f"{source} has no G_ema network (keys: {keys})", hint=_HINT_FORMATS)
        g = dict.get(data, "G_ema")
    else:
        g = data
    if not isinstance(g, PersistentStub):
        raise AssetError(
            f"{source} does not hold an NVIDIA network (got {type(g).__name__})", hint=_HINT_FORMATS
        )
    if g.class_name != "Generator":
        raise AssetError(f"{source}: G_ema is a {g.class_name}, not a Generator", hint=_HINT_FORMATS)

    state: dict[str, torch.Tensor] = {}
    classes: set[str] = set()
    _module_state(g, "", state, classes)
    sg3 = "SynthesisInput" in classes or any(
        k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in state
    )
    if sg3:
        raise AssetError(
            f"{source} is a StyleGAN3 (alias-free) generator; only StyleGAN2 generators are supported",
            hint="use a StyleGAN2 checkpoint (stylegan2-ada-pytorch, or stylegan3's stylegan2-*.pkl files)",
        )
    unknown = classes - _SG2_CLASSES
    if unknown:
        raise AssetError(
            f"{source}: unknown network class(es) {', '.join(sorted(unknown))}", hint=_HINT_FORMATS
        )
    for k, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise AssetError(f"{source}: {k} is not a tensor")

    kwargs = _plain(dict.get(g.state, "_init_kwargs") or {})
    args = _plain(dict.get(g.state, "_init_args") or ())
    if not isinstance(kwargs, dict) or not isinstance(args, list) or len(args) > len(_G_POSITIONAL):
        raise AssetError(f"{source}: malformed generator init arguments")
    kwargs = {**dict(zip(_G_POSITIONAL, args, strict=False)), **kwargs}
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution"):
        if key not in kwargs:
            raise AssetError(f"{source}: the generator's init arguments lack {key}")
    try:
        G = Generator(**kwargs)
    except (InputError, TypeError) as e:
        msg = e.message if isinstance(e, InputError) else str(e)
        raise AssetError(f"{source}: unsupported generator configuration ({msg})") from e
    _load_state(G, state, source)
    return G


# ----------------------------------------------------------------------------------------------------
# rosinality checkpoints.


def _torch_load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "argparse.Namespace" not in str(e):
                raise _refused_torch(path, e) from None
        # rosinality training checkpoints hold the argparse.Namespace of train.py.
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise _refused_torch(path, e) from None


def _refused_torch(path: Path, e: Exception) -> AssetError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "weights only" in str(e).lower() or "weights_only" in str(e):
        return AssetError(
            f"{path} holds objects other than tensors and plain data; refused, nothing was run ({first})",
            hint="rosinality checkpoints only need tensors; do not use files of unknown origin",
        )
    return AssetError(f"{path} is truncated or corrupt ({first})", hint="fetch or write the file again")


def _res_of(k: int) -> int:
    # convs.{2k}, convs.{2k+1} and to_rgbs.{k} belong to block 2**(k+3).
    return 2 ** (k + 3)


def _noise_target(i: int) -> str:
    if i == 0:
        return "synthesis.b4.conv1.noise_const"
    k, r = (i - 1) // 2, (i - 1) % 2
    return f"synthesis.b{_res_of(k)}.conv{r}.noise_const"


_Transform = Callable[[torch.Tensor], torch.Tensor]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _drop0(t: torch.Tensor) -> torch.Tensor:
    if t.shape[:1] != (1,):
        raise AssetError(f"expected a leading dimension of 1, got shape {tuple(t.shape)}")
    return t[0]


def _scalar(t: torch.Tensor) -> torch.Tensor:
    if t.numel() != 1:
        raise AssetError(f"expected one value, got shape {tuple(t.shape)}")
    return t.reshape([])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _noise(t: torch.Tensor) -> torch.Tensor:
    if t.ndim != 4 or t.shape[:2] != (1, 1):
        raise AssetError(f"expected a noise buffer [1, 1, R, R], got shape {tuple(t.shape)}")
    return t[0, 0]


def _conv_target(j: int) -> str:
    return f"synthesis.b{_res_of(j // 2)}.conv{j % 2}"


#: rosinality ``g_ema`` key pattern -> (NVIDIA key from the match, tensor transform). ``None`` as target
#: marks a derivable buffer that is checked and skipped. Every key of ``g_ema`` must match one rule.
ROSINALITY_RULES: list[tuple[str, Callable[[re.Match[str]], str | None], _Transform]] = [
    (r"style\.(\d+)\.(weight|bias)", lambda m: f"mapping.fc{int(m[1]) - 1}.{m[2]}", _same),
    (r"input\.input", lambda m: "synthesis.b4.const", _drop0),
    (r"conv1\.conv\.weight", lambda m: "synthesis.b4.conv1.weight", _drop0),
    (r"conv1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.conv1.affine.{m[1]}", _same),
    (r"conv1\.noise\.weight", lambda m: "synthesis.b4.conv1.noise_strength", _scalar),
    (r"conv1\.activate\.bias", lambda m: "synthesis.b4.conv1.bias", _same),
    (r"to_rgb1\.conv\.weight", lambda m: "synthesis.b4.torgb.weight", _drop0),
    (r"to_rgb1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.torgb.affine.{m[1]}", _same),
    (r"to_rgb1\.bias", lambda m: "synthesis.b4.torgb.bias", _flat),
    (r"convs\.(\d+)\.conv\.weight", lambda m: f"{_conv_target(int(m[1]))}.weight", _drop0),
    (
        r"convs\.(\d+)\.conv\.modulation\.(weight|bias)",
        lambda m: f"{_conv_target(int(m[1]))}.affine.{m[2]}",
        _same,
    ),
    (r"convs\.(\d+)\.noise\.weight", lambda m: f"{_conv_target(int(m[1]))}.noise_strength", _scalar),
    (r"convs\.(\d+)\.activate\.bias", lambda m: f"{_conv_target(int(m[1]))}.bias", _same),
    (r"convs\.(\d+)\.conv\.blur\.kernel", lambda m: None, _same),
    (r"to_rgbs\.(\d+)\.conv\.weight", lambda m: f"synthesis.b{_res_of(int(m[1]))}.torgb.weight", _drop0),
    (
        r"to_rgbs\.(\d+)\.conv\.modulation\.(weight|bias)",
        lambda m: f"synthesis.b{_res_of(int(m[1]))}.torgb.affine.{m[2]}",
        _same,
    ),
    (r"to_rgbs\.(\d+)\.bias", lambda m: f"synthesis.b{_res_of(int(m[1]))}.torgb.bias", _flat),
    (r"to_rgbs\.(\d+)\.upsample\.kernel", lambda m: None, _same),
    (r"noises\.noise_(\d+)", lambda m: _noise_target(int(m[1])), _noise),
]
_COMPILED_RULES = [(re.compile(p), target, fn) for p, target, fn in ROSINALITY_RULES]


def rename_rosinality(
    g_ema: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename a rosinality ``g_ema`` state dict to NVIDIA names through :data:`ROSINALITY_RULES`.

    The derivable resampling kernels (``blur.kernel``, ``upsample.kernel``) are checked against
    ``4 * outer([1,3,3,1]) / 64`` and dropped (our network regenerates them).

    Raises:
        AssetError: a key matches no rule, two keys give the same name, a kernel is not the standard one,
            or a tensor has an unexpected shape.
    """
    out: dict[str, torch.Tensor] = {}
    unmatched = []
    fir = 4.0 * make_resample_filter()
    for key, t in g_ema.items():
        if not isinstance(t, torch.Tensor):
            raise AssetError(f"{source}: g_ema.{key} is not a tensor")
        for pattern, target_of, transform in _COMPILED_RULES:
            m = pattern.fullmatch(key)
            if m is None:
                continue
            target = target_of(m)
            if target is None:
                if t.shape != fir.shape or not torch.allclose(t.float(), fir, atol=1e-6):
                    raise AssetError(f"{source}: g_ema.{key} is not the [1,3,3,1] resampling kernel")
            elif target in out:
                raise AssetError(f"{source}: g_ema.{key} duplicates {target}")
            else:
                try:
                    out[target] = transform(t)
                except AssetError as e:
                    raise AssetError(f"{source}: g_ema.{key}: {e.message}") from None
            break
        else:
            unmatched.append(key)
    if unmatched:
        raise AssetError(
            f"{source}: {len(unmatched)} g_ema key(s) match no renaming rule, e.g. {', '.join(unmatched[:4])}",
            hint="this is not a rosinality stylegan2-pytorch generator (or a variant we do not know)",
        )
    return out


def _derive_rosinality_config(state: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    # Everything is read off the (renamed) shapes: resolution, mapping depth, channels.
    fcs = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if not fcs or fcs != list(range(len(fcs))):
        raise AssetError(f"{source}: g_ema has no usable style.* mapping layers")
    res = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not res or res != [2**i for i in range(2, 2 + len(res))] or "synthesis.b4.const" not in state:
        raise AssetError(f"{source}: g_ema does not have the convs/to_rgbs of a StyleGAN2 generator")
    channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
    channel_max = max(channels.values())
    candidates = sorted({c * r for r, c in channels.items()} | {channel_max * res[-1]})
    base = next(
        (b for b in candidates if all(min(b // r, channel_max) == c for r, c in channels.items())), None
    )
    if base is None:
        raise AssetError(
            f"{source}: channel counts {channels} cannot be expressed as min(channel_base // R, channel_max)",
            hint="channel_multiplier > 2 checkpoints are not supported",
        )
    fc0 = state["mapping.fc0.weight"]
    return {
        "z_dim": int(fc0.shape[1]),
        "c_dim": 0,
        "w_dim": int(state[f"mapping.fc{fcs[-1]}.weight"].shape[0]),
        "img_resolution": res[-1],
        "img_channels": int(state["synthesis.b4.torgb.weight"].shape[0]),
        "mapping_kwargs": {"num_layers": len(fcs)},
        "synthesis_kwargs": {"channel_base": base, "channel_max": channel_max},
    }


def generator_from_rosinality(ckpt: Any, source: str = "checkpoint") -> Generator:
    """Build our :class:`Generator` from a loaded rosinality checkpoint dict (``g_ema`` [+ ``latent_avg``]).

    Raises:
        AssetError: no ``g_ema``, unknown keys, or shapes that are not a StyleGAN2 generator.
    """
    if not isinstance(ckpt, Mapping) or "g_ema" not in ckpt:
        keys = ", ".join(sorted(map(str, ckpt))[:8]) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise AssetError(
            f"{source} is a torch checkpoint without a rosinality g_ema generator (found: {keys})",
            hint=_HINT_FORMATS,
        )
    g_ema = ckpt["g_ema"]
    if not isinstance(g_ema, Mapping):
        raise AssetError(f"{source}: g_ema is not a state dict")
    state = rename_rosinality(g_ema, source)
    config = _derive_rosinality_config(state, source)
    try:
        G = Generator(**config)
    except InputError as e:
        raise AssetError(f"{source}: unsupported generator configuration ({e.message})") from e
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != G.w_dim:
            raise AssetError(f"{source}: latent_avg is not a [{G.w_dim}] tensor")
        state["mapping.w_avg"] = latent_avg.reshape(-1)
    else:
        state["mapping.w_avg"] = torch.zeros(G.w_dim)
    # Derivable resampling filters: ours (checked equal to the skipped kernels above).
    for k, v in G.state_dict().items():
        if k.endswith("resample_filter"):
            state[k] = v
    _load_state(G, state, source)
    if latent_avg is None:
        _fill_w_avg(G)
    return G
