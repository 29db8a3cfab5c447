"""Tiny generators and fabricated checkpoints in the real external formats, for tests.

Nothing here is needed at run time; tests (ours and other rooms') use it to make small files that have
the exact on-disk structure of the checkpoints people download:

* :func:`write_nvidia_pickle` writes a stylegan2-ada-pytorch network pickle: a plain pickle of
  ``{training_set_kwargs, G, D, G_ema, augment_pipe}`` whose networks are ``torch_utils.persistence``
  records (``_reconstruct_persistent_obj(meta)`` with ``module_src`` text, ``class_name`` and the module
  ``state``), tensors as nested ``torch.storage._load_from_bytes`` blobs, ``dnnlib.util.EasyDict``
  init kwargs and numpy float64 attributes. While dumping, and only then, stand-in modules named
  ``torch_utils.persistence`` and ``dnnlib.util`` are placed in ``sys.modules`` so that the pickle
  refers to NVIDIA's global names (no NVIDIA code is involved).
* :func:`write_rosinality_checkpoint` writes a rosinality/stylegan2-pytorch ``.pt`` (``g_ema`` +
  ``latent_avg``, or a training checkpoint with ``g``, ``d``, optimiser states and ``args``), with the
  key names produced by :func:`to_rosinality_state`, an explicit inverse of the loader's renaming.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylerig.gan.networks import Generator, make_resample_filter

__all__ = [
    "to_rosinality_state",
    "tiny_generator",
    "write_nvidia_pickle",
    "write_rosinality_checkpoint",
    "write_stylegan3_pickle",
    "write_tensorflow_pickle",
]

#: The default harmless source text stored in fabricated persistent records.
DEFAULT_MODULE_SRC = "# network source would be here; stylerig never executes it\n"


def tiny_generator(
    seed: int = 0,
    img_resolution: int = 32,
    *,
    z_dim: int = 32,
    w_dim: int = 32,
    channel_base: int = 256,
    channel_max: int = 32,
    num_mapping_layers: int = 2,
    conv_clamp: float | None = None,
    randomize: bool = True,
) -> Generator:
    """A small random generator (default 32x32, channels 32/32/16/8), deterministic in ``seed``.

    With ``randomize`` the noise strengths, biases and ``w_avg`` (zero at construction, as in NVIDIA's
    code) are drawn too, so every tensor influences the image.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(
            z_dim=z_dim,
            c_dim=0,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=3,
            mapping_kwargs={"num_layers": num_mapping_layers},
            synthesis_kwargs={
                "channel_base": channel_base,
                "channel_max": channel_max,
                "conv_clamp": conv_clamp,
            },
        )
        if randomize:
            with torch.no_grad():
                for name, p in G.named_parameters():
                    if name.endswith("noise_strength"):
                        p.normal_(0.0, 0.5)
                    elif name.endswith(".bias") and "affine" not in name and "mapping" not in name:
                        p.normal_(0.0, 0.2)
                G.mapping.w_avg.normal_(0.0, 0.5)
    return G.eval()


# ----------------------------------------------------------------------------------------------------
# NVIDIA network pickles.


class _EasyDictStandIn(dict):
    """Pickles as ``dnnlib.util.EasyDict``."""


_EasyDictStandIn.__module__ = "dnnlib.util"
_EasyDictStandIn.__name__ = _EasyDictStandIn.__qualname__ = "EasyDict"


def _reconstruct_standin(meta: dict[str, Any]) -> None:  # pragma: no cover - never called
    raise RuntimeError("stand-in only used for pickling")


_reconstruct_standin.__module__ = "torch_utils.persistence"
_reconstruct_standin.__name__ = _reconstruct_standin.__qualname__ = "_reconstruct_persistent_obj"


def _scalar_standin(dtype: np.dtype, data: bytes) -> None:  # pragma: no cover - never called
    raise RuntimeError("stand-in only used for pickling")


_scalar_standin.__module__ = "numpy.core.multiarray"
_scalar_standin.__name__ = _scalar_standin.__qualname__ = "scalar"


class _Numpy1Float64:
    """Pickles like a numpy-1.x ``float64`` scalar: ``numpy.core.multiarray.scalar(dtype('f8'), bytes)``."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_scalar_standin, (np.dtype("f8"), np.float64(self.value).tobytes()))


@contextlib.contextmanager
def _temporary_modules(mods: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put stand-in modules into ``sys.modules`` (only while pickling), then restore what was there."""
    saved = {n: sys.modules.get(n) for n in mods}
    try:
        sys.modules.update(mods)
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


