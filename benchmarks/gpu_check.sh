#!/usr/bin/env bash
# GPU check: the unit tests and the quick step and fit benchmarks on a CUDA
# GPU, for JAX and torch. For the lent GPU image: CUDA torch and JAX on
# Python 3.12, no Keras, no TensorFlow, no network.
#
#   bash benchmarks/fetch_wheels.sh            # here first: benchmarks/wheels
#   bash benchmarks/gpu_check.sh [jax] [torch] # on the GPU machine
#
# Through the device tool: carry ["benchmarks/wheels"]; both backends fit one
# call of at most ~10 minutes: the unit tests of every backend at once
# (TEST_TIMEOUT, default 200 s), then each benchmark alone (BENCH_TIMEOUT 90 s
# for a step run, FIT_TIMEOUT 100 s for a fit run, with the compact-state
# sides). Writes logs and JSON under $OUT (default
# benchmarks/results/scratch/gpu, ignored by git: the committed record of
# the last GPU run, benchmarks/results/gpu, changes only by copying there).
# Only the carried wheels whose distributions the image lacks are installed
# (--no-index --no-deps, into a --target folder): the image's torch, JAX and
# numpy stay as they are.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/benchmarks/results/scratch/gpu}"
wheels="${WHEELS:-$root/benchmarks/wheels}"
site="${GPU_SITE:-/tmp/keras-lazyadam-gpu-site}"
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(jax torch)
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1

nvidia-smi || echo "!! no nvidia-smi"
# The image's own python3 (a venv of its own holds CUDA torch and JAX): the
# carried wheels the image lacks go to a --target folder on PYTHONPATH.
py="${PYTHON:-python3}"
missing=$("$py" - "$wheels"/*.whl <<'PY'
import os, sys
from importlib import metadata
for whl in sys.argv[1:]:
    dist = os.path.basename(whl).split("-")[0]
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        print(whl)
PY
)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" $missing \
    || { echo "!! wheel install failed"; exit 1; }
fi
export PYTHONPATH="$root:$site"
KERAS_BACKEND=jax "$py" - <<'PY'
import jax, keras, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda)
print("jax", jax.__version__, jax.devices())
print("keras", keras.__version__)
PY

export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}" TF_CPP_MIN_LOG_LEVEL=3
# JAX and torch processes share the GPU: no process takes 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
status=0
show() {  # name, exit code: the log's tail and the verdict
  grep -v -i "warning" "$out/$1.log" | tail -"${3:-25}"
  echo "=== $1: exit $2"
  [ "$2" -eq 0 ] || status=1
}
# 1. The unit tests, every backend at once (each its own pytest process, with
#    pytest-xdist workers where the image has it): not timed, so they share.
workers=""
"$py" -c "import xdist" 2>/dev/null && workers="-n ${TEST_WORKERS:-4}"
pids=()
for b in "${backends[@]}"; do
  KERAS_BACKEND="$b" timeout "${TEST_TIMEOUT:-200}" "$py" -m pytest tests -q -rfE \
    -p no:cacheprovider $workers > "$out/pytest_$b.log" 2>&1 &
  pids+=($!)
done
for i in "${!backends[@]}"; do
  wait "${pids[$i]}"
  show "pytest_${backends[$i]}" $? 30
done
# 2. The benchmarks, one process at a time (timed alone on the GPU).
bench() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  show "$name" $? 40
}
for b in "${backends[@]}"; do
  export KERAS_BACKEND="$b"
  bench "step_$b" "${BENCH_TIMEOUT:-90}" "$py" benchmarks/bench_step.py --backend "$b" \
    --quick --ids 4096 262144 --out "$out/step_$b.json"
done
for b in "${backends[@]}"; do
  export KERAS_BACKEND="$b"
  bench "fit_$b" "${FIT_TIMEOUT:-100}" "$py" benchmarks/bench_fit.py --backend "$b" \
    --quick --out "$out/fit_$b.json"
done
echo "gpu_check: $([ $status -eq 0 ] && echo ok || echo FAILED) (${backends[*]})"
exit $status
