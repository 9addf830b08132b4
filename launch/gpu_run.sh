#!/usr/bin/env bash
# Checks and benchmarks of the Pallas (Triton backend) kernels on one CUDA GPU.
#
#   bash launch/gpu_run.sh STAGE [STAGE ...]   (from the repository root)
#
# Stages: info, tests (compiled kernels against the reference; beside them, on CPU, the
# interpreter and lowering tests on this jax), smoke (one short benchmark length per op), bench (the full set),
# sequence_parallel (LASP-2 with the kernels), tune_scan (the scan's rows per iteration).
# Logs and results are packed into $OUT/out.tar.gz (default runs/gpu_out).
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-runs/gpu_out}
WORK=/tmp/gpu_work
mkdir -p "$OUT" "$WORK"
PY=${PY:-python3}
GPU="env JAX_PLATFORMS=cuda,cpu"

bench() {  # bench NAME ARGS...: one benchmark run into $WORK/NAME
  local name=$1; shift
  $GPU timeout ${BENCH_TIMEOUT:-280} $PY -m experiments.bench --out_dir="$WORK/$name" "$@" 2>&1 | grep -v "^W0000\|^I0000" \
    | tee "$WORK/$name.log" | grep -E "forward|failed|Error|Device" | cut -c1-220
}

for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    info)
      nvidia-smi | tee "$WORK/nvidia-smi.txt"
      $PY -c "import jax, jaxlib, flax, triton; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'triton', triton.__version__); print(jax.devices('gpu'))" 2>&1 | tee "$WORK/versions.txt"
      ;;
    tests)  # the interpreter and lowering tests run beside the GPU ones, on CPU
      JAX_PLATFORMS=cpu timeout 330 $PY -m pytest -n 8 tests/pallas_kernels -q -p no:cacheprovider \
        > "$WORK/cpu_kernel_tests.log" 2>&1 &
      cpu_tests=$!
      $GPU timeout 330 $PY -m pytest -m gpu tests/pallas_kernels -q -rfE --tb=short --timeout=250 --durations=15 -p no:cacheprovider 2>&1 \
        | tee "$WORK/gpu_tests.log" | tail -70
      wait $cpu_tests
      tail -15 "$WORK/cpu_kernel_tests.log"
      ;;
    smoke)
      BENCH_TIMEOUT=150 bench smoke --ops=linear_attention,softmax_attention,diagonal_scan --impls=xla,pallas --lengths=4096 \
        --batch=2 --heads=8 --head_dims=64,128 --dtypes=float32,bfloat16 --repeats=3
      BENCH_TIMEOUT=100 bench smoke_tensor --ops=tensor_attention --impls=xla,pallas --lengths=512 --batch=1 --heads=8 \
        --head_dims=64 --dtypes=float32,bfloat16 --repeats=3
      ;;
    jaxinfo)  # how this jax lowers Pallas Triton without a GPU
      site=$($PY -c "import jax, os; print(os.path.dirname(jax.__file__))")
      grep -n "gpu_info\|AbstractDevice\|abstract" "$site/_src/pallas/triton/pallas_call_registration.py" | head -20
      grep -rn "class AbstractDevice" "$site/_src" | head -3
      grep -rn "def get_gpu_info" -A25 "$site/_src" | head -40
      ;;
    fp32dot)  # the fp32 product algorithms of the Triton kernels, forward only
      for algorithm in ieee tf32x3 tf32; do
        JAXATTN_TRITON_FP32_DOT=$algorithm BENCH_TIMEOUT=120 bench fp32dot_$algorithm --ops=linear_attention,softmax_attention \
          --impls=pallas --lengths=4096 --batch=2 --heads=8 --head_dims=64 --dtypes=float32 --repeats=5 --nobackward
      done
      ;;
    recheck)  # the cases that failed before: fp32 heads of 128, and the lowering tests on this jax with a GPU
      $GPU timeout 200 $PY -m pytest -m gpu tests/pallas_kernels -q -rfE --tb=short -k "d128" -p no:cacheprovider 2>&1 \
        | tee "$WORK/recheck_tests.log" | tail -8
      $GPU timeout 200 $PY -m pytest tests/pallas_kernels -q -rfE --tb=short -k "lower and cuda" -p no:cacheprovider 2>&1 \
        | tee "$WORK/lowering_tests.log" | tail -8
      BENCH_TIMEOUT=150 bench linear_attention_fp32 --ops=linear_attention --impls=pallas \
        --lengths=1024,4096,16384,65536 --batch=8 --heads=16 --head_dims=128 --dtypes=float32 --repeats=10
      ;;
    sequence_parallel)  # LASP-2 with the compiled kernels as the local work, against the reference
      $GPU timeout 200 $PY -m pytest -m gpu tests/parallel/test_sequence_parallel_on_gpu.py -q -rfE --tb=short \
        -p no:cacheprovider 2>&1 | tee "$WORK/sequence_parallel_gpu_tests.log" | tail -8
      ;;
    tune_scan)
      $GPU timeout 150 $PY -m experiments.tune_diagonal_scan 2>&1 | grep -v "^W0000\|^I0000" | tee "$WORK/tune_scan.log"
      ;;
    bench_linear)
      bench linear_attention --ops=linear_attention --impls=xla,pallas --lengths=1024,4096,16384,65536 --batch=8 \
        --heads=16 --head_dims=128 --dtypes=bfloat16,float32 --repeats=10
      ;;
    bench_scan)
      BENCH_TIMEOUT=120 bench diagonal_scan --ops=diagonal_scan --impls=xla,pallas --lengths=4096,16384,65536 --batch=8 --heads=16 \
        --head_dims=64 --dtypes=bfloat16,float32 --repeats=10
      ;;
    bench_flash)
      bench softmax_attention --ops=softmax_attention --impls=xla,pallas,cudnn --lengths=1024,4096,16384,65536 \
        --batch=1 --heads=16 --head_dims=128 --dtypes=bfloat16,float32 --repeats=5 --memory_budget_gb=40
      ;;
    delta)  # delta rule kernels: GPU tests, then bf16 B=8 H=16 K=V=128 beside XLA and fla's chunk kernels
      # fla-core is pure Python (einops, torch, triton are in the image); carry its wheel in .whl/
      if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --target /tmp/fla_site .whl/fla_core-*.whl && export PYTHONPATH=.:/tmp/fla_site
      fi
      $GPU timeout 200 $PY -m pytest -m gpu tests/pallas_kernels -q -rfE --tb=short -k delta -p no:cacheprovider 2>&1 \
        | tee "$WORK/delta_gpu_tests.log" | tail -8
      for op in delta_rule gated_delta_rule delta_product gated_delta_product; do
        BENCH_TIMEOUT=150 bench "$op" --ops="$op" --impls=xla,pallas,fla --lengths=4096,16384,65536 --batch=8 --heads=16 \
          --head_dims=128 --dtypes=bfloat16 --repeats=5 --memory_budget_gb=40
      done
      ;;
    bench_tensor)
      bench tensor_attention --ops=tensor_attention --impls=xla,pallas --lengths=256,512,1024 --batch=1 --heads=8 \
        --head_dims=64 --dtypes=bfloat16,float32 --repeats=5
      ;;
    *)
      echo "unknown stage $stage"; exit 2 ;;
  esac
  tar -czf "$OUT/out.tar.gz" -C "$WORK" .  # after every stage: a run cut short still brings back what it did
done