@contextlib.contextmanager
def _stand_in_modules(numpy1: bool) -> Iterator[None]:
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    if numpy1:
        names.append("numpy.core.multiarray")
    mods = {n: types.ModuleType(n) for n in names}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_standin  # type: ignore[attr-defined]
    mods["dnnlib.util"].EasyDict = _EasyDictStandIn  # type: ignore[attr-defined]
    if numpy1:
        mods["numpy.core.multiarray"].scalar = _scalar_standin  # type: ignore[attr-defined]
    with _temporary_modules(mods):
        yield


class _PersistentRecord:
    """Pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reconstruct_standin, (self.meta,))


def _easydict(d: dict[str, Any]) -> _EasyDictStandIn:
    return _EasyDictStandIn({k: _easydict(v) if isinstance(v, dict) else v for k, v in d.items()})


def _float64(value: float, numpy1: bool) -> Any:
    return _Numpy1Float64(value) if numpy1 else np.float64(value)


def _record(
    module: nn.Module,
    init_kwargs: dict[str, Any],
    module_src: str,
    numpy1: bool,
    children_kwargs: Any,
) -> _PersistentRecord:
    params = OrderedDict(
        (k, nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in module._parameters.items()
    )
    buffers = OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items())
    children = OrderedDict(
        (name, _record(child, children_kwargs(child), module_src, numpy1, children_kwargs))
        for name, child in module._modules.items()
    )
    state: dict[str, Any] = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": children,
        "_init_args": (),
        "_init_kwargs": _easydict(init_kwargs),
    }
    # Plain attributes as NVIDIA's classes keep them (float64 gains, ints, strings, lists).
    for attr, value in vars(module).items():
        if attr.startswith("_") or attr == "training":
            continue
        if isinstance(value, float):
            state[attr] = _float64(value, numpy1)
        elif value is None or isinstance(value, (bool, int, str)):
            state[attr] = value
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            state[attr] = list(value)
        elif isinstance(value, np.ndarray):
            state[attr] = value.copy()
    if "resolution" in state and "up" in state:  # SynthesisLayer
        state["padding"] = 1
    if "num_conv" in state:  # SynthesisBlock
        w_dim = module.conv1.affine.in_features  # type: ignore[union-attr]
        state.update(architecture="skip", channels_last=False, fused_modconv_default=True, w_dim=w_dim)
        state["img_channels"] = module.torgb.out_channels  # type: ignore[union-attr]
    if "block_resolutions" in state:  # SynthesisNetwork
        state["img_resolution_log2"] = len(state["block_resolutions"]) + 1
    meta = {
        "type": "class",
        "version": 6,
        "module_src": module_src,
        "class_name": type(module).__name__,
        "state": state,
    }
    return _PersistentRecord(meta)


def _child_kwargs(module: nn.Module) -> dict[str, Any]:
    keys = ("in_features", "out_features", "in_channels", "out_channels", "w_dim", "resolution", "up")
    return {k: getattr(module, k) for k in keys if isinstance(getattr(module, k, None), int)}


def write_nvidia_pickle(
    G: Generator,
    path: str | os.PathLike[str],
    *,
    module_src: str = DEFAULT_MODULE_SRC,
    layout: str = "ada",
    numpy1: bool = False,
    extra: dict[str, Any] | None = None,
    protocol: int = 4,
) -> Path:
    """Write ``G`` as an NVIDIA network pickle (see the module docstring).

    Args:
        G: the generator (its tensors become ``G`` and ``G_ema``).
        path: output file.
        module_src: the source text stored in every persistent record (tests put code with an observable
            side effect here to prove it is never run).
        layout: 'ada' (nested ``synthesis_kwargs``, stylegan2-ada-pytorch) or 'stylegan3' (flattened, plus
            ``fused_modconv_default``, as the stylegan3 repository writes them).
        numpy1: write the float64 attributes as numpy 1.x did (``numpy.core.multiarray.scalar``).
        extra: more top-level entries (for tests that smuggle objects into the snapshot).
        protocol: pickle protocol.
    """
    cfg = G.config
    if layout == "ada":
        g_kwargs = {
            "z_dim": cfg["z_dim"],
            "w_dim": cfg["w_dim"],
            "mapping_kwargs": cfg["mapping_kwargs"],
            "synthesis_kwargs": {**cfg["synthesis_kwargs"], "num_fp16_res": 0},
            "c_dim": cfg["c_dim"],
            "img_resolution": cfg["img_resolution"],
            "img_channels": cfg["img_channels"],
        }
    elif layout == "stylegan3":
        g_kwargs = {
            "z_dim": cfg["z_dim"],
            "c_dim": cfg["c_dim"],
            "w_dim": cfg["w_dim"],
            "img_resolution": cfg["img_resolution"],
            "img_channels": cfg["img_channels"],
            "mapping_kwargs": cfg["mapping_kwargs"],
            **cfg["synthesis_kwargs"],
            "num_fp16_res": 0,
            "fused_modconv_default": "inference_only",
        }
    else:
        raise ValueError(f"unknown layout {layout!r}")
    d = type("Discriminator", (nn.Module,), {})()  # a stand-in D: one tensor, ignored by the loader
    d.register_parameter("weight", nn.Parameter(torch.zeros(1, 8)))
    snapshot = {
        "training_set_kwargs": {
            "class_name": "training.dataset.ImageFolderDataset",
            "path": "/data/ffhq.zip",
            "use_labels": False,
            "max_size": 70000,
            "xflip": True,
            "resolution": cfg["img_resolution"],
        },
        "G": _record(G, g_kwargs, module_src, numpy1, _child_kwargs),
        "D": _record(d, {"c_dim": 0}, module_src, numpy1, _child_kwargs),
        "G_ema": _record(G, g_kwargs, module_src, numpy1, _child_kwargs),
        "augment_pipe": None,
        **(extra or {}),
    }
    path = Path(path)
    with _stand_in_modules(numpy1), open(path, "wb") as f:
        pickle.dump(snapshot, f, protocol=protocol)
    return path


def _named_module(class_name: str, tensors: dict[str, torch.Tensor], **children: nn.Module) -> nn.Module:
    m = type(class_name, (nn.Module,), {})()
    for k, v in tensors.items():
        m.register_parameter(k, nn.Parameter(v))
    for k, v in children.items():
        m.add_module(k, v)
    return m


def write_stylegan3_pickle(path: str | os.PathLike[str], w_dim: int = 16) -> Path:
    """Write a tiny pickle with the structure of a StyleGAN3 (alias-free) ``G_ema``.

    Its synthesis has ``input`` (a ``SynthesisInput`` with ``weight``, ``freqs``, ``phases``, ``transform``,
    ``affine``) and layers named ``L{idx}_{size}_{channels}`` with ``magnitude_ema`` and up/down filters.
    """

    def fc(i: int, o: int) -> nn.Module:
        return _named_module("FullyConnectedLayer", {"weight": torch.randn(o, i), "bias": torch.zeros(o)})

    sg3_input = _named_module(
        "SynthesisInput",
        {
            "weight": torch.randn(8, 8),
            "freqs": torch.randn(8, 2),
            "phases": torch.rand(8),
            "transform": torch.eye(3),
        },
        affine=fc(w_dim, 4),
    )
    layer = _named_module(
        "SynthesisLayer",
        {
            "weight": torch.randn(8, 8, 3, 3),
            "bias": torch.zeros(8),
            "magnitude_ema": torch.ones([]),
            "up_filter": torch.ones(6),
            "down_filter": torch.ones(6),
        },
        affine=fc(w_dim, 8),
    )
    # StyleGAN3 layers keep numpy arrays as attributes (pickled through numpy's _reconstruct).
    layer.in_size = np.array([36, 36])
    layer.out_size = np.array([36, 36])
    layer.in_sampling_rate = np.float64(16.0)
    synthesis = _named_module("SynthesisNetwork", {}, input=sg3_input, L0_36_8=layer)
    mapping = _named_module("MappingNetwork", {}, fc0=fc(w_dim, w_dim), fc1=fc(w_dim, w_dim))
    G = _named_module("Generator", {}, synthesis=synthesis, mapping=mapping)
    kwargs = {
        "z_dim": w_dim,
        "c_dim": 0,
        "w_dim": w_dim,
        "img_resolution": 16,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 32768,
        "channel_max": 512,
        "magnitude_ema_beta": 0.999,
    }
    snapshot = {
        "training_set_kwargs": None,
        "G": None,
        "D": None,
        "G_ema": _record(G, kwargs, DEFAULT_MODULE_SRC, False, _child_kwargs),
        "augment_pipe": None,
    }
    path = Path(path)
    with _stand_in_modules(False), open(path, "wb") as f:
        pickle.dump(snapshot, f, protocol=4)
    return path


class _TFNetworkStandIn:
    """Pickles as ``dnnlib.tflib.network.Network`` (state set through BUILD)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


