#!/usr/bin/env bash
# One GPU session's checks, in order of value, inside a time budget (docs/gpu.md has the results).
#
#   bash benchmarks/gpu_session.sh [BUDGET_SECONDS]      (default 520; results under $OUT or /tmp/gpu-out)
#   STAGES="tests bench demo longrig" bash benchmarks/gpu_session.sh 480     (a subset, in this order)
#
# 1. nvdiffrast is built from third_party/nvdiffrast (fetched by hand; NVIDIA Source Code License,
#    non-commercial: never vendored) in the background, for this machine's GPU only.
# 2. The test suite with CUDA present (`--device $DEV` for the device-parametrised tests).
# 3. The CUDA-marked tests again once nvdiffrast is built (nvdiffrast parity, the world build moving
#    between devices, half precision).
# 4. benchmarks/bench_gpu.py: renderer parity (torch CPU / torch CUDA / nvdiffrast), renderer and
#    generator throughput at float32 / float16 / bfloat16.
# 5. The commands on the GPU with their own timers: sample, fit-dfr (the full 2,000 steps with each
#    rasterizer: an end-to-end comparison of the two), train-rignet,
#    world build (plain and with a critic), the world estimator recipe.
# 6. Whatever time is left: `stylerig demo --device $DEV`; then (stage longrig) the same demo with a
#    rig trained LONG_RIG_STEPS steps (default 12000, 5x the demo's) on the demo's set and DFR.
# 7. Stage demo2: two demos at once, `--renderer nvdiffrast` and `--renderer torch` (DEMO_ARGS are
#    added to both, e.g. --quick for a rehearsal); stage bench_late: the benchmark after them.
# 8. Stage variants: DFR variants -> the demo's rig -> evaluate, side by side, on one sample set
#    (benchmarks/variant_pipeline.py; VARIANTS, VARIANT_THREADS). Only summaries come back.
# Each stage gets at most what is left of the budget; a stage that fails does not stop the next.
set -u
BUDGET=${1:-520}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOGS=/tmp/gpu-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 STYLERIG_CACHE_DIR=/tmp/stylerig-cache
DEV=${DEV:-cuda} # DEV=cpu only rehearses the script
PY=${PY:-python3}
T=/tmp/gpu-work
rm -rf "$T" && mkdir -p "$T"

STAGES=${STAGES:-suite tests bench commands demo}
want() { [[ " $STAGES " == *" $1 "* ]]; }
left() { echo $((BUDGET - SECONDS)); }
stage() { # stage NAME MAX_SECONDS CMD...: run with min(MAX, left - 5) seconds, log and time it
  local name=$1 max=$2
  shift 2
  local lim
  lim=$(($(left) - 5))
  ((lim > max)) && lim=$max
  if ((lim < 10)); then
    echo "SKIP $name (budget spent)" | tee -a "$LOGS/summary.txt"
    return
  fi
  local t0=$SECONDS
  timeout -s INT -k 10 "$lim" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc ${lim}s-limit took=$((SECONDS - t0))s" | tee -a "$LOGS/summary.txt"
  tail -n 4 "$LOGS/$name.log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
  nproc
} >"$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"

# 1. nvdiffrast in the background.
(
  t0=$SECONDS
  cd third_party/nvdiffrast &&
    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=10 timeout 240 $PY -m pip install -q --no-build-isolation --no-deps --no-index .
  echo "nvdiffrast build rc=$? took=$((SECONDS - t0))s"
) >"$LOGS/nvdiffrast_build.log" 2>&1 &
BUILD=$!

# 2. The suite.
want suite && stage pytest_suite 150 $PY -m pytest -q -p no:cacheprovider --device $DEV tests
wait $BUILD
tail -n 3 "$LOGS/nvdiffrast_build.log" | tee -a "$LOGS/summary.txt"

# 3. CUDA tests with nvdiffrast.
want tests && stage pytest_cuda 60 $PY -m pytest -q -rs -p no:cacheprovider -m cuda tests

# 4. Parity and throughput.
want bench && stage bench_gpu 150 $PY benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" --device $DEV

