#!/usr/bin/env bash
# Rebuild the built-in world's assets (generator + estimator) from their seeds, in one command.
#
#     bash examples/build_world.sh [OUT_DIR] [THREADS]        # default runs/world-build, 2 threads
#
# Every stage is resumable: run the script again after an interruption and it continues where it stopped
# (a finished stage only re-saves its outputs). Times on a quiet 2-core CPU machine (docs/world.md):
#   1. critic estimator, seed 0 (prior-2 renders only)                  ~11 min
#   2. generator, 8,000 steps of pixel regression onto prior-2 renders  ~60-80 min
#   3. generator, 2,000 more steps with the critic's imitative loss     ~17-20 min
#      on pose and expression
#   4. generator, 2,000 more steps with the critic on the light too     ~24 min
#   5. generator warm-started on prior 3 (ambient light fixed), 2,000 steps  ~24 min
#   6. the world's own estimator, seed 2 (prior-2 renders only; not the critic) ~11 min
# Prior 3 is prior 2 with the ambient light fixed: its renders are a subset of prior 2's, so the critic
# and the estimator trained on prior 2 read them (docs/world.md, "prior version 3").
# Then copy OUT_DIR/generator-v3/generator.safetensors and OUT_DIR/estimator/estimator.safetensors over
# stylerig/worlds/assets/world-generator.safetensors and world-estimator.safetensors.
set -euo pipefail
out="${1:-runs/world-build}"
threads="${2:-2}"
estimator=(python -m stylerig.worlds.estimator_train --steps 6000 --schedule-steps 6000 --prior-version 2
    --threads "$threads")
build=(stylerig world build --threads "$threads")
critic=(--critic "$out/critic/estimator.safetensors" --critic-weight 1)
light=pose,expression,light_azimuth,light_elevation,light_warmth

"${estimator[@]}" --out "$out/critic" --seed 0
"${build[@]}" --out "$out/generator" --prior-version 2 --steps 8000 --decay-start 7000
"${build[@]}" --out "$out/generator" --prior-version 2 --steps 10000 --decay-start 7000 "${critic[@]}" \
    --critic-groups pose,expression
"${build[@]}" --out "$out/generator" --prior-version 2 --steps 12000 --decay-start 7000 "${critic[@]}" \
    --critic-groups "$light"
"${build[@]}" --out "$out/generator-v3" --prior-version 3 --init "$out/generator/generator.safetensors" \
    --lr 5e-4 --steps 2000 "${critic[@]}" --critic-groups "$light"
"${estimator[@]}" --out "$out/estimator" --seed 2
echo "generator: $out/generator-v3/generator.safetensors"
echo "estimator: $out/estimator/estimator.safetensors"
