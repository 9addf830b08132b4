#!/usr/bin/env bash
# Our GPU kernels beside every peer (cuDNN, JAX's Pallas Mosaic GPU and Triton attention, Tokamax, fla's
# chunk kernels) in one call: python -m experiments.bench --preset=peers, one group per process.
#
#   bash launch/gpu_side_by_side.sh            (from the repository root, on a CUDA GPU machine)
#
# The groups run cheapest first (scan, linear attention small and large, flash, fp32), each under its own
# timeout and into its own folder, and bench.json / .md / .png are rewritten after every group, so a run
# cut short keeps what it measured. Results go to results/bench_gpu_side_by_side/<device name>/.
# Environment: PY (default python3), GROUP_TIMEOUT (seconds per group, default 240), REPEATS (default 10),
# BENCH_GROUPS (default: all of the preset's, in its order).
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_')
DEVICE=${DEVICE:-no_gpu}
OUT=results/bench_gpu_side_by_side/$DEVICE
BENCH_GROUPS=${BENCH_GROUPS:-scan linear_small linear_large flash fp32_flash fp32_tensor}
mkdir -p "$OUT"

# fla-core is pure Python (torch and triton come with the image); carry its wheel in .whl/ where pip is offline
if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/fla_site .whl/fla_core-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/fla_site
fi
{ nvidia-smi; $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/device.txt" 2>&1

for group in $BENCH_GROUPS; do
  echo "=== $group $(date +%T)"
  JAX_PLATFORMS=cuda,cpu timeout "${GROUP_TIMEOUT:-240}" $PY -m experiments.bench --preset=peers \
    --preset_groups="$group" --repeats="${REPEATS:-10}" --memory_budget_gb=40 --out_dir="$OUT/$group" 2>&1 \
    | grep -v "^W0000\|^I0000" | tee "$OUT/$group.log" | grep -E "forward|failed|Error|Device" | cut -c1-220
  echo "=== $group exit ${PIPESTATUS[0]}"
done
cat "$OUT"/*/bench.md > "$OUT/side_by_side.md" 2>/dev/null
echo "results in $OUT"