_TFNetworkStandIn.__module__ = "dnnlib.tflib.network"
_TFNetworkStandIn.__name__ = _TFNetworkStandIn.__qualname__ = "Network"


def write_tensorflow_pickle(path: str | os.PathLike[str]) -> Path:
    """Write a tiny pickle shaped like NVIDIA's TensorFlow snapshots: a tuple ``(G, D, Gs)`` of
    ``dnnlib.tflib.network.Network`` objects holding numpy variables."""
    names = ["dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"]
    mods = {n: types.ModuleType(n) for n in names}
    mods["dnnlib.tflib.network"].Network = _TFNetworkStandIn  # type: ignore[attr-defined]

    def net(name: str) -> _TFNetworkStandIn:
        variables = [(f"{name}/mapping/Dense0/weight", np.zeros((4, 4), np.float32))]
        return _TFNetworkStandIn(
            {"version": 4, "name": name, "static_kwargs": {}, "components": {}, "variables": variables}
        )

    path = Path(path)
    with _temporary_modules(mods), open(path, "wb") as f:
        pickle.dump((net("G"), net("D"), net("Gs")), f, protocol=2)
    return path


# ----------------------------------------------------------------------------------------------------
# rosinality checkpoints.


def to_rosinality_state(G: Generator) -> OrderedDict[str, torch.Tensor]:
    """``G``'s tensors under rosinality/stylegan2-pytorch ``g_ema`` names (the B2 table, inverted).

    Includes the noise buffers and the derivable kernels (``4 * outer([1,3,3,1]) / 64``) as rosinality
    stores them.
    """
    sd = {k: v.detach().clone() for k, v in G.state_dict().items()}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    kernel = 4.0 * make_resample_filter()
    for i in range(G.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]

    def conv(dst: str, src: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]

    def rgb(dst: str, src: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)

    conv("conv1", "synthesis.b4.conv1")
    rgb("to_rgb1", "synthesis.b4.torgb")
    noises = {0: sd["synthesis.b4.conv1.noise_const"]}
    for k, res in enumerate(G.synthesis.block_resolutions[1:]):
        conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0")
        out[f"convs.{2 * k}.conv.blur.kernel"] = kernel.clone()
        conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")
        rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
        out[f"to_rgbs.{k}.upsample.kernel"] = kernel.clone()
        noises[2 * k + 1] = sd[f"synthesis.b{res}.conv0.noise_const"]
        noises[2 * k + 2] = sd[f"synthesis.b{res}.conv1.noise_const"]
    for i in sorted(noises):
        out[f"noises.noise_{i}"] = noises[i][None, None]
    return out


