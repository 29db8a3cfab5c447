"""``stylerig evaluate`` on a real generator: edits read by an image-based fit with detected landmarks.

No world estimator and no truth exist for a StyleGAN2 pickle, so :class:`ImageFitEstimator` reads each
image of the generator with a landmark detector (:mod:`stylerig.landmarks`) and the image-based fit of
:mod:`stylerig.image_fit`, and :func:`measure_on_generator` turns the readings of held-out edits into the
same metrics as the built-in world's (:func:`stylerig.training.rignet.edit_metrics`). When dlib's
face-recognition model is installed, it also compares identities. The entry point is
:func:`stylerig.evaluate.evaluate` (``--generator FILE``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stylerig.data import SampleSet
from stylerig.dfr import DFR
from stylerig.errors import AssetError, InputError
from stylerig.rignet import RigNet

if TYPE_CHECKING:
    from stylerig.evaluate import EditPairs

__all__ = ["IDENTITY_MISSING", "ImageFitEstimator", "ImageReading", "measure_on_generator"]

#: ``estimator_info.identity`` when dlib's face-recognition model is not installed.
IDENTITY_MISSING = "not available: pip install 'stylerig[dlib]'"


@dataclass(frozen=True)
class ImageReading:
    """What the image-fit estimator read from generator images (:class:`ImageFitEstimator`).

    Attributes:
        p: float32 [N, 257] fitted parameters (NaN rows where no face was detected).
        ok: bool [N] a face was detected (and fitted).
        landmark_rmse_px: float32 [N] the fit's landmark rms against the detection, pixels (NaN: no face).
        photo_psnr: float32 [N] the fit's masked PSNR, dB (NaN: no face).
        identity: float32 [N, 128] unit identity descriptors, or None without an embedder (NaN rows: no face).
    """

    p: torch.Tensor
    ok: torch.Tensor
    landmark_rmse_px: torch.Tensor
    photo_psnr: torch.Tensor
    identity: torch.Tensor | None

    def take(self, rows: np.ndarray | torch.Tensor) -> ImageReading:
        """The readings of ``rows`` (int64 [M] indices into this reading)."""
        r = torch.as_tensor(rows, dtype=torch.long)
        return ImageReading(
            p=self.p[r],
            ok=self.ok[r],
            landmark_rmse_px=self.landmark_rmse_px[r],
            photo_psnr=self.photo_psnr[r],
            identity=None if self.identity is None else self.identity[r],
        )


class ImageFitEstimator:
    """W+ codes -> the generator's images -> detected landmarks -> :func:`stylerig.image_fit.fit_params`.

    Each chunk of codes is drawn as ``stylerig sample`` draws a set (``G.synthesis`` with the set's
    ``noise_mode``, clamped to [-1, 1], resized to the set's resolution with
    :func:`stylerig.sampling.resize_images`, rounded to uint8), so the detector, the fit and the identity
    embedder see the same images as the DFR and the rig did in training. The fit runs at that resolution
    with a :class:`~stylerig.render.FaceRenderer` of ``face_model``. Neither the DFR nor the codes take
    part in the reading (only the images do).

    Args:
        generator: the :class:`~stylerig.gan.Generator`. detector: a
            :class:`~stylerig.data.LandmarkDetector`. face_model: the model the DFR speaks.
        resolution: the set's image size (pixels). noise_mode: the set's (``const`` by default).
        embedder: :data:`~stylerig.image_fit.IdentityEmbedder` or None. chunk: images per generator call.
        fit_kw: keywords for :func:`~stylerig.image_fit.fit_params` (``steps``, ``land_steps``, ...).
        log: progress messages.
    """

    def __init__(
        self,
        generator: Any,
        detector: Any,
        face_model: Any,
        resolution: int,
        *,
        noise_mode: str = "const",
        embedder: Any = None,
        chunk: int = 16,
        fit_kw: Mapping[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from stylerig.render import FaceRenderer

        self.generator, self.detector, self.face_model = generator, detector, face_model
        self.resolution, self.noise_mode, self.embedder = int(resolution), noise_mode, embedder
        self.chunk, self.fit_kw, self.log = max(1, int(chunk)), dict(fit_kw or {}), log
        self.renderer = FaceRenderer(face_model, self.resolution, backend="auto")
        self.n_images = 0

    @torch.no_grad()
    def images(self, ws: torch.Tensor) -> np.ndarray:
        """uint8 [N, R, R, 3] the generator's images of codes [N, num_ws, w_dim] at the set's resolution."""
        from stylerig.sampling import resize_images
        from stylerig.viz import to_uint8

        img = self.generator.synthesis(ws.float(), noise_mode=self.noise_mode)
        return to_uint8(resize_images(img.float().clamp(-1, 1), self.resolution))

    def __call__(self, ws: torch.Tensor) -> ImageReading:
        """Read codes [N, num_ws, w_dim] -> :class:`ImageReading` (N rows)."""
        from stylerig.image_fit import fit_params
        from stylerig.landmarks import check_detections

        parts: list[ImageReading] = []
        for i in range(0, ws.shape[0], self.chunk):
            u8 = self.images(ws[i : i + self.chunk])
            lms, found = check_detections(*self.detector(u8), len(u8), self.detector.name)
            x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            fit = fit_params(x, torch.from_numpy(lms), self.face_model, self.renderer, **self.fit_kw)
            emb = None
            if self.embedder is not None:
                emb = torch.from_numpy(np.asarray(self.embedder(u8, lms), dtype=np.float32))
            parts.append(
                ImageReading(
                    p=fit.p.float().cpu(),
                    ok=fit.ok.cpu() & torch.from_numpy(np.asarray(found, dtype=bool)),
                    landmark_rmse_px=fit.landmark_rmse_px.float().cpu(),
                    photo_psnr=fit.photo_psnr.float().cpu(),
                    identity=emb,
                )
            )
            self.n_images += len(u8)
            if self.log is not None:
                self.log(f"read {self.n_images} images (landmarks + fit)")
        return ImageReading(
            p=torch.cat([r.p for r in parts]),
            ok=torch.cat([r.ok for r in parts]),
            landmark_rmse_px=torch.cat([r.landmark_rmse_px for r in parts]),
            photo_psnr=torch.cat([r.photo_psnr for r in parts]),
            identity=None if self.embedder is None else torch.cat([r.identity for r in parts]),  # type: ignore[misc]
        )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of float [N, D] descriptors -> [N]."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).float()


def _median(x: torch.Tensor) -> float | None:
    x = x[torch.isfinite(x)]
    return float(x.median()) if x.numel() else None


@torch.no_grad()
def measure_on_generator(
    rig: RigNet,
    dfr: DFR,
    data: SampleSet,
    estimator: ImageFitEstimator,
    *,
    n_pairs: int = 500,
    val_fraction: float = 0.1,
    seed: int = 0,
    sources: tuple[np.ndarray, ImageReading] | None = None,
) -> tuple[dict[str, float], dict[str, EditPairs], tuple[np.ndarray, ImageReading]]:
    """:func:`~stylerig.training.rignet.evaluate_on_world`'s edit metrics on any generator, read by the image fit.

    The same held-out pairs (w, v) (:func:`~stylerig.training.rignet.heldout_pairs` of the same split);
    with no truth, the partner's parameters are *read* too: before = fit(G(w)), p_v = fit(G(v)),
    target = before with the edited group(s) from p_v (each controlled group alone and, for ``all``, the
    three together: :func:`~stylerig.training.rignet._targets`), the rig edits w towards p_v's group(s)
    (its request is F(w) with those groups from p_v, :func:`~stylerig.training.rignet.rig_request`; the
    steering rig gets ``p_current = F(w)``), after = fit(G(ŵ)); then
    :func:`~stylerig.training.rignet.edit_metrics` with ``std`` / ``active`` of the fits of the
    distinct unedited held-out images (w and v rows). Pairs whose w or v image has no detected face are
    left out before editing; edits whose image has none are counted (``<group>_no_face``) and left out.

    Args:
        rig, dfr: the rig and its F. data: the sample set (its codes; no params needed).
        estimator: the :class:`ImageFitEstimator`. n_pairs, val_fraction, seed: as for evaluate_on_world.
        sources: (rows, reading) of an earlier call on the same pairs (several rigs: read once).

    Returns:
        (flat metrics: edit_metrics' keys per edited group, ``joint_`` for all three together, plus
        ``<group>_identity_similarity`` (mean cosine of G(w) and G(ŵ) descriptors; only with an
        embedder), ``<group>_no_face``, ``n_pairs_valid``, ``n_images``; the single-group
        :class:`EditPairs` of the valid edits; the ``sources`` to pass to the next call).
    """
    from stylerig.evaluate import EditPairs
    from stylerig.training.rignet import _std_and_active, _targets, edit_metrics, heldout_pairs, rig_request

    _, val_rows = data.split(val_fraction, seed=seed)
    w_rows, v_rows = heldout_pairs(val_rows, n_pairs, seed)
    if sources is None:
        rows = np.unique(np.concatenate([w_rows, v_rows]))
        sources = (rows, estimator(torch.from_numpy(np.array(data.ws[rows], dtype=np.float32))))
    rows, reading = sources
    src_ok = reading.p[reading.ok]
    if src_ok.shape[0] < 2:
        raise InputError(
            f"{estimator.detector.name} found a face in {src_ok.shape[0]} of {len(rows)} held-out images; "
            "the image fit needs at least 2",
            hint="check the generator's images (stylerig mix / sample) or try another --landmarks detector",
        )
    std, active = _std_and_active(src_ok)
    r_w = reading.take(np.searchsorted(rows, w_rows))
    r_v = reading.take(np.searchsorted(rows, v_rows))
    valid = (r_w.ok & r_v.ok).numpy()
    out: dict[str, float] = {"n_pairs_valid": float(valid.sum())}
    pairs: dict[str, EditPairs] = {}
    if not valid.any():
        return out, pairs, sources
    r_w, r_v = r_w.take(np.nonzero(valid)[0]), r_v.take(np.nonzero(valid)[0])
    rig, dfr = rig.cpu().eval(), dfr.cpu().eval()
    ws = torch.from_numpy(np.array(data.ws[w_rows[valid]], dtype=np.float32))
    p_cur = dfr(ws)
    for groups, target in _targets(rig, r_w.p, r_v.p):
        after = estimator(rig(ws, rig_request(p_cur, groups, r_v.p), p_current=p_cur))
        key = groups[0] if len(groups) == 1 else "joint"
        prefix = "" if len(groups) == 1 else "joint_"
        ok = after.ok
        out[f"{key}_no_face"] = float((~ok).sum())
        out[f"{key}_n"] = float(ok.sum())
        if not bool(ok.any()):
            continue
        m = edit_metrics(r_w.p[ok], target[ok], after.p[ok], groups, std, active)
        out.update({prefix + k: v for k, v in m.items()})
        if r_w.identity is not None and after.identity is not None:
            out[f"{key}_identity_similarity"] = float(_cosine(r_w.identity[ok], after.identity[ok]).mean())
        if len(groups) == 1:
            pairs[groups[0]] = EditPairs(before=r_w.p[ok], target=target[ok], after=after.p[ok])
    return out, pairs, sources


def _face_model_for(dfr: DFR, face_model: Any) -> Any:
    """The face model to fit: the given one, else the one recorded in the DFR (procedural by default).

    The fitted parameters are the rig's edit targets, so they must be in the model the DFR speaks.
    """
    from stylerig.face import load_face_model
    from stylerig.face.model import MorphableModel

    if isinstance(face_model, MorphableModel):
        return face_model
    if face_model is not None:
        return load_face_model(face_model)
    rec = (getattr(dfr, "info", None) or {}).get("face_model") or {}
    source = rec.get("source") if isinstance(rec, Mapping) else None
    if not source or str(source).lower() in ("built-in", "builtin", "procedural"):
        return load_face_model(None)
    try:
        return load_face_model(source)
    except (AssetError, InputError) as e:
        raise AssetError(
            f"the DFR was fitted with the face model {source}, which cannot be loaded here ({e.message})",
            hint="pass --face-model (the model the DFR was fitted with)",
        ) from e


def _load_detector(detector: Any, generator: Any) -> Any:
    """A landmark detector by name (:func:`stylerig.landmarks.load_detector`) or as given; one
    :class:`~stylerig.errors.InputError` with the install hint when none can run here."""
    from stylerig.errors import BackendUnavailableError

    if not isinstance(detector, str):
        if not callable(detector) or not getattr(detector, "name", None):
            raise InputError(
                f"detector must be a name or a LandmarkDetector (a callable with a name), got {detector!r}"
            )
        return detector
    from stylerig import landmarks

    try:
        return landmarks.load_detector(detector)
    except (BackendUnavailableError, AssetError) as e:
        raise InputError(
            f"measuring edits on {generator} reads its images with a landmark detector, and none can run "
            f"here ({e.message})",
            hint=f"{e.hint or 'install one'}; `stylerig doctor` shows what is found",
        ) from e


def _resolve_embedder(embedder: Any) -> tuple[Any, str]:
    """(the identity embedder or None, what ``estimator_info.identity`` says)."""
    from stylerig.image_fit import identity_embedder

    if embedder == "auto":
        e = identity_embedder()
        return e, (e.name if e is not None else IDENTITY_MISSING)  # type: ignore[attr-defined]
    if embedder is None:
        return None, "off"
    if not callable(embedder):
        raise InputError(f"embedder must be 'auto', None or a callable, got {embedder!r}")
    return embedder, str(getattr(embedder, "name", type(embedder).__name__))