# 5. The commands.
CLI="$PY -m stylerig_cli"
want commands || STAGES_SKIP_COMMANDS=1
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage sample_2000 60 $CLI sample --out "$T/set" --n 2000 --device $DEV
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage fit_dfr_torch 90 $CLI fit-dfr --data "$T/set" --out "$T/dfr-torch" --steps 2000 --device $DEV --renderer torch
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage fit_dfr_nvdiffrast 90 $CLI fit-dfr --data "$T/set" --out "$T/dfr-nv" --steps 2000 --device $DEV --renderer nvdiffrast
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage train_rignet_all 60 $CLI train-rignet --data "$T/set" --dfr "$T/dfr-torch" --mode all --out "$T/rig" --steps 300 --device $DEV
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage world_build 60 $CLI world build --out "$T/world" --steps 200 --device $DEV --eval-every 100 --checkpoint-every 0
EST=stylerig/worlds/assets/world-estimator.safetensors
[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage world_build_critic 60 $CLI world build --out "$T/world-critic" --steps 200 --device $DEV \
  --eval-every 100 --checkpoint-every 0 --critic "$EST" --critic-groups pose,expression

[ -z "${STAGES_SKIP_COMMANDS:-}" ] && stage estimator_train 60 $PY -m stylerig.worlds.estimator_train \
  --out "$T/estimator" --steps 300 --eval-every 100 --checkpoint-every 0 --threads 4 --device $DEV

# 6. The demo with what is left.
want demo && stage demo 600 $CLI demo --out "$T/demo" --device $DEV
if want longrig && [ -f "$T/demo/dfr/dfr.safetensors" ]; then
  mkdir -p "$T/demo-long" && cp -r "$T/demo/samples" "$T/demo/dfr" "$T/demo-long/"
  stage demo_longrig 600 $CLI demo --out "$T/demo-long" --device $DEV --rig-steps "${LONG_RIG_STEPS:-12000}"
fi

# 7. (stage demo2) Two demos side by side, one per rasterizer: the end-to-end comparison of nvdiffrast
#    and the torch rasterizer on the mission's metrics (half the CPU threads each; times are shared).
if want demo2; then
  stage demo_pair 600 bash -c "
    $CLI demo --out $T/demo-nv --device $DEV --renderer nvdiffrast --threads 8 ${DEMO_ARGS:-} > $LOGS/demo_nv.log 2>&1 & p1=\$!
    $CLI demo --out $T/demo-torch --device $DEV --renderer torch --threads 8 ${DEMO_ARGS:-} > $LOGS/demo_torch.log 2>&1 & p2=\$!
    wait \$p1; a=\$?; wait \$p2; b=\$?; echo nvdiffrast rc=\$a torch rc=\$b
    tail -n 25 $LOGS/demo_nv.log $LOGS/demo_torch.log"
fi
# 8. (stage variants) DFR variants through the demo's rig, side by side on one sample set (session 13):
#    VARIANTS="b0:seed=0 p0:photo_rows=0,seed=0" (name:DFRConfig overrides, comma-separated); each
#    process gets VARIANT_THREADS threads; only each variant's summary.json comes back in $OUT.
if want variants; then
  stage variants_samples 120 $CLI sample --out "$T/vsamples" --n 3000 --device $DEV
  stage variants 600 bash -c '
    for v in '"${VARIANTS:-b0:seed=0 b1:seed=1 p0:photo_rows=0,seed=0 p1:photo_rows=0,seed=1}"'; do
      name=${v%%:*}; ov=${v#*:}
      ( '"$PY"' benchmarks/variant_pipeline.py '"$T"'/vsamples '"$T"'/v-$name --device '"$DEV"' \
          --threads '"${VARIANT_THREADS:-3}"' ${ov//,/ } > '"$LOGS"'/variant_$name.log 2>&1
        echo "$name rc=$?"; mkdir -p '"$OUT"'/v-$name; cp '"$T"'/v-$name/summary.json '"$OUT"'/v-$name/ ) &
    done
    wait'
fi
want bench_late && stage bench_gpu 150 $PY benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" --device $DEV

# Results: logs and run records in one archive.
for d in "$T"/*/; do
  for f in log.jsonl metrics.json summary.md run.json train.log; do
    [ -f "$d$f" ] && mkdir -p "$LOGS/runs/$(basename "$d")" && cp "$d$f" "$LOGS/runs/$(basename "$d")/"
  done
done
for d in "$T"/demo*; do
  [ -d "$d" ] && find "$d" -maxdepth 2 \( -name "*.json" -o -name "*.md" \) -size -2M -exec cp --parents {} "$LOGS/" \;
done
tar -czf "$OUT/gpu-logs.tgz" -C /tmp gpu-logs
cp "$LOGS/summary.txt" "$OUT/summary.txt"
echo "== summary"
cat "$LOGS/summary.txt"