def write_rosinality_checkpoint(
    G: Generator,
    path: str | os.PathLike[str],
    *,
    training: bool = False,
    latent_avg: bool = True,
) -> Path:
    """Write ``G`` as a rosinality ``.pt``.

    Args:
        training: write a ``train.py`` checkpoint (``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim``, ``args``
            as an ``argparse.Namespace``, ``ada_aug_p``), which has no ``latent_avg``.
        latent_avg: for the converted (non-training) kind, include ``latent_avg`` (= ``mapping.w_avg``).
    """
    g_ema = to_rosinality_state(G)
    if training:
        g = OrderedDict((k, v.clone()) for k, v in g_ema.items())
        d = OrderedDict(
            [("convs.0.0.weight", torch.randn(8, 3, 1, 1)), ("final_linear.1.bias", torch.zeros(1))]
        )
        params = [nn.Parameter(v.clone()) for k, v in list(g_ema.items())[:4]]
        opt = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
        sum(p.square().sum() for p in params).backward()  # type: ignore[union-attr]
        opt.step()
        args = argparse.Namespace(
            size=G.img_resolution,
            latent=G.w_dim,
            n_mlp=G.mapping.num_layers,
            channel_multiplier=2,
            batch=16,
            lr=0.002,
            path="/data/lmdb",
            augment=False,
        )
        ckpt: dict[str, Any] = {
            "g": g,
            "d": d,
            "g_ema": g_ema,
            "g_optim": opt.state_dict(),
            "d_optim": opt.state_dict(),
            "args": args,
            "ada_aug_p": 0.0,
        }
    else:
        ckpt = {"g_ema": g_ema}
        if latent_avg:
            ckpt["latent_avg"] = G.mapping.w_avg.detach().clone()
    path = Path(path)
    torch.save(ckpt, path)
    return path
