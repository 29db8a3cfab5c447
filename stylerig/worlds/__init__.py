"""The built-in synthetic world (issue 4): prior over factors, portrait scene, generator training.

* :mod:`stylerig.worlds.prior` -- factor vector z [B, K] -> (p [B, 257], scene), FFHQ-like prior;
* :mod:`stylerig.worlds.scene` -- :func:`render_portrait`: p + scene -> 128x128 portrait, mask, landmarks;
* :mod:`stylerig.worlds.train` -- the regression recipe that teaches a StyleGAN2 generator the world;
* :mod:`stylerig.worlds.estimate` -- the independent estimator image -> p (analysis-by-synthesis with the
  world's renderer and prior; neither DFR nor the generator);
* :mod:`stylerig.worlds.estimator` -- the fast estimator: a small CNN trained on the world's renders
  (:mod:`stylerig.worlds.estimator_train`), the default of ``World.estimate``;
* :mod:`stylerig.worlds.world` -- :func:`load_world`: the shipped world as one object (generator, face
  model, ground truth of seeds, the world's renderer, the estimator).
"""

from __future__ import annotations

from stylerig.worlds.estimate import EstimateResult, estimate_factors, estimate_params
from stylerig.worlds.estimator import fast_estimate_factors, fast_estimate_params, load_estimator
from stylerig.worlds.prior import FACTOR_NAMES, NUM_FACTORS, factors_to_world, sample_factors
from stylerig.worlds.scene import render_portrait
from stylerig.worlds.world import World, WorldTruth, load_world

__all__ = [
    "FACTOR_NAMES",
    "NUM_FACTORS",
    "EstimateResult",
    "World",
    "WorldTruth",
    "estimate_factors",
    "estimate_params",
    "factors_to_world",
    "fast_estimate_factors",
    "fast_estimate_params",
    "load_estimator",
    "load_world",
    "render_portrait",
    "sample_factors",
]
