#!/usr/bin/env bash
# Rebuild the built-in world's assets (generator + estimator) from their seeds, in one command.
#
#     bash examples/build_world.sh [OUT_DIR] [THREADS]        # default runs/world-build, 2 threads
#
# Every stage is resumable: run the script again after an interruption and it continues where it stopped
# (a finished stage only re-saves its outputs). Times on a quiet 2-core CPU machine (docs/world.md):
#   1. critic estimator, seed 0 (renders only)                        ~11 min
#   2. generator, 8,000 steps of pixel regression onto the renders     ~60-80 min
#   3. generator, 2,000 more steps with the critic's imitative loss   ~17-20 min
#      on pose and expression
#   4. generator, 2,000 more steps with the critic on the light too   ~24 min
#   5. the world's own estimator, seed 2 (renders only; not the critic) ~11 min
# Then copy OUT_DIR/generator/generator.safetensors and OUT_DIR/estimator/estimator.safetensors over
# stylerig/worlds/assets/world-generator.safetensors and world-estimator.safetensors.
set -euo pipefail
out="${1:-runs/world-build}"
threads="${2:-2}"
estimator=(python -m stylerig.worlds.estimator_train --steps 6000 --schedule-steps 6000 --threads "$threads")

"${estimator[@]}" --out "$out/critic" --seed 0
stylerig world build --out "$out/generator" --steps 8000 --decay-start 7000 --threads "$threads"
stylerig world build --out "$out/generator" --steps 10000 --decay-start 7000 --threads "$threads" \
    --critic "$out/critic/estimator.safetensors" --critic-groups pose,expression --critic-weight 1
stylerig world build --out "$out/generator" --steps 12000 --decay-start 7000 --threads "$threads" \
    --critic "$out/critic/estimator.safetensors" --critic-weight 1 \
    --critic-groups pose,expression,light_azimuth,light_elevation,light_warmth
"${estimator[@]}" --out "$out/estimator" --seed 2
echo "generator: $out/generator/generator.safetensors"
echo "estimator: $out/estimator/estimator.safetensors"
