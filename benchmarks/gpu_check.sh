#!/usr/bin/env bash
# GPU check: the unit tests and the quick step and fit benchmarks on a CUDA
# GPU, for JAX and torch. For the lent GPU image: CUDA torch and JAX on
# Python 3.12, no Keras, no TensorFlow, no network.
#
#   bash benchmarks/fetch_wheels.sh            # here first: benchmarks/wheels
#   bash benchmarks/gpu_check.sh [jax] [torch] # on the GPU machine
#
# Through the device tool: carry ["benchmarks/wheels"]; one backend per call
# fits its 10-minute limit (~3-6 min each; set the timeouts below with
# TEST_TIMEOUT / BENCH_TIMEOUT). Writes logs and JSON under $OUT (default
# benchmarks/results/gpu). A venv with the system site-packages (the image's
# torch, JAX, numpy) gets only the carried wheels whose distributions the
# image lacks (no upgrade of what is there), --no-index --no-deps.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/benchmarks/results/gpu}"
wheels="${WHEELS:-$root/benchmarks/wheels}"
venv="${GPU_VENV:-/tmp/keras-lazyadam-gpu-venv}"
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(jax torch)
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1

nvidia-smi || echo "!! no nvidia-smi"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv --system-site-packages "$venv"
py="$venv/bin/python"
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
  "$py" -m pip install --no-index --no-deps $missing || { echo "!! wheel install failed"; exit 1; }
fi
"$py" - <<'PY'
import jax, keras, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda)
print("jax", jax.__version__, jax.devices())
print("keras", keras.__version__)
PY

export PYTHONPATH="$root" JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}" TF_CPP_MIN_LOG_LEVEL=3
status=0
step() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  grep -v -i "warning" "$out/$name.log" | tail -40
  echo "=== $name: exit $rc"
  [ $rc -eq 0 ] || status=1
}
for b in "${backends[@]}"; do
  export KERAS_BACKEND="$b"
  step "pytest_$b" "${TEST_TIMEOUT:-240}" "$py" -m pytest tests -x -q -p no:cacheprovider
  step "step_$b" "${BENCH_TIMEOUT:-180}" "$py" benchmarks/bench_step.py --backend "$b" \
    --quick --ids 4096 262144 --out "$out/step_$b.json"
  step "fit_$b" "${BENCH_TIMEOUT:-180}" "$py" benchmarks/bench_fit.py --backend "$b" \
    --quick --out "$out/fit_$b.json"
done
echo "gpu_check: $([ $status -eq 0 ] && echo ok || echo FAILED) (${backends[*]})"
exit $status
