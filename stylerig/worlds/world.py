"""The built-in synthetic world as one object: :func:`load_world` -> :class:`World`.

A world is a generator that knows the face behind every image it draws. Seed ``s`` gives the factor
vector ``z = z_from_seeds([s], 38)`` (:mod:`stylerig.worlds.prior`), which is at once the generator's z
and the world's description of the portrait: ``factors_to_world(z)`` gives the true face parameters p
(257 layout, rotation in radians) and the scene (background, hair, shirt). The generator was trained
(:mod:`stylerig.worlds.train`) to draw ``render_portrait(p, scene)`` from that z with
``truncation_psi=1, noise_mode="const"``.

Ground truth exists for *unmixed, untruncated* codes only: a style-mixed W+ code, or one pulled
towards ``w_avg``, shows a face no factor vector describes. :class:`WorldTruth` (the hook
``stylerig sample`` calls) checks each row's code against the seed's own code and gives NaN rows for
the others.

Example:
    >>> from stylerig.worlds import load_world
    >>> world = load_world()  # doctest: +SKIP
    >>> z = world.z([0, 1])  # doctest: +SKIP
    >>> img = world.generator(z, truncation_psi=1, noise_mode="const")  # [2, 3, 128, 128]  # doctest: +SKIP
    >>> p = world.params([0, 1])  # [2, 257], the truth behind ``img``  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig.errors import AssetError, InputError
from stylerig.face import MorphableModel
from stylerig.gan import Generator
from stylerig.render import FaceRenderer
from stylerig.worlds.prior import NUM_FACTORS, factors_to_world, sample_factors
from stylerig.worlds.scene import render_portrait

__all__ = ["ASSETS", "GENERATOR_FILE", "World", "WorldTruth", "load_world"]

#: Folder of the shipped assets.
ASSETS = Path(__file__).resolve().parent / "assets"
#: The shipped world generator (:func:`stylerig.gan.save_generator` format).
GENERATOR_FILE = ASSETS / "world-generator.safetensors"
#: Name recorded in manifests for the built-in world.
BUILTIN = "builtin"

_RESOLUTION = 128
_CHUNK = 32


def _seeds(seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> list[int]:
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.tolist()
    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)]
    out = [int(s) for s in np.asarray(seeds).reshape(-1)]
    if not out:
        raise InputError("no seeds given")
    return out


class World:
    """The built-in world: generator, face model, ground truth, renderer and estimator.

    Args:
        generator: a :class:`~stylerig.gan.Generator` with ``z_dim = NUM_FACTORS`` (38) and 128x128 output.
        face_model: the world's :class:`~stylerig.face.MorphableModel` (the procedural model).
        name: recorded in manifests and outputs.

    Attributes:
        generator: the generator (eval mode, no gradients), on the device it was given.
        face_model: the face model (same device as the generator).
        renderer: a :class:`~stylerig.render.FaceRenderer` of ``face_model`` at the world's resolution.
        resolution: 128 (pixels, square).
        ground_truth: a :class:`WorldTruth` for ``stylerig sample``.

    All outputs are float32 on the generator's device unless stated otherwise.
    """

    def __init__(self, generator: Generator, face_model: MorphableModel, name: str = BUILTIN) -> None:
        if int(generator.z_dim) != NUM_FACTORS:
            raise AssetError(
                f"a world generator needs z_dim = {NUM_FACTORS} (one z entry per world factor), "
                f"this one has {generator.z_dim}",
                hint="pass the generator written by `stylerig world build`",
            )
        self.name = name
        self.generator = generator.eval().requires_grad_(False)
        self.device = next(generator.parameters()).device
        self.face_model = face_model.to(self.device)
        self.resolution = int(generator.img_resolution)
        self.renderer = FaceRenderer(self.face_model, self.resolution, backend="auto")
        self.ground_truth = WorldTruth(self)

    def __repr__(self) -> str:
        return f"World(name={self.name!r}, resolution={self.resolution}, device={self.device})"

    # -- the truth of seeds -----------------------------------------------------------------------

    def z(self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> torch.Tensor:
        """The generator's z of ``seeds`` = the world factors: float32 [B, 38] (``z_from_seeds``)."""
        return sample_factors(_seeds(seeds)).to(self.device)

    def params(self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> torch.Tensor:
        """True face parameters [B, 257] (257 layout, rotation in radians) of the seeds' images."""
        return factors_to_world(self.z(seeds))[0]

    def scene(self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> dict[str, torch.Tensor]:
        """The seeds' scene parameters (background, hair, shirt: :data:`~stylerig.worlds.prior.SCENE_KEYS`)."""
        return factors_to_world(self.z(seeds))[1]

    @torch.no_grad()
    def landmarks(self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> torch.Tensor:
        """True 68 iBUG landmarks [B, 68, 2] in pixels of the 128x128 image (x right, y down, pixel
        centres at +0.5), of the seeds' images."""
        return self.renderer.landmarks(self.params(seeds))

    def images(self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int) -> torch.Tensor:
        """The generator's images [B, 3, 128, 128] in [-1, 1] of the seeds (psi 1, const noise)."""
        z = self.z(seeds)
        with torch.no_grad():
            return torch.cat(
                [self.generator(c, truncation_psi=1, noise_mode="const") for c in z.split(_CHUNK)]
            )

    # -- the world's own rendering ----------------------------------------------------------------

    def render(
        self, p: torch.Tensor, scene: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The world's rendering of face parameters p, as the generator was taught.

        Args:
            p: float [B, 257] on the world's device (257 layout, rotation in radians).
            scene: the scene (``world.scene(seeds)``); None = the neutral scene of the all-zero factor
                vector (mid-grey background, medium hair, mid shirt). The face pixels depend on it only where
                the shirt's soft edge overlaps the neck.

        Returns:
            ``(images [B, 3, 128, 128] in [-1, 1], face mask [B, 1, 128, 128] (0/1: head and neck not
            covered by the shirt))``. Differentiable with respect to p.
        """
        if p.ndim != 2 or p.shape[1] != 257:
            raise InputError(f"p must have shape [B, 257], got {list(p.shape)}")
        if scene is None:
            neutral = factors_to_world(torch.zeros(1, NUM_FACTORS, device=p.device, dtype=p.dtype))[1]
            scene = {k: v.expand(p.shape[0], *v.shape[1:]) for k, v in neutral.items()}
        image, mask, _ = render_portrait(self.renderer, p, scene)
        return image, mask

    def render_seeds(
        self, seeds: Sequence[int] | np.ndarray | torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The world's renders (images, face masks) of the seeds' true parameters and scenes."""
        z = self.z(seeds)
        outs = []
        with torch.no_grad():
            for c in z.split(_CHUNK):
                p, scene = factors_to_world(c)
                outs.append(render_portrait(self.renderer, p, scene)[:2])
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def estimate(self, images: torch.Tensor, method: str = "fast", **kw: Any) -> torch.Tensor:
        """Independent estimate of the face parameters p float32 [B, 257] (rotation in radians) shown by
        portraits [B, 3, 128, 128] in [-1, 1] -- neither DFR nor the generator's latents take part.

        Args:
            images: float [B, 3, 128, 128] in [-1, 1].
            method: ``"fast"`` (default): the CNNs trained on the world's renders (a general network and
                an eye specialist, :data:`stylerig.worlds.estimator.SHIPPED_ESTIMATORS`), a few ms per image
                (:func:`stylerig.worlds.estimator.fast_estimate_params`; keywords go there, e.g.
                ``refine_steps``); ``"fit"``: analysis-by-synthesis with the world's renderer and prior
                (:func:`stylerig.worlds.estimate.estimate_params`, ~1.6 s per image on one CPU thread;
                keywords go to :func:`~stylerig.worlds.estimate.estimate_factors`).
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.resolution, self.resolution):
            raise InputError(
                f"images must have shape [B, 3, {self.resolution}, {self.resolution}], got {list(images.shape)}"
            )
        if method == "fit":
            from stylerig.worlds.estimate import estimate_params

            return estimate_params(images.float(), **kw).to(self.device)
        if method == "fast":
            from stylerig.worlds.estimator import fast_estimate_params

            return fast_estimate_params(images.float(), **kw).to(self.device)
        raise InputError(f"method must be 'fast' or 'fit', got {method!r}")


class WorldTruth:
    """The :class:`~stylerig.data.GroundTruth` hook of a world (what ``stylerig sample`` calls).

    For each row it compares the W+ code with the seed's own unmixed, untruncated code
    ``mapping(z(seed))``; rows that match (max |difference| <= 1e-4) get the true params and landmarks,
    the others (style-mixed or truncated codes) get NaN rows: no factor vector describes them.
    """

    def __init__(self, world: World) -> None:
        self.name = world.name
        self._world = world

    @torch.no_grad()
    def __call__(self, seeds: Sequence[int], ws: Any) -> tuple[np.ndarray, np.ndarray]:
        """seeds [B], ws [B, num_ws, w_dim] -> (params float32 [B, 257], landmarks float32 [B, 68, 2])."""
        w = self._world
        ws = torch.as_tensor(ws, device=w.device, dtype=torch.float32)
        z = w.z(seeds)
        own = w.generator.mapping(z, None, truncation_psi=1)
        exact = (ws - own).abs().flatten(1).amax(1) <= 1e-4
        p = factors_to_world(z)[0]
        lms = w.renderer.landmarks(p)
        p = torch.where(exact[:, None], p, torch.nan)
        lms = torch.where(exact[:, None, None], lms, torch.nan)
        return p.cpu().numpy().astype(np.float32), lms.cpu().numpy().astype(np.float32)


_CACHE: dict[tuple[str, str], World] = {}


def _procedural_face_model() -> MorphableModel:
    """The procedural model, cached as safetensors beside the other converted face models (a build
    takes ~1.5 s; a cached load ~20 ms)."""
    from stylerig import __version__
    from stylerig.face.procedural import build_procedural_model
    from stylerig.face.readers import _default_cache_dir

    cache = _default_cache_dir() / "face-models" / f"procedural-{__version__}.safetensors"
    if cache.is_file():
        try:
            return MorphableModel.load(cache)
        except AssetError:
            pass
    model = build_procedural_model()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model.save(cache)
    except OSError:
        pass  # a read-only home: build each time
    return model


def _check_prior_version(path: Path) -> None:
    """Refuse a generator built on another prior than this package's (its truth would be wrong).

    ``stylerig world build`` records ``prior_version`` in the ``run.json`` beside the generator; builds
    older than that setting (no key) drew their targets from version 1.
    """
    import json

    from stylerig.worlds.prior import PRIOR_VERSION

    run = path.parent / "run.json"
    if not run.is_file():
        return  # a generator copied elsewhere: nothing to check against
    try:
        record = json.loads(run.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("command") not in (None, "stylerig.worlds.train"):
        return  # another command's folder (a DFR's, a rig's): its run.json says nothing of the prior
    args = record.get("arguments", {})
    if not isinstance(args, dict) or "batch" not in args:  # not a world build's run.json
        return
    version = int(args.get("prior_version", 1))
    if version != PRIOR_VERSION:
        raise AssetError(
            f"{path} was trained on the world's prior version {version}; this stylerig's world, truth and "
            f"estimator are version {PRIOR_VERSION}",
            hint="rebuild it with the current recipe (`stylerig world build`, see docs/world.md), "
            "or warm-start one from it with --init",
        )


def load_world(name: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> World:
    """Load a world (offline; the built-in one in well under 2 s).

    Args:
        name: None or ``"builtin"`` for the shipped world; or the path of a world generator written by
            ``stylerig world build`` (``generator.safetensors``), paired with the procedural face model.
        device: where the generator, face model and renderer live.

    Returns:
        a :class:`World` (cached per (name, device): loading twice returns the same object).

    Raises:
        AssetError: the shipped generator is missing (a broken install) or a file is not a world generator.
    """
    from stylerig.gan import load_generator

    key = (str(name or BUILTIN), str(torch.device(device)))
    if key in _CACHE:
        return _CACHE[key]
    if name is None or str(name) == BUILTIN:
        path, label = GENERATOR_FILE, BUILTIN
        if not path.is_file():
            raise AssetError(
                f"the built-in world's generator is missing ({path})",
                hint="reinstall stylerig, or rebuild it: `stylerig world build --out runs/world` "
                "(see docs/world-convergence.md) and pass its generator.safetensors",
            )
        G = load_generator(path, device=device)
    else:
        path, label = Path(name), str(Path(name).resolve())
        # What the file is comes first: a DFR or rig file is no generator, whatever folder it sits in.
        try:
            G = load_generator(path, device=device)
        except AssetError as e:
            raise AssetError(
                f"{e.message}; a world needs a generator",
                hint="pass the generator.safetensors written by `stylerig world build` (or leave out "
                "--generator for the built-in world)",
            ) from e
        _check_prior_version(path)
    world = World(G, _procedural_face_model(), name=label)
    G.ground_truth = world.ground_truth  # what `stylerig sample` looks for (params.npy, landmarks)
    world.generator_path = path  # type: ignore[attr-defined]
    _CACHE[key] = world
    return world
