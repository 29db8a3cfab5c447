#!/usr/bin/env bash
# Rebuild the built-in world's assets (generator + estimator) from their seeds, in one command.
#
#     bash examples/build_world.sh [OUT_DIR] [THREADS] [DEVICE]   # default runs/world-build, 2 threads, cpu
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
# With DEVICE=cuda every stage trains on the GPU. The four generator stages took about 1,600 (plain) and
# 1,250 (with the critic) steps a minute on an H200, about 10 minutes in all (docs/gpu.md). The estimator
# stages have not been timed on a GPU. A stage may change device at a resume. A GPU build is reproducible
# from its seed on that kind of GPU; it is not bit-identical to the CPU build.
# Prior 3 is prior 2 with the ambient light fixed: its renders are a subset of prior 2's, so the critic
# and the estimator trained on prior 2 read them (docs/world.md, "prior version 3").
# Then copy OUT_DIR/generator-v3/generator.safetensors and OUT_DIR/estimator/estimator.safetensors over
# stylerig/worlds/assets/world-generator.safetensors and world-estimator.safetensors.
set -euo pipefail
out="${1:-runs/world-build}"
threads="${2:-2}"
device="${3:-cpu}"
estimator=(python -m stylerig.worlds.estimator_train --steps 6000 --schedule-steps 6000 --prior-version 2
    --threads "$threads" --device "$device")
build=(stylerig world build --threads "$threads" --device "$device")
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
